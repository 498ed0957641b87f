"""A load generator for real-size jobs: torch-format rendezvous states of up to 10,000 nodes,
written through rdzv's own backend at the rate such a job writes them.

Every node of an elastic job rewrites the whole state on each keep-alive, so N nodes with a
keep-alive of K seconds make N / K writes a second, each moving one node's heartbeat.
:class:`LoadGenerator` is all of those nodes at once: one writer that keeps one torch
``_RendezvousState`` (torch's own class, so the bytes are torch's format), moves the heartbeat of
the node whose turn it is, pickles the state and writes it with
:meth:`rdzv.backend.EtcdRendezvousBackend.set_state`: a compare-and-swap on the token of its
previous write, as torch's handler does. Mixed in, at ``churn`` events a second:

* **join**: a new node adds itself to the wait list, with its first heartbeat;
* **leave**: a participant removes itself (torch's ``_remove_from_participants``: out of the
  participants and the heartbeats);
* **crash**: a participant stops heartbeating; nothing is written then. Once its last heartbeat
  is older than ``dead_after`` (torch: keep-alive interval x max attempts, 3 x K), the next write
  removes it, as torch's ``_sanitize`` does in whichever node writes next;
* **admit**: waiting nodes are taken in by a re-rendezvous once the oldest has waited
  ``admit_after`` seconds: the round advances and the participants are re-ranked in sorted
  order (torch's ``_mark_rendezvous_complete``). A real re-rendezvous takes a write per node;
  here it is one write.

A live node is never declared dead, even when the writer falls behind the rate (its heartbeat
is then N / achieved-rate seconds old rather than K): the load is about writing, not about
torch's timeouts. One writer is the most a single state key sustains: each write carries the
previous one's changes and must name its revision, so writes to one key are serial whatever
the number of writers (several would only lose compare-and-swaps to each other). A lost
compare-and-swap (another client wrote the key) takes the state etcd returned, keeps the
generator's newer heartbeats and writes again (a join or leave in that write is then lost;
``cas_lost`` counts them).

The run is bounded: it stops after ``duration`` seconds, ``max_writes`` writes, or
:meth:`LoadGenerator.stop`. Everything it did is in the returned :class:`LoadStats`, with a
:class:`WriteRecord` per write (its revision, when it was acknowledged, what it did) for
checking what a viewer saw against what was written.
"""

from __future__ import annotations

import base64
import math
import pickle
import random
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

__all__ = ["LoadGenerator", "LoadStats", "WriteRecord", "build_state", "node_name", "run_load", "state_b64"]

TORCH_KEEP_ALIVE_S = 5.0
"""torch's default keep-alive interval (``RendezvousSettings.keep_alive_interval``)."""
TORCH_MAX_ATTEMPTS = 3
"""torch's default ``keep_alive_max_attempt``: a node is dead after this many missed keep-alives."""
MAX_NODES = 10_000


def node_name(index: int, host: str = "load") -> str:
    """The address of node ``index``: ``node-00042.load``; sorting names sorts indices."""
    return f"node-{index:05d}.{host}"


def build_state(nodes: int, *, now: datetime | None = None, keep_alive: float = TORCH_KEEP_ALIVE_S,
                round: int = 1, host: str = "load") -> tuple[Any, list[Any]]:
    """A completed round of ``nodes`` participants as torch holds it: ``(_RendezvousState,
    [_NodeDesc, ...])``. Ranks follow sorted order; heartbeats are spread over the keep-alive
    interval before ``now``, every one a distinct microsecond (as real ones are)."""
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _NodeDesc, _RendezvousState

    now = now or datetime.now(timezone.utc)
    state = _RendezvousState()
    state.round = round
    state.complete = True
    descs = [_NodeDesc(node_name(index, host), 10_000 + index, 0) for index in range(nodes)]
    for rank, desc in enumerate(descs):
        state.participants[desc] = rank
        # oldest first: node 0 is the next to heartbeat
        state.last_heartbeats[desc] = now - timedelta(seconds=keep_alive * (nodes - rank) / max(nodes, 1),
                                                      microseconds=rank % 997)
    return state, descs


@dataclass(frozen=True)
class WriteRecord:
    """One write the generator made (``revision`` set) or one crash (``revision`` ``None``:
    a crash writes nothing).

    ``kind``: ``created``, ``heartbeat``, ``join``, ``leave``, ``admit`` or ``crash``; ``node``:
    the node concerned (``addr_pid_localid``, torch's ``repr``), for ``admit`` the node whose
    write it was; ``admitted``: the nodes an ``admit`` moved from the wait list into the round;
    ``removed``: crashed nodes this write removed. ``started``/``written``: ``time.time()``
    before the write and when etcd acknowledged it. ``lost``: compare-and-swaps lost first.
    ``data``: the pickled state written, when the generator keeps them."""

    revision: int | None
    kind: str
    node: str | None
    started: float
    written: float
    admitted: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    lost: int = 0
    data: bytes | None = field(default=None, repr=False)


