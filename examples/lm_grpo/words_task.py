"""The task of lm_grpo: multi-step arithmetic written in words, and its word-level tokenizer.

A question is a start number and a chain of 1 to `max_ops` operations on the digits 0-9 (every
result is kept modulo ten), written in words with varied templates, e.g.

    begin at seven , times three then lose four what is left ?

The solution is the chain of intermediate results, one digit token per operation, then <eos>:
"1 7 <eos>" (7 * 3 = 21 -> 1, 1 - 4 = -3 -> 7). The reward is exact match: 1 iff the written
solution is the correct one (its last digit is the answer), so a policy's success rate on a
question is exactly the probability that it writes the correct solution, which the held-out
evaluation computes by teacher forcing, without sampling noise.

There are 26 operations (add 1-9, subtract 1-9, multiply by 2-9). The pre-training corpus uses
them with very different frequencies (a fixed order, `OP_FREQUENCY_DECAY` per rank), so the base
model knows some operations well and others barely, as a base LLM knows skills unevenly; a
question's success rate is roughly the product of its steps' accuracies, so it depends on which
operations it uses and how many. The templates carry no difficulty: two questions with the same
chain in different words are the same problem, which raw hidden-state embeddings partly confuse
with surface form (what the adapter is for).

Everything here is deterministic given a seed.
"""

import dataclasses

import numpy as np

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
SPECIAL = ["<pad>", "<bos>", "<sep>", "<eos>"]
PAD, BOS, SEP, EOS = 0, 1, 2, 3
DIGITS = [str(d) for d in range(10)]

START_TEMPLATES = ["start with {n}", "begin at {n}", "take {n}", "think of {n}", "from {n}"]
OP_TEMPLATES = {
    "add": ["add {n}", "plus {n}", "gain {n}"],
    "sub": ["subtract {n}", "minus {n}", "lose {n}"],
    "mul": ["multiply by {n}", "times {n}", "scale by {n}"],
}
CONNECTORS = [",", "then", "and", "next"]
END_TEMPLATES = ["result ?", "what is left ?", "answer ?", "which digit ?"]

# (kind, operand) for the 26 operations, in a fixed shuffled order: the corpus frequency of the
# operation at rank i is OP_FREQUENCY_DECAY ** i (relative to rank 0).
OPS = [("add", n) for n in range(1, 10)] + [("sub", n) for n in range(1, 10)] + \
      [("mul", n) for n in range(2, 10)]
OP_ORDER = np.random.default_rng(2506).permutation(len(OPS))
OP_FREQUENCY_DECAY = 0.86


def apply_op(value, op):
    kind, n = OPS[op]
    if kind == "add":
        return (value + n) % 10
    if kind == "sub":
        return (value - n) % 10
    return (value * n) % 10


def _vocabulary():
    words = set()
    for text in START_TEMPLATES + CONNECTORS + END_TEMPLATES + \
            [t for ts in OP_TEMPLATES.values() for t in ts]:
        words.update(w for w in text.split() if w != "{n}")
    return SPECIAL + DIGITS + NUMBER_WORDS + sorted(words - set(NUMBER_WORDS))


class Tokenizer:
    """Word-level tokenizer of the task's closed vocabulary (54 tokens)."""

    def __init__(self):
        self.words = _vocabulary()
        self.index = {w: i for i, w in enumerate(self.words)}
        self.digit0 = self.index["0"]

    def __len__(self):
        return len(self.words)

    def encode(self, text):
        return [self.index[w] for w in text.split()]

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)

    def digit(self, d):
        return self.digit0 + int(d)

    def is_digit(self, token):
        return self.digit0 <= token < self.digit0 + 10


@dataclasses.dataclass
class Questions:
    """A set of questions: texts, their chains and answers."""
    text: list  # str, the question in words
    start: np.ndarray  # (N,) start digit
    ops: list  # list of lists of operation indices
    answer: np.ndarray  # (N,) final digit

    def __len__(self):
        return len(self.text)

    def subset(self, index):
        return Questions([self.text[i] for i in index], self.start[index],
                         [self.ops[i] for i in index], self.answer[index])

    def solution(self, i):
        """The intermediate results of question i (the correct solution's digits)."""
        values, v = [], int(self.start[i])
        for op in self.ops[i]:
            v = apply_op(v, op)
            values.append(v)
        return values


def op_weights():
    """The corpus frequency of each operation (sums to 1)."""
    w = np.empty(len(OPS))
    w[OP_ORDER] = OP_FREQUENCY_DECAY ** np.arange(len(OPS))
    return w / w.sum()


def render(start, ops, rng):
    """One question in words, with templates drawn from rng."""
    parts = [START_TEMPLATES[rng.integers(len(START_TEMPLATES))].format(n=NUMBER_WORDS[start])]
    for j, op in enumerate(ops):
        kind, n = OPS[op]
        templates = OP_TEMPLATES[kind]
        phrase = templates[rng.integers(len(templates))].format(n=NUMBER_WORDS[n])
        parts.append(CONNECTORS[rng.integers(len(CONNECTORS))] if j > 0 else ",")
        parts.append(phrase)
    parts.append(END_TEMPLATES[rng.integers(len(END_TEMPLATES))])
    return " ".join(parts)


def generate(n, rng, max_ops, weights=None):
    """n questions: chain lengths uniform in 1..max_ops, operations drawn with `weights`
    (default uniform: the RL pool and the held-out set), templates uniform."""
    starts = rng.integers(0, 10, n)
    texts, chains, answers = [], [], []
    for i in range(n):
        length = int(rng.integers(1, max_ops + 1))
        ops = [int(o) for o in rng.choice(len(OPS), size=length, p=weights)]
        v = int(starts[i])
        for op in ops:
            v = apply_op(v, op)
        texts.append(render(int(starts[i]), ops, rng))
        chains.append(ops)
        answers.append(v)
    return Questions(texts, starts, chains, np.array(answers))


def prompt_ids(tokenizer, text):
    """<bos> question <sep>: what the policy is conditioned on."""
    return [BOS] + tokenizer.encode(text) + [SEP]


def solution_ids(tokenizer, digits):
    return [tokenizer.digit(d) for d in digits] + [EOS]


def reward(tokenizer, generated, solution):
    """Exact match: 1 iff the sampled solution is the correct one, every intermediate result and
    the final answer, then <eos> (generated: the sampled ids, padding excluded; solution: the
    correct digits). With ten possible answers, matching the final digit alone would reward a
    tenth of random guesses; matching the worked solution, as a grader of a short worked answer
    does, makes a lucky guess rare (1 in 10^k)."""
    return float(list(generated) == solution_ids(tokenizer, solution))
