"""A small MLP policy, and the GRPO update with off-policy replay, in numpy.

The policy maps an input x (D floats) to a distribution over A tokens,
    pi(a | x) = softmax(V tanh(U x + c) + b)_a.
In task.py a rollout is a sequence of such tokens (one per step of the question's chain, the
input being the one-hot (current state, operation) pair), so the update works per token, with
the rollout's advantage on each of its tokens, like an LLM trainer.

The update (`grpo_update`) is GRPO as in Sun et al. 2025 (docs/paper.md §1.2, §4):
  * advantage A_i = r_i - mean_j r_j within the group of G rollouts, NOT divided by the std
    (the paper's Eq. 1, after Dr. GRPO; the released code divides by the std); the caller
    computes it and passes it per token,
  * no KL term (beta = 0, as in all the paper's experiments),
  * the loss is the mean over every token of the (mini)batch (verl's token-mean aggregation),
    so groups with zero advantage dilute the gradient exactly as they do in verl,
  * off-policy correction: the "decoupled PPO-clip" / GePPO form that the released DOTS code
    actually runs (`compute_policy_loss_temp`, docs/paper.md §4.2), per token:
        r_pi  = pi_theta / mu,  r_old = pi_old / mu,
        loss  = max(-A r_pi, -A clip(r_pi, r_old (1 - eps), r_old (1 + eps))),
    with mu the behaviour policy that generated the rollout (its per-token log-probs are stored
    in the group's payload and come back with the replayed group) and pi_old the policy before
    this step's update. For fresh rollouts mu = pi_old and it reduces to the standard PPO-clip.
    Like the released code, r_old is not truncated unless `ratio_old_cap` is given.
"""

import numpy as np


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


class MLPPolicy:
    """pi(a | x) = softmax(V tanh(U x + c) + b). Parameters are float64 numpy arrays."""

    def __init__(self, dim, hidden, answers, rng, init_scale=1.0):
        self.dim, self.hidden, self.answers = dim, hidden, answers
        self.params = {
            "U": rng.standard_normal((hidden, dim)) * (init_scale / np.sqrt(dim)),
            "c": np.zeros(hidden),
            "V": rng.standard_normal((answers, hidden)) * (init_scale / np.sqrt(hidden)),
            "b": np.zeros(answers),
        }

    def copy(self):
        other = MLPPolicy.__new__(MLPPolicy)
        other.dim, other.hidden, other.answers = self.dim, self.hidden, self.answers
        other.params = {k: v.copy() for k, v in self.params.items()}
        return other

    def forward(self, x):
        """Logits (N, A) and the hidden activations (N, H) for features x (N, D)."""
        p = self.params
        h = np.tanh(x @ p["U"].T + p["c"])
        return h @ p["V"].T + p["b"], h

    def log_probs(self, x):
        """log pi(. | x): (N, A)."""
        return log_softmax(self.forward(x)[0])

    def sample(self, x, rng):
        """One answer per row and its log-prob under this policy: two (N,) arrays."""
        logp = self.log_probs(x)
        cdf = np.cumsum(np.exp(logp), axis=1)
        u = rng.random(len(x)) * cdf[:, -1]
        answers = np.minimum((u[:, None] > cdf).sum(axis=1), self.answers - 1)
        return answers, logp[np.arange(len(x)), answers]

    def backward(self, x, h, dz):
        """Gradients of a loss with dLoss/dlogits = dz (N, A), through the MLP."""
        p = self.params
        dh = (dz @ p["V"]) * (1.0 - h * h)
        return {"U": dh.T @ x, "c": dh.sum(axis=0), "V": dz.T @ h, "b": dz.sum(axis=0)}


class Adam:
    """Adam (Kingma & Ba) with bias correction; updates a dict of arrays in place."""

    def __init__(self, params, lr, betas=(0.9, 0.999), eps=1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, params, grads):
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for k, g in grads.items():
            self.m[k] = self.b1 * self.m[k] + (1 - self.b1) * g
            self.v[k] = self.b2 * self.v[k] + (1 - self.b2) * g * g
            params[k] -= self.lr * (self.m[k] / c1) / (np.sqrt(self.v[k] / c2) + self.eps)


