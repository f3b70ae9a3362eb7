"""GRPO for the transformer policy, as the paper runs it (docs/paper.md §1.2, §4.2).

* G rollouts per question sampled with temperature; reward = exact match of the solution.
* Advantage A_i = r_i - mean_j r_j within the group, not divided by the std (the paper's Eq. 1).
* Token-level PPO-clip, eps = 0.2, no KL term, loss averaged over every solution token of the
  (mini)batch: verl's token-mean, so zero-advantage groups dilute the gradient as in verl.
* Replayed groups: the released code's decoupled off-policy objective (`compute_policy_loss_temp`)
  per token, with mu the behaviour policy whose log-probs travel in the group's payload:
      r = pi_theta / mu,  r_old = pi_old / mu,
      loss = max(-A r, -A clip(r, r_old (1 - eps), r_old (1 + eps))).
  For fresh rollouts mu = pi_old up to float rounding, and it is the standard PPO-clip.
All log-probs are taken at the sampling temperature, as verl does.
"""

import io

import numpy as np
import torch

import transformer
import words_task


def rollout(model, tokenizer, questions, group_size, temperature, max_new, generator):
    """G sampled solutions for every question.

    Returns (solutions: list over questions of G id lists, logp: list of G float32 arrays per
    question, rewards (Q, G) float64)."""
    prompts = [words_task.prompt_ids(tokenizer, t) for t in questions.text
               for _ in range(group_size)]
    if not prompts:
        return [], [], np.zeros((0, group_size))
    sols, logps = transformer.generate(model, prompts, max_new, temperature, generator)
    correct = [questions.solution(q) for q in range(len(questions))]
    rewards = np.array([words_task.reward(tokenizer, s, correct[i // group_size])
                        for i, s in enumerate(sols)]).reshape(-1, group_size)
    group = lambda xs: [xs[i:i + group_size] for i in range(0, len(xs), group_size)]  # noqa
    return group(sols), group(logps), rewards


def encode_payload(solutions, logp):
    """One group's G solutions (id lists) and their behaviour log-probs -> bytes (.npz, no
    pickle): tokens (G, S) int8 padded with -1, logp (G, S) float32 (0 where padded)."""
    width = max(1, max(len(s) for s in solutions))
    tokens = np.full((len(solutions), width), -1, dtype=np.int8)
    lp = np.zeros((len(solutions), width), dtype=np.float32)
    for i, (s, l) in enumerate(zip(solutions, logp)):
        tokens[i, :len(s)] = s
        lp[i, :len(s)] = l
    buffer = io.BytesIO()
    np.savez(buffer, tokens=tokens, logp=lp)
    return buffer.getvalue()


def decode_payload(payload):
    """bytes -> (solutions: G id lists, logp: G float32 arrays), exactly as encoded."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        tokens, lp = z["tokens"], z["logp"]
    sols, logps = [], []
    for row, l in zip(tokens, lp):
        n = int((row >= 0).sum())
        sols.append(row[:n].astype(np.int64).tolist())
        logps.append(l[:n].copy())
    return sols, logps


def grpo_update(model, optimizer, prompts, solutions, behaviour_logp, advantages, groups,
                clip_eps=0.2, minibatches=2, temperature=1.0, rng=None):
    """One training step on a batch of rollouts (fresh and replayed); updates model in place.

    One row per rollout: prompts (id lists), solutions (id lists, ending with <eos> unless cut),
    behaviour_logp (float32 arrays, one per solution token: log mu), advantages (float per row),
    groups (the row's group index in the batch). The batch is split by group, after a shuffle,
    into `minibatches` optimizer steps; pi_old is the policy before the first. Returns a dict:
    loss (first minibatch), clip_fraction (of tokens with nonzero advantage), ratio_old and
    ratio_old_max (pi_old / mu over tokens: 1 for fresh rollouts, drifting for replayed ones).
    """
    rng = rng or np.random.default_rng(0)
    keep = [i for i, s in enumerate(solutions) if len(s) > 0]
    prompts = [prompts[i] for i in keep]
    solutions = [solutions[i] for i in keep]
    groups = np.asarray(groups)[keep]
    ids, start, mask = transformer.sequence_batch(prompts, solutions)
    mu = torch.zeros(mask.shape)
    for i in range(len(keep)):
        mu[i, :len(solutions[i])] = torch.from_numpy(np.asarray(behaviour_logp[keep[i]],
                                                                dtype=np.float32))
    adv = torch.tensor(np.asarray(advantages, dtype=np.float32)[keep])[:, None].expand(mask.shape)
    model.train()
    with torch.no_grad():
        logp_old = transformer.token_logp(model, ids, start, mask, temperature)
    ratio_old = torch.exp(logp_old - mu)[mask]
    order = rng.permutation(groups.max() + 1)
    part_of_group = np.empty_like(order)
    part_of_group[order] = np.arange(len(order)) * minibatches // len(order)
    part = part_of_group[groups]
    clipped = 0
    first_loss = None
    for k in range(minibatches):
        sel = torch.from_numpy(np.nonzero(part == k)[0])
        if len(sel) == 0:
            continue
        m, a, b = mask[sel], adv[sel], mu[sel]
        r_old = torch.exp(logp_old[sel] - b)
        logp = transformer.token_logp(model, ids[sel], start, m, temperature)
        ratio = torch.exp(logp - b)
        lo, hi = r_old * (1 - clip_eps), r_old * (1 + clip_eps)
        terms = torch.max(-a * ratio, -a * torch.min(torch.max(ratio, lo), hi))
        loss = (terms * m).sum() / m.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if first_loss is None:
            first_loss = float(loss)
        with torch.no_grad():
            active = ((a > 0) & (ratio < hi)) | ((a < 0) & (ratio > lo))
            clipped += int(((a != 0) & ~active & m).sum())
    model.eval()
    nonzero = int(((adv != 0) & mask).sum())
    return {
        "loss": first_loss,
        "clip_fraction": clipped / max(nonzero, 1),
        "ratio_old": float(ratio_old.mean()),
        "ratio_old_max": float(ratio_old.max()),
    }