@dataclass
class LoadStats:
    """What a load run did. Latencies are per successful write, in milliseconds: ``write_ms``
    from mutating the state to etcd's acknowledgement (pickle included), ``cas_ms`` the
    backend's ``set_state`` alone (base64 and the compare-and-swap)."""

    api: str
    run_id: str
    key: str
    nodes: int
    keep_alive: float
    target_rate: float
    duration: float
    writes: int = 0
    cas_lost: int = 0
    seconds: float = 0.0
    ops: dict[str, int] = field(default_factory=dict)
    write_ms_p50: float | None = None
    write_ms_p99: float | None = None
    cas_ms_p50: float | None = None
    cas_ms_p99: float | None = None
    pickle_ms_p50: float | None = None
    state_bytes: int = 0
    final_nodes: int = 0
    final_round: int = 0
    last_revision: int | None = None
    stopped_by: str = ""
    records: list[WriteRecord] = field(default_factory=list, repr=False)

    @property
    def achieved_rate(self) -> float:
        """Successful writes per second over the run."""
        return self.writes / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self, records: bool = False) -> dict[str, Any]:
        """The figures as JSON-ready data (``records``: with every write, without the bytes)."""
        data = {name: value for name, value in asdict(self).items() if name != "records"}
        data["achieved_rate"] = self.achieved_rate
        if math.isinf(self.target_rate):
            data["target_rate"] = None  # as fast as the writer goes (JSON has no infinity)
        if records:
            data["records"] = [{**asdict(record), "data": None} for record in self.records]
        return data


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


