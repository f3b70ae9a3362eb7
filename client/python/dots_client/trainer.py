"""A framework-agnostic step iterator for custom training loops.

    it = StepIterator(client, "my-run", rank=0, world_size=1, start_step=0, num_steps=1000)
    for step in it:
        groups = []
        for item in step.items:                     # questions to roll out now
            rewards, payload = rollout(item)        # G rewards in [0, 1], bytes to keep
            groups.append(step.group(item.key, rewards, payload))
        train(step.items, groups, step.replay)      # step.replay: groups of earlier steps
        step.report(groups)                         # feedback for the selector and replay store
        save_checkpoint(next_step=step.step + 1)

Protocol it encodes (core/run/run.h):

* Steps s = 0, 1, 2, ... One `NextBatch(s)` per step and rank; the server composes the batch of
  a step once and returns it identically to every rank and on every repeat. So **resuming is
  restarting the iterator at the checkpointed step**: a step that was already served comes back
  byte-identical (items, replay groups and payloads), and re-reporting a group that was already
  reported counts as a duplicate, not an error.
* The rollouts of step s must be reported before the loop can go more than one round past s
  (the next round is planned from them). The iterator therefore refuses to advance past a step
  whose `report` was not called (`require_report=True`), which catches a forgotten report at the
  step that forgot it instead of as a hang one round later. With several ranks, each rank reports
  its own slice; a rank that finishes first may wait inside `next()` for the others' reports.
* Paper reference mode: the first step of a round may first return a *reference batch*
  (`step.reference_batch` True): roll it out and report it, but do not train on it. The iterator
  then asks for the same step number again and gets the training batch.

Blocking: `next()` blocks while the server plans the step's round (for as long as
`wait_seconds`, re-asking after every client timeout), `report()` blocks until the server applied
the report. Errors surface as `dots_client.DotsError` (from the client), `RuntimeError` for
protocol misuse by the caller.
"""

import time
from typing import Callable, Dict, Iterable, Iterator, List, Optional

from dots_client.client import Batch, Client, DotsError, Group, Item, ReplayGroup

# FAILED_PRECONDITION messages that mean "wait: other ranks or leases have not settled yet",
# as opposed to errors that no amount of waiting fixes (empty pool, config larger than the pool,
# asking more than one round ahead of the reports). Matched as substrings of the server's
# message (core/run/run.cc).
_TRANSIENT_PRECONDITIONS = ("cannot be planned", "are not reported yet")


class Step:
    """One rank's slice of one step, as handed out by the server.

    Attributes:
      step: the global step number s.
      policy_version: the policy version passed to NextBatch (the behaviour policy of the
        rollouts generated now).
      batch: the raw `dots_client.Batch`.
      items: questions to roll out at this step (`Item`: key, role, prompt, metadata).
      replay: groups of earlier steps to train on again (`ReplayGroup`: key, step,
        policy_version, rewards, payload exactly as reported).
      reference_batch: True for a paper-mode reference batch (roll out and report; do not train).
      reported: whether `report` has been called successfully.
      report_result: the server's answer to the last `report` call (None before).
    """

    def __init__(self, client: Client, run_id: str, batch: Batch, policy_version: int,
                 strict: bool):
        self._client = client
        self._run_id = run_id
        self._strict = strict
        self.batch = batch
        self.step = batch.step
        self.policy_version = int(policy_version)
        self.reported = False
        self.report_result: Optional[Dict] = None

    @property
    def items(self) -> List[Item]:
        return self.batch.items

    @property
    def replay(self) -> List[ReplayGroup]:
        return self.batch.replay

    @property
    def reference_batch(self) -> bool:
        return self.batch.reference_batch

    def group(self, key: str, rewards, payload: bytes = b"") -> Group:
        """A `Group` for this step's policy version (rewards: G numbers in [0, 1])."""
        return Group(key=key, rewards=[float(r) for r in rewards],
                     policy_version=self.policy_version, payload=bytes(payload))

    def report(self, groups: Iterable[Group]) -> Dict:
        """Reports this step's rollout groups; safe to call again (repeats are duplicates).

        Returns the server's {"accepted", "duplicates", "rejected"}. With `strict` (the
        iterator's default) a rejected group raises DotsError("INVALID_ARGUMENT") listing every
        rejected key and reason; the accepted groups are applied either way. Reporting only part
        of the items is allowed (call again with the rest); the step counts as reported after
        the first successful call. An empty list sends nothing.
        """
        groups = list(groups)
        if not groups:
            result = {"accepted": 0, "duplicates": 0, "rejected": []}
        else:
            result = self._client.report(self._run_id, self.step, groups)
        self.report_result = result
        if result["rejected"] and self._strict:
            reasons = "; ".join(f"{r['key']!r}: {r['error']}" for r in result["rejected"])
            raise DotsError(
                "INVALID_ARGUMENT",
                f"run {self._run_id!r} step {self.step}: {len(result['rejected'])} group(s) "
                f"rejected: {reasons}",
            )
        self.reported = True
        return result

    def __repr__(self) -> str:
        kind = "reference batch" if self.reference_batch else "step"
        return (f"<dots {kind} {self.step}: {len(self.items)} items, {len(self.replay)} replay "
                f"groups, policy_version={self.policy_version}>")


