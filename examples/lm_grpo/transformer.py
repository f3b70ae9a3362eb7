"""A small decoder-only transformer (PyTorch, CPU) and its pre-training on the words task.

Model: GPT-style, pre-LayerNorm blocks (causal multi-head self-attention, GELU MLP of 4x width),
learned absolute positions, untied output head. Batches are left-padded: every row's prompt ends
in the same column, so generation appends one column per step for the whole batch. Positions
count non-padding tokens only and padding keys are masked, so a left-padded row computes exactly
what it would alone.

Pre-training: next-token cross-entropy of the worked solutions of "<bos> question <sep> solution
<eos>" sequences (the question words are random draws, nothing to learn there) of a generated
corpus (words_task.generate with the operations' uneven corpus frequencies) whose worked
solutions do not all follow the graded format, as web text does not: with probability `restate`
a solution writes its final answer a second time before <eos>, which the exact-match reward
counts wrong. So the base model breaks the format on about that share of its samples, a skill
GRPO can fix from rewards alone and that transfers to every question (as early RL on a base LLM
mostly fixes its answer format), while the operations it never learned well stay hard. Adam with
a linear warm-up and cosine decay. The weights are cached under the cache directory keyed by
a hash of the model and corpus configuration (and the task's constants), so later runs skip it.
Snapshots at given fractions of pre-training are cached too: they are the "shorter pre-training"
models that label the pool for the adapter.
"""

import dataclasses
import hashlib
import json
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

import words_task
from words_task import BOS, EOS, PAD, SEP

CACHE_VERSION = 1


@dataclasses.dataclass
class ModelConfig:
    vocab: int
    width: int = 128
    layers: int = 2
    heads: int = 4
    max_len: int = 64


@dataclasses.dataclass
class PretrainConfig:
    steps: int = 1000
    batch: int = 64
    lr: float = 5e-3
    warmup: int = 100
    max_ops: int = 4
    restate: float = 0.3  # probability that a corpus solution restates its answer before <eos>
    seed: int = 0