class LoadGenerator:
    """Writes the states of one run of ``nodes`` nodes (see the module docstring).

    Args:
        endpoint: etcd's ``host:port[,host:port]``.
        api: ``"v2"`` or ``"v3"``.
        run_id: the run (its state key must not exist yet).
        nodes: participants at the start, 1 to 10,000.
        keep_alive: seconds between two heartbeats of one node; the rate is ``nodes / keep_alive``
            writes a second unless ``rate`` is given (``math.inf``: as fast as the writer goes).
        duration: seconds to run; the run stops by itself after them.
        churn: membership events a second (joins, leaves and crashes, drawn by ``mix``).
        mix: relative weights of ``(join, leave, crash)``.
        dead_after: seconds after its last heartbeat a crashed node is removed
            (default ``keep_alive`` x 3, torch's rule).
        admit_after: seconds a node waits before a re-rendezvous admits the wait list
            (``None``: never; joined nodes stay waiting).
        prefix: the key prefix (default torch's ``/torch/elastic``).
        max_writes: stop after this many writes (the creation included).
        keep_records: keep a :class:`WriteRecord` per write; ``keep_data``: with its bytes.
        seed: of the random draws (which event, which node).
    """

    def __init__(self, endpoint: str, *, api: str = "v3", run_id: str, nodes: int = 1000,
                 keep_alive: float = TORCH_KEEP_ALIVE_S, duration: float = 60.0, rate: float | None = None,
                 churn: float = 0.0, mix: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 dead_after: float | None = None, admit_after: float | None = None, prefix: str | None = None,
                 max_writes: int | None = None, keep_records: bool = True, keep_data: bool = False,
                 seed: int = 0, host: str = "load") -> None:
        if not 1 <= nodes <= MAX_NODES:
            raise ValueError(f"nodes must be between 1 and {MAX_NODES:,}, not {nodes}.")
        if keep_alive <= 0 or duration <= 0 or churn < 0 or (rate is not None and rate <= 0):
            raise ValueError("keep_alive, duration and rate must be positive, churn not negative.")
        if api not in ("v2", "v3"):
            raise ValueError(f"api must be 'v2' or 'v3', not {api!r}.")
        self.endpoint, self.api, self.run_id = endpoint, api, run_id
        self.nodes, self.keep_alive, self.duration = nodes, keep_alive, duration
        self.rate = rate if rate is not None else nodes / keep_alive
        self.churn, self.mix = churn, mix
        self.dead_after = dead_after if dead_after is not None else keep_alive * TORCH_MAX_ATTEMPTS
        self.admit_after, self.prefix, self.max_writes = admit_after, prefix, max_writes
        self.keep_records, self.keep_data = keep_records, keep_data
        self.host = host
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: LoadStats | None = None
        self._error: BaseException | None = None

    # -- running ------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask a running generator to stop after its current write."""
        self._stop.set()

    @property
    def running(self) -> bool:
        """Whether a :meth:`start`-ed run is still going."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> LoadGenerator:
        """Run in a daemon thread; :meth:`join` returns the stats."""
        self._thread = threading.Thread(target=self._run_in_thread, name=f"rdzv-load {self.run_id}", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> LoadStats:
        """Wait for a :meth:`start`-ed run; its stats. Raises what the run raised."""
        assert self._thread is not None, "start() first"
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the load on run {self.run_id} did not stop within {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result

    def _run_in_thread(self) -> None:
        try:
            self._result = self.run()
        except BaseException as error:  # handed to join()
            self._error = error

    def run(self) -> LoadStats:
        """Run in this thread until the duration, ``max_writes`` or :meth:`stop`; the stats."""
        from torch.distributed.elastic.rendezvous import RendezvousParameters

        from ..backend import EtcdRendezvousBackend, create_backend
        from ..kv import KeyLayout

        params = RendezvousParameters(backend=f"rdzv-etcd-{self.api}", endpoint=self.endpoint, run_id=self.run_id,
                                      min_nodes=1, max_nodes=MAX_NODES * 2)
        backend, _store = create_backend(params, api=self.api)
        if self.prefix is not None:  # the same backend, below another prefix
            backend = EtcdRendezvousBackend(backend.kv, self.run_id, key_prefix=KeyLayout(self.prefix).runs_prefix)
        try:
            return self._write_loop(backend)
        finally:
            backend.kv.close()

    # -- the writer ---------------------------------------------------------------------------

    def _write_loop(self, backend: Any) -> LoadStats:
        from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _NodeDesc

        self._node_class = _NodeDesc
        state, descs = build_state(self.nodes, keep_alive=self.keep_alive, host=self.host)
        self._state = state
        self._rotation: deque = deque(descs)  # live nodes, the next to heartbeat on the left
        self._crashed: set = set()
        self._waiting_since: dict = {}
        self._next_index = self.nodes
        stats = LoadStats(self.api, self.run_id, backend.key, self.nodes, self.keep_alive, self.rate, self.duration)
        ops: Counter[str] = Counter()
        write_s: list[float] = []
        cas_s: list[float] = []
        pickle_s: list[float] = []
        self._token = None

        interval = 0.0 if math.isinf(self.rate) else 1.0 / self.rate
        churn_interval = 1.0 / self.churn if self.churn > 0 else math.inf
        began = time.monotonic()
        deadline = began + self.duration
        next_write, next_churn = began, began + churn_interval
        first = True
        while True:
            now = time.monotonic()
            if self._stop.is_set() or now >= deadline or (self.max_writes is not None
                                                          and stats.writes >= self.max_writes):
                stats.stopped_by = "stop()" if self._stop.is_set() else "duration" if now >= deadline else "max_writes"
                break
            if first:
                kind, node, admitted, removed = "created", None, [], ()
                first = False
            else:
                if next_write > now:
                    self._stop.wait(min(next_write - now, deadline - now))
                    continue
                next_write = max(next_write + interval, now - interval)  # behind: no burst to catch up
                drawn = None
                if next_churn <= now:
                    next_churn += churn_interval
                    drawn = self._random.choices(("join", "leave", "crash"), weights=self.mix)[0]
                    if drawn == "crash" and self._crash(stats):
                        ops["crash"] += 1
                        drawn = None
                kind, node, admitted = self._operation(now, drawn)
                removed = self._remove_dead()
            started_wall, started = time.time(), time.perf_counter()
            revision, lost, data = self._write(backend, pickle_s, cas_s)
            finished, written_wall = time.perf_counter(), time.time()
            stats.writes += 1
            stats.cas_lost += lost
            ops[kind] += 1
            if removed:
                ops["removal"] += len(removed)
            write_s.append(finished - started)
            if self.keep_records:
                stats.records.append(WriteRecord(revision, kind, node, started_wall, written_wall,
                                                 tuple(admitted), removed, lost, data if self.keep_data else None))
            stats.state_bytes = len(data)
            stats.last_revision = revision
        stats.seconds = time.monotonic() - began
        stats.ops = dict(ops)
        stats.write_ms_p50, stats.write_ms_p99 = (_ms(_percentile(write_s, q)) for q in (0.5, 0.99))
        stats.cas_ms_p50, stats.cas_ms_p99 = (_ms(_percentile(cas_s, q)) for q in (0.5, 0.99))
        stats.pickle_ms_p50 = _ms(_percentile(pickle_s, 0.5))
        stats.final_nodes = len(self._state.participants) + len(self._state.wait_list)
        stats.final_round = self._state.round
        return stats

    def _write(self, backend: Any, pickle_s: list[float], cas_s: list[float]) -> tuple[int, int, bytes]:
        """Write the state (a compare-and-swap on the last token); ``(revision, lost, bytes)``."""
        lost = 0
        while True:
            began = time.perf_counter()
            data = pickle.dumps(self._state)
            pickled = time.perf_counter()
            result = backend.set_state(data, self._token)
            cas_s.append(time.perf_counter() - pickled)
            pickle_s.append(pickled - began)
            if result is None:
                raise RuntimeError(f"the state of run {self.run_id} vanished from etcd during the load")
            _, token, written = result
            if not written and self._token is None:
                raise RuntimeError(f"run {self.run_id} already has a state at {backend.key}; a load needs a new run id")
            self._token = token
            if written:
                return int(token), lost, data
            lost += 1
            self._adopt(result[0])

    def _adopt(self, data: bytes) -> None:
        """Another client wrote the key: carry on from its state (our own nodes' bookkeeping stays)."""
        current = pickle.loads(data)  # a state this run's own key holds; torch's handler does the same
        current.last_heartbeats.update({node: moment for node, moment in self._state.last_heartbeats.items()
                                        if node in current.last_heartbeats})
        self._state = current

    # -- what each write does -----------------------------------------------------------------

    def _crash(self, stats: LoadStats) -> bool:
        """A participant stops heartbeating (nothing is written); False when none is left to crash."""
        participants = [node for node in self._state.participants if node not in self._crashed]
        if len(participants) < 2:
            return False
        victim = self._random.choice(participants)
        self._rotation.remove(victim)
        self._crashed.add(victim)
        if self.keep_records:
            moment = time.time()
            stats.records.append(WriteRecord(None, "crash", repr(victim), moment, moment))
        return True

    def _operation(self, now: float, drawn: str | None) -> tuple[str, str | None, list[str]]:
        """Apply the next write's operation to the state: a drawn join or leave, else an admission
        when one is due, else the heartbeat of the node whose turn it is; ``(kind, node, admitted)``."""
        state = self._state
        participants = [node for node in state.participants if node not in self._crashed] if drawn == "leave" else []
        if drawn == "join" or (drawn == "leave" and len(participants) < 2):
            desc = self._node_class(node_name(self._next_index, self.host), 10_000 + self._next_index, 0)
            self._next_index += 1
            state.wait_list.add(desc)
            state.last_heartbeats[desc] = datetime.now(timezone.utc)
            self._rotation.append(desc)
            self._waiting_since[desc] = now
            return "join", repr(desc), []
        if drawn == "leave":
            victim = self._random.choice(participants)
            self._rotation.remove(victim)
            del state.participants[victim]
            del state.last_heartbeats[victim]
            _epilogue(state)
            return "leave", repr(victim), []
        if self.admit_after is not None and self._waiting_since and \
                now - min(self._waiting_since.values()) >= self.admit_after:
            return self._admit()
        desc = self._rotation.popleft()
        self._rotation.append(desc)
        state.last_heartbeats[desc] = datetime.now(timezone.utc)
        return "heartbeat", repr(desc), []

    def _admit(self) -> tuple[str, str | None, list[str]]:
        """A re-rendezvous in one write: the waiting nodes join, ranks follow sorted order."""
        state = self._state
        waiting = sorted(state.wait_list)
        state.round += 1
        for desc in waiting:
            state.participants[desc] = 0
        state.wait_list.clear()
        for rank, desc in enumerate(sorted(state.participants)):
            state.participants[desc] = rank
        state.complete, state.deadline = True, None
        self._waiting_since.clear()
        writer = self._rotation[0] if self._rotation else None
        if writer is not None:
            self._rotation.rotate(-1)
            state.last_heartbeats[writer] = datetime.now(timezone.utc)
        return "admit", None if writer is None else repr(writer), [repr(desc) for desc in waiting]

    def _remove_dead(self) -> tuple[str, ...]:
        """torch's ``_sanitize`` for the crashed nodes whose last heartbeat is ``dead_after`` old."""
        if not self._crashed:
            return ()
        state = self._state
        expire = datetime.now(timezone.utc) - timedelta(seconds=self.dead_after)
        dead = sorted(node for node in self._crashed if state.last_heartbeats.get(node, expire) < expire)
        removed_participant = False
        for node in dead:
            self._crashed.discard(node)
            state.last_heartbeats.pop(node, None)
            removed_participant |= state.participants.pop(node, None) is not None
            state.wait_list.discard(node)
            state.redundancy_list.discard(node)
        if removed_participant:
            _epilogue(state)
        return tuple(repr(node) for node in dead)


def _epilogue(state: Any) -> None:
    """torch's ``_remove_participant_epilogue`` for a completed round with no minimum to keep."""
    if state.complete and not state.participants:
        state.complete = False
        state.round += 1


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def run_load(endpoint: str, **options: Any) -> LoadStats:
    """Run a :class:`LoadGenerator` in this thread to the end; its stats (see the class for the options)."""
    return LoadGenerator(endpoint, **options).run()


def state_b64(state: Any) -> str:
    """A torch state as etcd holds it (base64 of its pickle)."""
    return base64.b64encode(pickle.dumps(state)).decode()