class StepIterator:
    """Iterates the steps of a run for one rank, from `start_step` (a checkpoint) on.

    Args:
      client: a connected `dots_client.Client`.
      run_id: the run (created and filled with questions beforehand).
      rank, world_size: this process's slice of every batch (contiguous, balanced).
      start_step: first step to serve; resume from a checkpoint by passing the first step that
        was not trained on (already-served steps come back identical).
      num_steps: stop after this many training steps (None = never stop).
      policy_version: maps a step to the policy version sent with NextBatch and stamped on the
        reported groups. Default: the step itself (one optimizer update per step).
      require_report: refuse to advance past a step that was not reported (RuntimeError).
      strict: make `Step.report` raise on rejected groups.
      wait_seconds: how long `next()` keeps re-asking while the step's round cannot be planned
        yet (other ranks still rolling out) or is being planned; then the last error is raised.

    Iterating yields `Step` objects; `waits` counts the NextBatch calls re-sent while waiting.
    Cost per step: one NextBatch call (O(batch + payload bytes)).
    Not thread-safe: one iterator per rank/thread.
    """

    def __init__(
        self,
        client: Client,
        run_id: str,
        rank: int = 0,
        world_size: int = 1,
        start_step: int = 0,
        num_steps: Optional[int] = None,
        policy_version: Optional[Callable[[int], int]] = None,
        require_report: bool = True,
        strict: bool = True,
        wait_seconds: float = 600.0,
    ):
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of world_size {world_size}: need 0 <= rank < world_size")
        if start_step < 0:
            raise ValueError(f"start_step: {start_step} < 0")
        if num_steps is not None and num_steps < 0:
            raise ValueError(f"num_steps: {num_steps} < 0")
        self.client = client
        self.run_id = run_id
        self.rank = rank
        self.world_size = world_size
        self.next_step = start_step
        self.end_step = None if num_steps is None else start_step + num_steps
        self._policy_version = policy_version or (lambda s: s)
        self.require_report = require_report
        self.strict = strict
        self.wait_seconds = float(wait_seconds)
        self._current: Optional[Step] = None
        self.waits = 0  # NextBatch calls re-sent because the step could not be served yet

    def __iter__(self) -> Iterator[Step]:
        return self

    def __next__(self) -> Step:
        previous = self._current
        if previous is not None and self.require_report and not previous.reported:
            raise RuntimeError(
                f"run {self.run_id!r}: {'reference batch' if previous.reference_batch else 'step'}"
                f" {previous.step} was not reported; call step.report(groups) before asking for "
                "the next step"
            )
        after_reference = previous is not None and previous.reference_batch
        if after_reference:
            step_number = previous.step  # now ask for the training batch of the same step
        else:
            step_number = self.next_step
        if self.end_step is not None and step_number >= self.end_step:
            raise StopIteration
        version = int(self._policy_version(step_number))
        batch = self._fetch(step_number, version, after_reference)
        self._current = Step(self.client, self.run_id, batch, version, self.strict)
        if not batch.reference_batch:
            self.next_step = step_number + 1
        return self._current

    def _fetch(self, step: int, version: int, after_reference: bool) -> Batch:
        """NextBatch(step), re-asked while it cannot be served yet. With after_reference, this
        rank already reported its slice of the step's reference batch: while other ranks have
        not, the server still answers with the reference batch, which is waited out here."""
        deadline = time.monotonic() + self.wait_seconds
        while True:
            try:
                batch = self.client.next_batch(
                    self.run_id, step, rank=self.rank, world_size=self.world_size,
                    policy_version=version,
                )
                if not (after_reference and batch.reference_batch):
                    return batch
                if time.monotonic() >= deadline:
                    raise DotsError(
                        "DEADLINE_EXCEEDED",
                        f"run {self.run_id!r} step {step}: the reference batch is still not "
                        f"fully reported after {self.wait_seconds} s (other ranks?)",
                    )
            except DotsError as e:
                transient = e.code == "DEADLINE_EXCEEDED" or (
                    e.code == "FAILED_PRECONDITION"
                    and any(s in e.message for s in _TRANSIENT_PRECONDITIONS)
                )
                if not transient or time.monotonic() >= deadline:
                    raise
            self.waits += 1
            time.sleep(0.05)
