"""The toy task: multi-step "reasoning" questions over a small state machine.

A question is a start state s0 in {0..S-1} and a chain of k operations (o_1, ..., o_k) from a
vocabulary of M; each operation is a fixed, hidden permutation of the states. The correct
answer is the state reached after applying the chain. The policy answers step by step, like an
LLM writing a k-token solution: at step t it samples its next state from
pi(. | its previous state, o_t), and the reward is 1 iff its final state is the correct answer.
Rewards are all the trainer sees.

Why this gives difficulty that varies, and changes as the policy learns:
* The starting policy ("base model") knows the operations unevenly: its per-step accuracy on a
  fact (state, operation) goes from 0.99 for operation 0 down to 0.02 for operation 9 (each
  fact jittered), and most of its error mass sits on one confident wrong state.
* A question's success rate is the product-like composition of its facts along the chain, so
  short chains of known operations are easy (p near 1), long chains with several unknown
  operations are hopeless (p near 0), and questions with one weak fact sit in between.
* Learning a fact on the questions that are informative now makes every question that uses it
  easier later (transfer), so the informative band moves through the pool during training.

Held-out accuracy is the exact expected reward pi(correct | question) averaged over a held-out
set of questions that never appear in the training pool, computed by propagating the policy's
state distribution along the chain (no sampling noise).
"""

import dataclasses

import numpy as np

from policy import Adam, MLPPolicy, log_softmax


@dataclasses.dataclass
class TaskConfig:
    states: int = 12  # S: answers are states
    operations: int = 10  # M
    # The base model's per-step accuracy on operation o is spread evenly from the best-known
    # operation to the least-known one, each fact jittered by +-accuracy_jitter.
    best_accuracy: float = 0.99
    worst_accuracy: float = 0.02
    accuracy_jitter: float = 0.1
    misconception: float = 0.7  # share of a fact's error mass on one (confident) wrong state
    min_length: int = 1
    max_length: int = 8
    train_questions: int = 8000
    heldout_questions: int = 500
    policy_hidden: int = 64
    pretrain_steps: int = 1500
    pretrain_lr: float = 0.01


def encode_inputs(states, ops, num_states, num_ops):
    """The policy's input for (state, operation) pairs: a one-hot of the pair, (N, S * M)."""
    x = np.zeros((len(states), num_states * num_ops))
    x[np.arange(len(states)), ops * num_states + states] = 1.0
    return x


@dataclasses.dataclass
class Questions:
    start: np.ndarray  # (N,) int start states
    ops: np.ndarray  # (N, L) int operations, padded with -1 after the chain's length
    length: np.ndarray  # (N,) int chain lengths
    answer: np.ndarray  # (N,) int correct final states

    def __len__(self):
        return len(self.start)

    def subset(self, index):
        return Questions(self.start[index], self.ops[index], self.length[index],
                         self.answer[index])