class Block(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.heads
        self.ln1 = torch.nn.LayerNorm(cfg.width)
        self.qkv = torch.nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = torch.nn.Linear(cfg.width, cfg.width)
        self.ln2 = torch.nn.LayerNorm(cfg.width)
        self.fc = torch.nn.Linear(cfg.width, 4 * cfg.width)
        self.out = torch.nn.Linear(4 * cfg.width, cfg.width)

    def forward(self, x, mask):
        n, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q = q.view(n, t, h, d // h).transpose(1, 2)
        k = k.view(n, t, h, d // h).transpose(1, 2)
        v = v.view(n, t, h, d // h).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(d // h))
        att = att.masked_fill(~mask[:, None], float("-inf")).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(n, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(torch.nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.tok = torch.nn.Embedding(cfg.vocab, cfg.width)
        self.pos = torch.nn.Embedding(cfg.max_len, cfg.width)
        self.blocks = torch.nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln = torch.nn.LayerNorm(cfg.width)
        self.head = torch.nn.Linear(cfg.width, cfg.vocab)
        for p in self.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.02)

    def hidden(self, ids):
        """Last hidden states (N, T, width) for left-padded ids (N, T)."""
        real = ids != PAD
        pos = (real.long().cumsum(1) - 1).clamp(min=0)
        t = ids.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        # A query sees earlier real tokens, and always itself (no row without a key).
        mask = (causal[None] & real[:, None, :]) | torch.eye(t, dtype=torch.bool)[None]
        x = self.tok(ids) + self.pos(pos)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)

    def forward(self, ids):
        """Next-token logits (N, T, vocab)."""
        return self.head(self.hidden(ids))


def left_pad(rows, width=None):
    width = width or max(len(r) for r in rows)
    out = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
    return out


def right_pad(rows, width=None):
    width = width or max(len(r) for r in rows)
    out = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def corpus_batch(tokenizer, n, rng, max_ops, restate):
    """n pre-training sequences of the corpus (uneven operations; with probability `restate` a
    solution writes its final answer twice): ids (N, P + S), P, mask."""
    qs = words_task.generate(n, rng, max_ops, words_task.op_weights())
    prompts = [words_task.prompt_ids(tokenizer, qs.text[i]) for i in range(n)]
    solutions = []
    for i in range(n):
        digits = qs.solution(i)
        if rng.random() < restate:
            digits = digits + digits[-1:]
        solutions.append(words_task.solution_ids(tokenizer, digits))
    return sequence_batch(prompts, solutions)


def pretrain(model, tokenizer, cfg, snapshots=(), log=None):
    """Pre-trains `model` in place; returns {fraction: state_dict} at the given fractions."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 7])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    at = {max(1, int(round(f * cfg.steps))): f for f in snapshots}
    saved = {}
    started = time.monotonic()
    for step in range(1, cfg.steps + 1):
        lr = cfg.lr * min(1.0, step / cfg.warmup) * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
        for group in opt.param_groups:
            group["lr"] = lr
        ids, start, mask = corpus_batch(tokenizer, cfg.batch, rng, cfg.max_ops, cfg.restate)
        loss = -(token_logp(model, ids, start, mask).sum() / mask.sum())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step in at:
            saved[at[step]] = {k: v.clone() for k, v in model.state_dict().items()}
        if log and (step % 200 == 0 or step == cfg.steps):
            log(f"  pre-training seed {cfg.seed}: step {step}/{cfg.steps} loss {loss.item():.3f} "
                f"({time.monotonic() - started:.0f} s)")
    return saved


def config_hash(model_cfg, pre_cfg, snapshots):
    """The cache key: model and corpus configuration and the task's constants."""
    blob = json.dumps({
        "version": CACHE_VERSION, "model": dataclasses.asdict(model_cfg),
        "pretrain": dataclasses.asdict(pre_cfg), "snapshots": sorted(snapshots),
        "ops": words_task.OP_ORDER.tolist(), "decay": words_task.OP_FREQUENCY_DECAY,
        "templates": [words_task.START_TEMPLATES, words_task.OP_TEMPLATES,
                      words_task.CONNECTORS, words_task.END_TEMPLATES],
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrained(tokenizer, model_cfg, pre_cfg, cache_dir, snapshots=(), log=None):
    """(model, {fraction: model}, seconds spent pre-training now, cache path): loaded from the
    cache when its key matches, else pre-trained and written there."""
    key = config_hash(model_cfg, pre_cfg, snapshots)
    path = os.path.join(cache_dir, f"base-{key}.pt")
    spent = 0.0
    if os.path.exists(path):
        blob = torch.load(path)
    else:
        started = time.monotonic()
        model = TinyGPT(model_cfg)
        saved = pretrain(model, tokenizer, pre_cfg, snapshots, log)
        blob = {"final": model.state_dict(), "snapshots": saved}
        os.makedirs(cache_dir, exist_ok=True)
        torch.save(blob, path + ".tmp")
        os.replace(path + ".tmp", path)
        spent = time.monotonic() - started
    model = TinyGPT(model_cfg)
    model.load_state_dict(blob["final"])
    snaps = {}
    for f, state in blob["snapshots"].items():
        m = TinyGPT(model_cfg)
        m.load_state_dict(state)
        snaps[f] = m.eval()
    return model.eval(), snaps, spent, path


# ---- rollouts and log-probs ----


@torch.no_grad()
def generate(model, prompts, max_new, temperature, generator):
    """Samples one solution per prompt row.

    prompts: list of id lists. Returns (solutions: list of id lists, each ending at its <eos> or
    cut at max_new; logp: list of float32 arrays, the behaviour log-prob of every sampled token
    at `temperature`). Recomputes the whole prefix at every new token (no KV cache).
    """
    ids = left_pad(prompts)
    n = ids.shape[0]
    done = torch.zeros(n, dtype=torch.bool)
    tokens, logps = [], []
    for _ in range(max_new):
        logits = model(ids)[:, -1] / temperature
        logp_all = logits.log_softmax(-1)
        tok = torch.multinomial(logp_all.exp(), 1, generator=generator)[:, 0]
        tok = torch.where(done, torch.full_like(tok, PAD), tok)
        tokens.append(tok)
        logps.append(logp_all.gather(1, tok.clamp(min=0)[:, None])[:, 0])
        done = done | (tok == EOS)
        ids = torch.cat([ids, tok[:, None]], 1)
        if bool(done.all()):
            break
    tokens = torch.stack(tokens, 1).numpy()
    logps = torch.stack(logps, 1).numpy().astype(np.float32)
    solutions, out_logp = [], []
    for i in range(n):
        keep = tokens[i] != PAD
        length = int(keep.sum())
        solutions.append(tokens[i, :length].tolist())
        out_logp.append(logps[i, :length])
    return solutions, out_logp


def sequence_batch(prompts, solutions):
    """Left-padded prompts followed by right-padded solutions: ids (N, P + S), the column of
    the first solution token P, and the solution mask (N, S)."""
    p = left_pad(prompts)
    s = right_pad(solutions)
    return torch.cat([p, s], 1), p.shape[1], s != PAD


def token_logp(model, ids, start, mask, temperature=1.0):
    """log pi(solution token | prefix) at temperature: (N, S), 0 where mask is False."""
    logits = model(ids[:, :-1])[:, start - 1:] / temperature
    target = ids[:, start:]
    logp = logits.log_softmax(-1).gather(2, target[..., None])[..., 0]
    return logp * mask


@torch.no_grad()
def solution_probability(model, tokenizer, questions, temperature=1.0, chunk=256):
    """The exact probability that the model writes question i's correct solution (every
    intermediate digit right, then <eos>), by teacher forcing: (N,) float64. With the exact-match
    reward this is the question's success rate itself, without sampling noise."""
    out = []
    for begin in range(0, len(questions), chunk):
        idx = range(begin, min(begin + chunk, len(questions)))
        prompts = [words_task.prompt_ids(tokenizer, questions.text[i]) for i in idx]
        sols = [words_task.solution_ids(tokenizer, questions.solution(i)) for i in idx]
        ids, start, mask = sequence_batch(prompts, sols)
        out.append(token_logp(model, ids, start, mask, temperature).sum(1).exp().double())
    return torch.cat(out).numpy()


@torch.no_grad()
def embed(model, tokenizer, texts, chunk=256):
    """Mean-pooled last hidden states over "<bos> question" (the raw question text): (N, width)
    float32, as the paper embeds questions with its frozen base model."""
    out = []
    for begin in range(0, len(texts), chunk):
        rows = [[BOS] + tokenizer.encode(t) for t in texts[begin:begin + chunk]]
        ids = left_pad(rows)
        h = model.hidden(ids)
        real = (ids != PAD).float()[..., None]
        out.append((h * real).sum(1) / real.sum(1))
    return torch.cat(out).numpy().astype(np.float32)


__all__ = ["ModelConfig", "PretrainConfig", "TinyGPT", "pretrained", "generate", "embed",
           "sequence_batch", "token_logp", "solution_probability", "SEP"]
