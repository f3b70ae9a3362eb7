"""`dots_client.Client`: a typed, retrying wrapper over the `dots.v1.Dots` gRPC service.

Every method blocks until the call completes (or the client's `timeout`, retries included,
runs out) and raises `DotsError` on failure, carrying the gRPC status code name (for instance
"NOT_FOUND") and the server's message. Idempotent calls (everything except create_run and
delete_run) are retried with exponential backoff while the server answers UNAVAILABLE (starting
or draining); the API makes retries safe: NextBatch returns the same batch for the same step,
ReportRollouts counts repeated groups as duplicates, UpsertQuestions replaces by key.

Large data never travels in one message: questions are uploaded and rollout payloads reported
in requests of at most ~1 MiB each (payloads split into fragments), and replay payloads of a
batch are reassembled from the server's fragments, so payloads of any size work with gRPC's
default 4 MiB message limit. The fragment codec (`encode_report`, `decode_batch`) follows the
rules of proto/payload_codec.h byte for byte; tests/python/test_payload_golden.py checks it
against the golden streams of tests/proto/golden that the C++ codec writes.
"""

import dataclasses
import json
import time
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence

import grpc

from dots.v1 import dots_pb2, dots_pb2_grpc

# Budget of one request message in bytes. Well under gRPC's default 4 MiB limit and under the
# ~1 MiB the API asks clients to keep to; uploads keep a slack for field tags and length prefixes.
_REQUEST_BUDGET_BYTES = 1 << 20
_REQUEST_SLACK_BYTES = 16 << 10
# The cutting rule of proto/payload_codec.h: kMinFragmentDataBytes and kFragmentWrapBytes.
_MIN_FRAGMENT_DATA_BYTES = 256
_FRAGMENT_WRAP_BYTES = 2 * (1 + 10)
# The server's cap on keys per GetEstimates call (kMaxPageSize).
_MAX_KEYS_PER_CALL = 10000
# The metadata key that carries a call's run (kRoutingHeader in proto/convert.h).
ROUTING_HEADER = "x-dots-run"

_ROLE_NAMES = {
    dots_pb2.ROLE_FRESH: "fresh",
    dots_pb2.ROLE_REFERENCE: "reference",
    dots_pb2.ROLE_UNSPECIFIED: "unspecified",
}


class DotsError(Exception):
    """A failed dots call.

    Attributes:
      code: name of the grpc.StatusCode, e.g. "NOT_FOUND", "INVALID_ARGUMENT", "UNAVAILABLE".
      message: the server's (or the client's) explanation, naming the field concerned.
    """

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def status_code(self) -> grpc.StatusCode:
        """The code as a grpc.StatusCode."""
        return grpc.StatusCode[self.code]


@dataclasses.dataclass(frozen=True)
class Item:
    """A question to roll out at this step."""

    key: str
    role: str  # "fresh" or "reference"
    prompt: str
    metadata: Any  # the question's metadata, parsed from JSON ({} when none was given)


@dataclasses.dataclass(frozen=True)
class ReplayGroup:
    """A rollout group of an earlier step that the server replays into this batch."""

    key: str
    step: int  # step that generated the group
    policy_version: int  # behaviour policy version of the rollouts
    rewards: List[float]
    payload: bytes  # exactly the bytes reported with the group


@dataclasses.dataclass(frozen=True)
class Batch:
    """One rank's slice of a training step's batch."""

    step: int
    round: int
    reference_batch: bool  # paper reference mode: roll out, report, then ask again
    batch_size: int  # items + replay groups of the whole step (all ranks)
    items: List[Item]
    replay: List[ReplayGroup]


@dataclasses.dataclass
class Group:
    """A rollout group to report: G rewards in [0, 1] of one question, plus opaque bytes."""

    key: str
    rewards: Sequence[float]
    policy_version: int
    payload: bytes = b""


def _run_info_to_dict(info) -> Dict[str, Any]:
    out = {
        "run_id": info.run_id,
        "config": json.loads(info.config_json) if info.config_json else {},
        "pool_size": info.pool_size,
        "created_unix_seconds": info.created_unix_seconds,
    }
    # Only CreateRun on a server with access control sends the run's token (this once).
    if info.token:
        out["token"] = info.token
    return out