@dataclasses.dataclass
class Task:
    config: TaskConfig
    permutations: np.ndarray  # (M, S): the hidden truth, op o maps s to permutations[o, s]
    train: Questions
    heldout: Questions
    policy: MLPPolicy  # the pre-trained starting policy

    def transition_matrices(self, policy):
        """pi(s' | s, o) for every operation: (M, S, S). O(M * S) policy evaluations."""
        cfg = self.config
        s = np.tile(np.arange(cfg.states), cfg.operations)
        o = np.repeat(np.arange(cfg.operations), cfg.states)
        probs = np.exp(policy.log_probs(encode_inputs(s, o, cfg.states, cfg.operations)))
        return probs.reshape(cfg.operations, cfg.states, cfg.states)

    def success_rates(self, policy, questions):
        """Exact pi(correct final state | question) for every question, (N,)."""
        trans = self.transition_matrices(policy)
        dist = np.zeros((len(questions), self.config.states))
        dist[np.arange(len(questions)), questions.start] = 1.0
        for t in range(questions.ops.shape[1]):
            live = questions.length > t
            op = questions.ops[live, t]
            dist[live] = np.einsum("ns,nst->nt", dist[live], trans[op])
        return dist[np.arange(len(questions)), questions.answer]

    def rollout(self, policy, questions, group_size, rng):
        """Samples G step-by-step solutions per question.

        Returns tokens (n, G, L) int (the sampled states; -1 past the chain's length),
        logp (n, G, L) float (their log-probs under `policy`, 0 past the length) and rewards
        (n, G) float in {0, 1} (1 iff the last sampled state is the correct answer).
        """
        cfg = self.config
        n, L = len(questions), questions.ops.shape[1]
        tokens = np.full((n, group_size, L), -1, dtype=np.int64)
        logp = np.zeros((n, group_size, L))
        state = np.repeat(questions.start, group_size)
        ops = np.repeat(questions.ops, group_size, axis=0)
        length = np.repeat(questions.length, group_size)
        for t in range(L):
            live = length > t
            x = encode_inputs(state[live], ops[live, t], cfg.states, cfg.operations)
            token, token_logp = policy.sample(x, rng)
            state[live] = token
            tokens.reshape(n * group_size, L)[live, t] = token
            logp.reshape(n * group_size, L)[live, t] = token_logp
        rewards = (state.reshape(n, group_size) == questions.answer[:, None]).astype(np.float64)
        return tokens, logp, rewards

    def token_inputs(self, questions, tokens):
        """Policy inputs of every generated token: (x (T, D), token (T,), question (T,),
        rollout (T,)) for tokens (n, G, L) sampled on `questions`, in row-major order of
        tokens[tokens >= 0]."""
        cfg = self.config
        n, G, L = tokens.shape
        prev = np.concatenate(
            [np.broadcast_to(questions.start[:, None, None], (n, G, 1)), tokens[:, :, :-1]], axis=2)
        ops = np.broadcast_to(questions.ops[:, None, :], (n, G, L))
        live = tokens >= 0
        q_index = np.broadcast_to(np.arange(n)[:, None, None], (n, G, L))
        r_index = np.broadcast_to(np.arange(G)[None, :, None], (n, G, L))
        x = encode_inputs(prev[live], ops[live], cfg.states, cfg.operations)
        return x, tokens[live], q_index[live], r_index[live]

    def embeddings(self, questions):
        """The features dots receives per question: the chain's operation counts (a bag of
        skills, M values) and its length / max_length. (N, M + 1) float32."""
        cfg = self.config
        counts = np.zeros((len(questions), cfg.operations))
        for t in range(questions.ops.shape[1]):
            live = questions.length > t
            np.add.at(counts, (np.nonzero(live)[0], questions.ops[live, t]), 1.0)
        return np.concatenate(
            [counts, (questions.length / cfg.max_length)[:, None]], axis=1
        ).astype(np.float32)

    def records(self, questions, prefix):
        """The questions as dots pool entries (key, prompt text, metadata with the answer)."""
        out = []
        for i in range(len(questions)):
            chain = " ".join(f"op{o}" for o in questions.ops[i, : questions.length[i]])
            out.append({
                "key": f"{prefix}{i:05d}",
                "prompt": f"start at state {questions.start[i]}, apply {chain}; final state?",
                "metadata": {"answer": int(questions.answer[i])},
            })
        return out


def make_task(seed, config=None):
    """Builds the task and its pre-trained starting policy, deterministically from `seed`."""
    cfg = config or TaskConfig()
    rng = np.random.default_rng([seed, 7])
    S, M = cfg.states, cfg.operations
    permutations = np.array([rng.permutation(S) for _ in range(M)])

    def questions(n):
        length = rng.integers(cfg.min_length, cfg.max_length + 1, size=n)
        ops = rng.integers(0, M, size=(n, cfg.max_length))
        ops[np.arange(cfg.max_length)[None, :] >= length[:, None]] = -1
        start = rng.integers(0, S, size=n)
        state = start.copy()
        for t in range(cfg.max_length):
            live = length > t
            state[live] = permutations[ops[live, t], state[live]]
        return Questions(start, ops, length, state)

    train = questions(cfg.train_questions)
    heldout = questions(cfg.heldout_questions)

    # The base model's per-fact knowledge, as soft targets it is pre-trained to reproduce: the
    # right state with probability acc; of the error mass, `misconception` on one wrong state
    # and the rest spread over the other wrong states.
    targets = np.zeros((M, S, S))
    for o in range(M):
        level = cfg.best_accuracy + (cfg.worst_accuracy - cfg.best_accuracy) * o / (M - 1)
        for state in range(S):
            right = permutations[o, state]
            acc = np.clip(level + rng.uniform(-1, 1) * cfg.accuracy_jitter,
                          cfg.worst_accuracy, cfg.best_accuracy)
            wrong = rng.choice([w for w in range(S) if w != right])
            targets[o, state, :] = (1 - acc) * (1 - cfg.misconception) / (S - 2)
            targets[o, state, wrong] = (1 - acc) * cfg.misconception
            targets[o, state, right] = acc
    x = encode_inputs(np.tile(np.arange(S), M), np.repeat(np.arange(M), S), S, M)
    y = targets.reshape(M * S, S)
    policy = MLPPolicy(S * M, cfg.policy_hidden, S, rng)
    opt = Adam(policy.params, cfg.pretrain_lr)
    for _ in range(cfg.pretrain_steps):
        z, h = policy.forward(x)
        dz = (np.exp(log_softmax(z)) - y) / len(x)  # soft-target cross-entropy
        opt.step(policy.params, policy.backward(x, h, dz))
    return Task(cfg, permutations, train, heldout, policy)