def grpo_update(policy, optimizer, x, tokens, advantages, behaviour_logp, groups, clip_eps=0.2,
                minibatches=2, rng=None, ratio_old_cap=None):
    """One training step on a batch of rollout groups; updates policy.params in place.

    Token arrays (one row per generated token of every rollout in the batch, fresh and replayed):
      x: (T, D) policy inputs at that token; tokens: (T,) the sampled token;
      advantages: (T,) the advantage of the token's rollout (r_i - mean of its group);
      behaviour_logp: (T,) log mu(token | input) under the policy that generated it;
      groups: (T,) the index of the token's group (question) in the batch.
    The batch is split by group, after a shuffle, into `minibatches` optimizer steps; pi_old is
    the policy before the first, so later minibatches are clipped against it. The loss is the
    mean over the minibatch's tokens (verl's "token-mean").
    ratio_old_cap: None (the released code: r_old = pi_old / mu untruncated) or c > 0, which
      truncates r_old at c (an IMPALA / V-trace-style cap; beyond the paper).
    Returns a dict: loss (first minibatch), clip_fraction (of tokens with nonzero advantage),
    ratio_old, ratio_old_max (mean and max of pi_old / mu over tokens, before any cap; 1 for
    fresh rollouts, drifting for replayed ones).
    """
    rng = rng or np.random.default_rng(0)
    logp_old = np.take_along_axis(policy.log_probs(x), tokens[:, None], axis=1)[:, 0]
    ratio_old = np.exp(logp_old - behaviour_logp)
    raw_ratio_old = ratio_old
    if ratio_old_cap is not None:
        # Truncating r_old scales the whole trust region down by the same factor c / r_old,
        # exactly like computing both ratios against mu' = mu * r_old / c.
        behaviour_logp = behaviour_logp + np.log(np.maximum(ratio_old / ratio_old_cap, 1.0))
        ratio_old = np.minimum(ratio_old, ratio_old_cap)
    order = rng.permutation(groups.max() + 1)
    part_of_group = np.empty_like(order)
    part_of_group[order] = np.arange(len(order)) * minibatches // len(order)
    part_of_token = part_of_group[groups]
    clipped = 0
    first_loss = None
    for part in range(minibatches):
        sel = np.nonzero(part_of_token == part)[0]
        if len(sel) == 0:
            continue
        adv, rold, mu = advantages[sel], ratio_old[sel], behaviour_logp[sel]
        z, h = policy.forward(x[sel])
        logp_all = log_softmax(z)
        logp = logp_all[np.arange(len(sel)), tokens[sel]]
        ratio = np.exp(logp - mu)
        lo, hi = rold * (1 - clip_eps), rold * (1 + clip_eps)
        loss_terms = np.maximum(-adv * ratio, -adv * np.clip(ratio, lo, hi))
        if first_loss is None:
            first_loss = float(loss_terms.mean())
        active = ((adv > 0) & (ratio < hi)) | ((adv < 0) & (ratio > lo))
        clipped += int(((adv != 0) & ~active).sum())
        # d loss_t / d logp_t = -A_t r_t where the unclipped branch is active, 0 where clipped;
        # d logp(a) / d z = onehot(a) - softmax(z).
        dlogp = np.where(active, -adv * ratio, 0.0) / len(sel)
        dz = -dlogp[:, None] * np.exp(logp_all)
        dz[np.arange(len(sel)), tokens[sel]] += dlogp
        optimizer.step(policy.params, policy.backward(x[sel], h, dz))
    return {
        "loss": first_loss,
        "clip_fraction": clipped / max(int((advantages != 0).sum()), 1),
        "ratio_old": float(raw_ratio_old.mean()),
        "ratio_old_max": float(raw_ratio_old.max()),
    }