def _read_file(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ValueError(f"{what}: {path}: {e.strerror}") from None


def _parse_metadata(text: str, key: str) -> Any:
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError as e:
        raise DotsError("DATA_LOSS", f"item {key!r}: metadata_json is not JSON: {e}") from None


class Client:
    """A connection to one dots-server.

    Args:
      target: "HOST:PORT" of the server.
      token: when set, sent as `authorization: Bearer <token>` metadata on every call: the
        server's admin token, or a run's token (the "token" of create_run's result).
      ca_file: PEM CA certificates that sign the server's certificate; connects with TLS.
      cert_file, key_file: PEM client certificate and its private key, for servers that require
        mutual TLS (dots-server --tls_client_ca_file); connects with TLS.
      tls: connect with TLS even without the files above (trusting the system's CA roots).
        Default: TLS exactly when one of the files is given; otherwise plaintext.
      timeout: seconds each method may take in total, retries and backoff included.
      max_attempts: tries of an idempotent call while the server answers UNAVAILABLE.
      initial_backoff, max_backoff: seconds slept before the 2nd attempt, doubling up to the cap.

    Thread-safety: a Client may be shared by threads (gRPC channels are thread-safe).
    """

    def __init__(
        self,
        target: str,
        token: Optional[str] = None,
        timeout: float = 30.0,
        max_attempts: int = 5,
        initial_backoff: float = 0.1,
        max_backoff: float = 2.0,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        tls: Optional[bool] = None,
    ):
        if max_attempts < 1:
            raise ValueError(f"max_attempts: {max_attempts} < 1")
        if not timeout > 0:
            raise ValueError(f"timeout: {timeout} is not positive")
        self.target = target
        self.timeout = float(timeout)
        self.max_attempts = int(max_attempts)
        self.initial_backoff = float(initial_backoff)
        self.max_backoff = float(max_backoff)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if bool(cert_file) != bool(key_file):
            raise ValueError("cert_file, key_file: give both (mutual TLS) or neither")
        if tls is None:
            tls = bool(ca_file or cert_file)
        if tls:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read_file(ca_file, "ca_file") if ca_file else None,
                private_key=_read_file(key_file, "key_file") if key_file else None,
                certificate_chain=_read_file(cert_file, "cert_file") if cert_file else None,
            )
            self._channel = grpc.secure_channel(target, credentials)
        elif ca_file or cert_file:
            raise ValueError("tls=False contradicts ca_file / cert_file")
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = dots_pb2_grpc.DotsStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- the retry loop ----

    def _call(self, attempt: Callable[[float], Any], idempotent: bool) -> Any:
        """Runs attempt(seconds_left) until it succeeds, retrying UNAVAILABLE when idempotent.

        `attempt` must make the whole RPC (consuming any response stream) so that a retry
        starts from scratch. Raises DotsError with the last status.
        """
        deadline = time.monotonic() + self.timeout
        backoff = self.initial_backoff
        tries = 0
        while True:
            tries += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise DotsError(
                    "DEADLINE_EXCEEDED", f"no answer from {self.target} in {self.timeout} s"
                )
            try:
                return attempt(left)
            except grpc.RpcError as e:
                code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
                details = (e.details() if hasattr(e, "details") else None) or str(e)
                retry = (
                    idempotent
                    and code == grpc.StatusCode.UNAVAILABLE
                    and tries < self.max_attempts
                    and deadline - time.monotonic() > backoff
                )
                if not retry:
                    raise DotsError(code.name, details) from None
            time.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    def _metadata_for(self, run_id: str):
        """Call metadata: the token, and the run a call names as the routing header
        `x-dots-run` (a router in front of several servers hashes it; the server refuses a call
        whose header and run id differ)."""
        return self._metadata + ((ROUTING_HEADER, run_id),) if run_id else self._metadata

    def _unary(self, method, request, idempotent: bool = True):
        metadata = self._metadata_for(getattr(request, "run_id", ""))
        return self._call(lambda left: method(request, timeout=left, metadata=metadata), idempotent)

    # ---- runs ----

    def create_run(self, run_id: str, config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        """Creates a run; config is a dict of core/run/run_config.h keys ({} = paper defaults).

        Returns {run_id, config (canonical, every key), pool_size, created_unix_seconds}, plus
        "token" (the run's bearer token, returned this once) when the server has access control.
        Not retried. Errors: INVALID_ARGUMENT naming the key, ALREADY_EXISTS.
        """
        request = dots_pb2.CreateRunRequest(run_id=run_id, config_json=json.dumps(config or {}))
        return _run_info_to_dict(self._unary(self._stub.CreateRun, request, idempotent=False))

    def get_run(self, run_id: str) -> Dict[str, Any]:
        """The run's canonical config and sizes, as create_run returns. Errors: NOT_FOUND."""
        return _run_info_to_dict(
            self._unary(self._stub.GetRun, dots_pb2.GetRunRequest(run_id=run_id))
        )

    def list_runs(self) -> List[Dict[str, Any]]:
        """Every run on the server, ordered by id (dicts as get_run returns)."""
        response = self._unary(self._stub.ListRuns, dots_pb2.ListRunsRequest())
        return [_run_info_to_dict(r) for r in response.runs]

    def delete_run(self, run_id: str) -> None:
        """Removes the run and all its state. Not retried. Errors: NOT_FOUND."""
        request = dots_pb2.DeleteRunRequest(run_id=run_id)
        self._unary(self._stub.DeleteRun, request, idempotent=False)

    # ---- questions ----

    def upsert_questions(
        self, run_id: str, questions: Sequence[Dict[str, Any]], embeddings=None
    ) -> Dict[str, Any]:
        """Adds or replaces questions of a run.

        Args:
          questions: dicts with "key" (str), optional "prompt" (str), "metadata" (any JSON
            value, sent as JSON text) and "prior" (success-rate prior in [0, 1]).
          embeddings: None, or an array-like N x D (N = len(questions)), converted to float32.
        Returns {"added": int, "updated": int, "rejected": [{"index", "key", "error"}]}; a
        rejected question changes nothing, the others are applied.
        Cost: O(N * D) to encode; requests of at most ~1 MiB each.
        Errors: NOT_FOUND; ValueError (client-side) for a malformed argument.
        """
        matrix = None
        if embeddings is not None:
            import numpy as np

            matrix = np.asarray(embeddings, dtype=np.float32)
            if matrix.ndim != 2 or matrix.shape[0] != len(questions):
                raise ValueError(
                    f"embeddings: shape {matrix.shape}, want ({len(questions)}, D) "
                    "(one row per question)"
                )
        messages = []
        for i, q in enumerate(questions):
            if not isinstance(q, dict) or "key" not in q:
                raise ValueError(f"questions[{i}]: not a dict with a 'key'")
            message = dots_pb2.Question(key=str(q["key"]), prompt=str(q.get("prompt", "")))
            if q.get("metadata") is not None:
                message.metadata_json = json.dumps(q["metadata"])
            if q.get("prior") is not None:
                message.prior = float(q["prior"])
            if matrix is not None:
                message.embedding.extend(matrix[i].tolist())
            messages.append(message)

        def requests() -> Iterator[dots_pb2.UpsertQuestionsRequest]:
            budget = _REQUEST_BUDGET_BYTES - _REQUEST_SLACK_BYTES
            request = dots_pb2.UpsertQuestionsRequest(run_id=run_id)
            size = request.ByteSize()
            sent_any = False
            for message in messages:
                need = message.ByteSize() + 8  # tag + length prefix
                if request.questions and size + need > budget:
                    yield request
                    sent_any = True
                    request = dots_pb2.UpsertQuestionsRequest()
                    size = 0
                request.questions.append(message)
                size += need
            if request.questions or not sent_any:
                yield request

        response = self._call(
            lambda left: self._stub.UpsertQuestions(
                requests(), timeout=left, metadata=self._metadata_for(run_id)
            ),
            idempotent=True,
        )
        return {
            "added": response.added,
            "updated": response.updated,
            "rejected": [
                {"index": r.index, "key": r.key, "error": r.error} for r in response.rejected
            ],
        }

    # ---- training ----

    def next_batch(
        self, run_id: str, step: int, rank: int = 0, world_size: int = 1, policy_version: int = 0
    ) -> Batch:
        """The batch of `step` for `rank` of `world_size` (identical on every retry).

        Blocks while the server plans the step's round (up to the client's timeout). Replay
        payloads are reassembled from their fragments. Errors: INVALID_ARGUMENT, NOT_FOUND,
        FAILED_PRECONDITION (step not servable yet; the message says why), DEADLINE_EXCEEDED;
        DATA_LOSS when the stream breaks the API's chunk contract.
        """
        request = dots_pb2.NextBatchRequest(
            run_id=run_id,
            step=step,
            rank=rank,
            world_size=world_size,
            policy_version=policy_version,
        )

        def attempt(left: float) -> Batch:
            stream = self._stub.NextBatch(
                request, timeout=left, metadata=self._metadata_for(run_id)
            )
            return decode_batch(stream)

        return self._call(attempt, idempotent=True)

    def report(self, run_id: str, step: int, groups: Iterable[Group]) -> Dict[str, Any]:
        """Reports the rollout groups of `step` (payloads of any size, sent in fragments).

        Returns {"accepted": int, "duplicates": int, "rejected": [{"key", "error"}]} once the
        report is applied. Repeats of (run, step, key) count as duplicates, so retrying is safe.
        Errors: NOT_FOUND, INVALID_ARGUMENT.
        """
        groups = list(groups)
        for i, g in enumerate(groups):
            if not isinstance(g.payload, (bytes, bytearray, memoryview)):
                raise ValueError(
                    f"groups[{i}] ({g.key!r}): payload is {type(g.payload).__name__}, not bytes"
                )

        response = self._call(
            lambda left: self._stub.ReportRollouts(
                encode_report(run_id, step, groups),
                timeout=left,
                metadata=self._metadata_for(run_id),
            ),
            idempotent=True,
        )
        return {
            "accepted": response.accepted,
            "duplicates": response.duplicates,
            "rejected": [{"key": r.key, "error": r.error} for r in response.rejected],
        }

    # ---- inspection ----

    def estimates(
        self, run_id: str, keys: Optional[Sequence[str]] = None, page_size: int = 0
    ) -> List[Dict[str, Any]]:
        """Success-rate estimates of every question (pool order) or of `keys` (that order).

        Each is {"key", "p_hat", "observations", "last_policy_version" (-1 = never observed)}.
        Follows page tokens (page_size questions per call; 0 = the server's 1000); O(pool size).
        Errors: NOT_FOUND (run or key).
        """
        out: List[Dict[str, Any]] = []

        def add(response) -> None:
            for e in response.estimates:
                out.append(
                    {
                        "key": e.key,
                        "p_hat": e.p_hat,
                        "observations": e.observations,
                        "last_policy_version": e.last_policy_version,
                    }
                )

        if keys is not None:
            keys = list(keys)
            for begin in range(0, len(keys), _MAX_KEYS_PER_CALL):
                request = dots_pb2.GetEstimatesRequest(
                    run_id=run_id, keys=keys[begin : begin + _MAX_KEYS_PER_CALL]
                )
                add(self._unary(self._stub.GetEstimates, request))
            return out
        token = ""
        while True:
            request = dots_pb2.GetEstimatesRequest(
                run_id=run_id, page_token=token, page_size=page_size
            )
            response = self._unary(self._stub.GetEstimates, request)
            add(response)
            token = response.next_page_token
            if not token:
                return out

    def stats(self, run_id: str) -> Dict[str, Any]:
        """The run's counters and gauges: every RunStats field by name, as `dotsctl stats`."""
        response = self._unary(self._stub.GetRunStats, dots_pb2.GetRunStatsRequest(run_id=run_id))
        return {f.name: getattr(response, f.name) for f in response.DESCRIPTOR.fields}


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _entry_bytes(body: int) -> int:
    """Bytes a message of `body` bytes adds to its parent as a field: tag, length, body."""
    return 1 + _varint_size(body) + body


def encode_report(
    run_id: str,
    step: int,
    groups: Sequence[Group],
    max_message_bytes: int = _REQUEST_BUDGET_BYTES,
    max_fragment_bytes: int = 0,
) -> Iterator[dots_pb2.ReportRolloutsRequest]:
    """The ReportRolloutsRequest messages of a report, cut by the rule of proto/payload_codec.h.

    The first message names run_id and step (and there is always that one); every payload is
    sent as consecutive fragments, the first carrying rewards and policy_version. A message has
    a budget of `max_message_bytes` serialized bytes; `max_fragment_bytes` (0 = none) caps the
    data of one fragment. Yields the same bytes as the C++ ReportEncoder.
    """
    request = dots_pb2.ReportRolloutsRequest(run_id=run_id, step=step)
    size = request.ByteSize()
    for g in groups:
        payload = bytes(g.payload)
        offset = 0
        while True:
            fragment = dots_pb2.RolloutFragment(key=g.key, payload_size=len(payload), offset=offset)
            if offset == 0:
                fragment.rewards.extend(float(r) for r in g.rewards)
                fragment.policy_version = int(g.policy_version)
            meta = fragment.ByteSize()
            rest = len(payload) - offset
            room = max_message_bytes - size - meta - _FRAGMENT_WRAP_BYTES
            if size > 0 and room < min(rest, _MIN_FRAGMENT_DATA_BYTES):
                yield request
                request = dots_pb2.ReportRolloutsRequest()
                size = 0
                room = max_message_bytes - meta - _FRAGMENT_WRAP_BYTES
            take = min(rest, max(room, _MIN_FRAGMENT_DATA_BYTES))
            if max_fragment_bytes > 0:
                take = min(take, max_fragment_bytes)
            fragment.data = payload[offset : offset + take]
            size += _entry_bytes(fragment.ByteSize())
            request.groups.append(fragment)
            offset += take
            if offset == len(payload):
                break
    yield request


def _malformed(what: str) -> DotsError:
    return DotsError("DATA_LOSS", f"NextBatch: {what}")


def decode_batch(chunks: Iterable[dots_pb2.NextBatchChunk]) -> Batch:
    """Builds a Batch from NextBatch chunks, checking the layout of proto/payload_codec.h.

    The header comes in the first chunk only, then the items, then the replay groups, each as
    consecutive fragments. Raises DotsError("DATA_LOSS") naming what breaks the layout, with the
    messages of the C++ BatchDecoder.
    """
    header = None
    items: List[Item] = []
    groups: List[Dict[str, Any]] = []

    def last_group_complete(when: str) -> None:
        if groups and groups[-1]["have"] != groups[-1]["size"]:
            g = groups[-1]
            raise _malformed(
                f"replay group {len(groups) - 1} (key {json.dumps(g['key'])}) has "
                f"{g['have']} of {g['size']} payload bytes {when}"
            )

    for chunk in chunks:
        if chunk.HasField("header"):
            if header is not None:
                raise _malformed("a second chunk carries a header")
            header = chunk.header
            if header.item_count < 0 or header.replay_count < 0:
                raise _malformed("header: negative item_count or replay_count")
        elif header is None:
            raise _malformed("the first chunk has no header")
        if chunk.items and groups:
            raise _malformed("an item follows replay data (items come first)")
        if len(items) + len(chunk.items) > header.item_count:
            raise _malformed(f"more than the {header.item_count} items the header says")
        for it in chunk.items:
            items.append(
                Item(
                    key=it.key,
                    role=_ROLE_NAMES.get(it.role, str(it.role)),
                    prompt=it.prompt,
                    metadata=_parse_metadata(it.metadata_json, it.key),
                )
            )
        for f in chunk.replay:
            received = groups[-1]["have"] if groups else 0
            expected = groups[-1]["size"] if groups else 0
            if f.offset == 0 and f.index == len(groups):
                last_group_complete("when the next group starts")
                if len(groups) >= header.replay_count:
                    raise _malformed(
                        f"more than the {header.replay_count} replay groups the header says"
                    )
                if f.payload_size < 0:
                    raise _malformed(
                        f"replay group {len(groups)}: negative payload_size {f.payload_size}"
                    )
                groups.append(
                    {
                        "key": f.key,
                        "step": f.step,
                        "policy_version": f.policy_version,
                        "rewards": list(f.rewards),
                        "size": f.payload_size,
                        "pieces": [],
                        "have": 0,
                    }
                )
            elif (
                not groups
                or f.index != len(groups) - 1
                or f.offset != received
                or f.payload_size != expected
            ):
                raise _malformed(
                    f"replay fragment out of order: index {f.index} offset {f.offset} "
                    f"payload_size {f.payload_size}; expected index {len(groups) - 1} offset "
                    f"{received} payload_size {expected}, or index {len(groups)} offset 0"
                )
            g = groups[-1]
            if g["have"] + len(f.data) > g["size"]:
                raise _malformed(
                    f"replay group {len(groups) - 1}: fragments exceed payload_size {g['size']}"
                )
            g["pieces"].append(f.data)
            g["have"] += len(f.data)
    if header is None:
        raise _malformed("the stream carried no header")
    last_group_complete("when the stream ended")
    if len(items) != header.item_count or len(groups) != header.replay_count:
        raise _malformed(
            f"got {len(items)} items and {len(groups)} replay groups, header says "
            f"{header.item_count} and {header.replay_count}"
        )
    return Batch(
        step=header.step,
        round=header.round,
        reference_batch=header.reference_batch,
        batch_size=header.batch_size,
        items=items,
        replay=[
            ReplayGroup(
                key=g["key"],
                step=g["step"],
                policy_version=g["policy_version"],
                rewards=g["rewards"],
                payload=b"".join(g["pieces"]),
            )
            for g in groups
        ],
    )
