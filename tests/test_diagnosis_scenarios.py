"""rdzv.diagnosis on real rendezvous: every code a real run can produce, produced by real torch
handlers (rdzv.demo) on ``rdzv-etcd-v2``, ``rdzv-etcd-v3`` and torch's own ``etcd-v2``, read by
a real monitor (and ``rdzv status``); every prediction checked by letting it happen.

* the ``k more needed`` of ``forming`` is what it takes: k - 1 more joins leave the round
  forming, the k-th starts the last call (or completes the round when min = max);
* the ``at`` of ``last-call`` is when the round really completes (within a second: the
  participants read the state about once a second, torch's join op's ``SYNC`` delay);
* a crashed node is first late, and the ``at`` of that ``stale-heartbeat`` is when it counts
  as dead; the ``at`` of the dead node's ``stale-heartbeat`` is when a live node's write really
  removes it (see :data:`STALE_TOLERANCE` for why not exactly);
* the ranks of ``complete`` are the ranks the agents got; the waiting and redundant nodes join
  the next round as ``nodes-waiting`` and ``redundant`` say; every node silent is an error that
  nothing changes until a new agent writes; ``expiring``'s ``at`` is the TTL etcd holds;
* a ``closed`` run refuses a new agent with ``RendezvousClosedError``;
* undecodable bytes make every agent fail as ``undecodable`` says; hostile bytes are reported,
  never run; a node name with HTML stays plain text in the findings.

Settings: rdzv's plugins publish them, and the monitor and ``rdzv status`` use those with no
flags; for torch's backend the viewer is given torchrun's flags, and without them says
``settings-unknown``.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TypeVar

import pytest

from rdzv.cli import main
from rdzv.demo import DemoCluster, SimNode
from rdzv.demo.handlers import _create_backend, create_node_handler
from rdzv.diagnosis import STATE_TTL, Finding
from rdzv.kv.layout import KeyLayout
from rdzv.kv.v3_lease import lease_slack
from rdzv.monitor import Monitor
from rdzv.monitor.model import Revision, RunView, diagnose_view, utc_now
from rdzv.rendezvous_settings import RendezvousSettings
from rdzv.state import Node

T = TypeVar("T")

BACKENDS = ("rdzv-etcd-v2", "rdzv-etcd-v3", "etcd-v2")
LAYOUT = KeyLayout()

INTERVAL = 1  # keep_alive_interval, s
ATTEMPTS = 3  # keep_alive_max_attempt: a node is dead 3 s after its last heartbeat
LATE_ATTEMPTS = 5  # ... or 5 s, so that it is first late (silent for the interval + 2 s of slack)
LAST_CALL = 3  # last_call_timeout, s
JOIN = 60  # join_timeout, s

POLL = 0.02  # s between two looks at the monitor
SAFETY = 30  # s: only ever reached when something is broken

LAST_CALL_TOLERANCE = 1.0
"""How much later than the deadline a last call may really end: a participant waiting in
torch's join op reads the state again one second after its last read (``_Action.SYNC``:
``_delay(seconds=1)``), and the first read after the deadline completes the round."""

STALE_TOLERANCE = 1.5
"""How far from the predicted moment a dead node may really be removed. The prediction is the
next keep-alive due of a live node (every ``keep_alive_interval`` from its last heartbeat); but
torch's keep-alive timer waits the interval after the previous keep-alive *ended*, and a
handler whose last read is less than a second old writes its cached copy (the 1 s read cache
of ``_BackendRendezvousStateHolder.sync``), sanitized before the node died; its write then
carries the dead node, and the removal comes with the next write, about one interval later."""

HTML_NAME = "<img src=x onerror=alert(1)>"

MEASURED: dict[str, list[float]] = {"last-call": [], "stale": [], "stale-vs-dead": []}


# -- fixtures and helpers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitor(etcd_server):
    """One private monitor of the session etcd, following both APIs."""
    watching = Monitor(etcd_server.get_endpoint()).start()
    yield watching
    watching.stop()


@pytest.fixture(autouse=True)
def no_settings_from_the_environment(monkeypatch):
    """``rdzv status`` takes settings from RDZV_* variables too: only the flags count here."""
    for name in ("RDZV_NNODES", "RDZV_RDZV_CONF"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module", autouse=True)
def report_measurements():
    yield
    for what, errors in MEASURED.items():
        if errors:
            shown = ", ".join(f"{error * 1000:+.0f}" for error in errors)
            print(f"\n{what} prediction errors (ms): {shown}")


@pytest.fixture(autouse=True)
def _no_thread_tracebacks(no_thread_tracebacks):
    """Every test here fails if a thread ended with an unhandled exception."""


def torchrun_conf(cluster: DemoCluster) -> str:
    config = cluster.config
    return (f"join_timeout={config.join_timeout:g},last_call_timeout={config.last_call_timeout:g},"
            f"close_timeout={config.close_timeout:g},keep_alive_interval={config.keep_alive_interval:g},"
            f"keep_alive_max_attempt={config.keep_alive_max_attempt}")


class Scenario:
    """A demo cluster of real torch handlers, seen through the monitor as a viewer sees it.

    For torch's own backend the viewer is given torchrun's flags (``given``); rdzv's backends
    publish the settings, so the viewer is given nothing."""

    def __init__(self, cluster: DemoCluster, monitor: Monitor) -> None:
        self.cluster, self.monitor = cluster, monitor
        self.run_id = cluster.run_id
        self.torch = cluster.backend == "etcd-v2"
        config = cluster.config
        self.flags = (["--nnodes", f"{config.min_nodes}:{config.max_nodes}", "--rdzv-conf", torchrun_conf(cluster)]
                      if self.torch else [])
        self.given = RendezvousSettings.from_torchrun(self.flags[1], self.flags[3]) if self.torch else None

    @property
    def settings(self) -> RendezvousSettings:
        return self.monitor.settings(self.run_id, self.given)

    def view(self) -> RunView | None:
        return self.monitor.run(self.run_id)

    def findings(self, now: datetime | None = None) -> tuple[Finding, ...]:
        return self.monitor.diagnose(self.run_id, self.given, now)

    def history(self) -> list[Revision]:
        return self.monitor.history(self.run_id)

    def state_when(self, what: str, predicate: Callable, timeout: float = SAFETY) -> RunView:
        """The monitor's view of the run once ``predicate(snapshot)`` holds."""
        return wait_for(what, lambda: (view := self.view()) is not None and view.snapshot is not None
                        and predicate(view.snapshot) and view, timeout)

    def entry(self, what: str, predicate: Callable, timeout: float = SAFETY) -> Revision:
        """The first revision of the run's history whose snapshot satisfies ``predicate``."""
        return wait_for(what, lambda: next((entry for entry in self.history()
                                            if entry.snapshot is not None and predicate(entry.snapshot)), None),
                        timeout)

    def status(self, capsys, *flags: str) -> tuple[int, dict]:
        """``rdzv status --run-id RUN --json`` with ``flags``: its exit code and its JSON."""
        capsys.readouterr()
        code = main(["status", "--endpoint", self.cluster.endpoint, "--run-id", self.run_id, "--json", *flags])
        return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def scenario(etcd_server, monitor, unique):
    """``scenario(backend, **cluster settings)`` -> a :class:`Scenario`; clusters closed after the test."""
    clusters: list[DemoCluster] = []

    def make(backend: str, **settings) -> Scenario:
        settings.setdefault("last_call_timeout", LAST_CALL)
        settings.setdefault("keep_alive_interval", INTERVAL)
        settings.setdefault("keep_alive_max_attempt", ATTEMPTS)
        settings.setdefault("join_timeout", JOIN)
        cluster = DemoCluster(etcd_server.get_endpoint(), f"{unique}-{len(clusters)}", backend=backend, **settings)
        clusters.append(cluster)
        return Scenario(cluster, monitor)

    yield make
    for cluster in clusters:
        cluster.close()


def wait_for(what: str, condition: Callable[[], T], timeout: float = SAFETY) -> T:
    """``condition()``'s first truthy value, polled every :data:`POLL` s; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out after {timeout:g} s waiting for {what}.")
        time.sleep(POLL)


def node_of(sim: SimNode) -> Node:
    """The node as the state holds it (``SimNode.node_id`` is ``addr_pid_localid``)."""
    addr, pid, local_id = sim.node_id.rsplit("_", 2)
    return Node(addr, int(pid), int(local_id))


def only(findings: Iterable[Finding], code: str) -> Finding:
    found = [finding for finding in findings if finding.code == code]
    assert len(found) == 1, [(finding.code, finding.message) for finding in findings]
    return found[0]


def codes(findings: Iterable[Finding]) -> set[str]:
    return {finding.code for finding in findings}


def more_needed(finding: Finding) -> int:
    """The ``k`` of a ``forming`` finding's "k more are needed"."""
    match = re.search(r"; (\d+) more (?:is|are) needed", finding.message)
    assert match, finding.message
    return int(match.group(1))


def seconds(delta: timedelta) -> float:
    return delta.total_seconds()


def state_key(scenario: Scenario, run_id: str | None = None) -> str:
    return LAYOUT.state_key(run_id or scenario.run_id)


def check_settings_source(scenario: Scenario, capsys) -> None:
    """rdzv's backends: the monitor and ``rdzv status`` use the published settings, with no flags.
    torch's backend: without flags the viewer says ``settings-unknown``; with them it knows."""
    config_settings = scenario.cluster.config.settings
    code, bare = scenario.status(capsys)
    assert code == 0
    if scenario.torch:
        assert scenario.monitor.settings(scenario.run_id).given == frozenset()
        assert "settings-unknown" in codes(scenario.monitor.diagnose(scenario.run_id))
        assert "settings-unknown" in {finding["code"] for finding in bare["findings"]}
        assert bare["settings"]["given"] == []
        code, flagged = scenario.status(capsys, *scenario.flags)
        assert code == 0 and "settings-unknown" not in {finding["code"] for finding in flagged["findings"]}
        assert RendezvousSettings.from_dict(flagged["settings"]) == config_settings
        assert scenario.settings == config_settings and scenario.settings.given == config_settings.given
    else:
        published = wait_for("the published settings", lambda: scenario.monitor.settings(scenario.run_id).given)
        assert published == config_settings.given
        assert scenario.monitor.settings(scenario.run_id) == config_settings
        assert "settings-unknown" not in codes(scenario.findings())
        assert "settings-unknown" not in {finding["code"] for finding in bare["findings"]}
        assert RendezvousSettings.from_dict(bare["settings"]) == config_settings
        assert set(bare["settings"]["given"]) == set(config_settings.given)


# -- a run from its first node to a dropped one ---------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_run_forms_completes_grows_and_drops_a_dead_node_as_diagnosed(scenario, backend, capsys):
    run = scenario(backend, min_nodes=3, max_nodes=4, keep_alive_max_attempt=LATE_ATTEMPTS)
    cluster = run.cluster

    # forming: "k more are needed"; k - 1 more leave the round forming, the k-th starts the last call
    joined = [cluster.add_node()]
    run.state_when("the first node to join", lambda s: node_of(joined[0]) in s.participants)
    check_settings_source(run, capsys)
    needed = more_needed(only(run.findings(), "forming"))
    assert needed == 2
    for step in range(needed - 1):
        joined.append(cluster.add_node())
        view = run.state_when("the next node to join", lambda s: node_of(joined[-1]) in s.participants)
        assert not view.snapshot.complete and view.snapshot.deadline is None
        forming = only(run.findings(), "forming")
        assert more_needed(forming) == needed - 1 - step
        assert set(forming.nodes) == {node_of(node) for node in joined}
    joined.append(cluster.add_node())
    view = run.state_when("the k-th node to join", lambda s: node_of(joined[-1]) in s.participants)
    assert view.snapshot.deadline is not None and not view.snapshot.complete

    # last call: it ends at the deadline, when the round really completes
    findings = run.findings()
    assert "forming" not in codes(findings)
    last_call = only(findings, "last-call")
    assert last_call.at == view.snapshot.deadline
    assert timedelta(0) < last_call.at - utc_now() <= timedelta(seconds=LAST_CALL)
    assert set(last_call.nodes) == {node_of(node) for node in joined}
    assert not [f.message for f in findings if "rank" in f.message]  # the placeholder rank 0 is no rank
    completed = run.entry("the round to complete", lambda s: s.complete and s.round == 0)
    error = seconds(completed.seen_at - last_call.at)
    MEASURED["last-call"].append(error)
    assert 0 <= error <= LAST_CALL_TOLERANCE, f"completed {error:+.3f} s after the predicted {last_call.at}"
    assert not [e for e in run.history() if e.snapshot and e.snapshot.complete and e.seen_at < last_call.at]

    # complete: the ranks the agents themselves got
    wait_for("the agents to run", lambda: len(cluster.running()) == 3)
    complete = only(run.findings(), "complete")
    assert complete.message == "Round 0 is complete: 3 nodes, with ranks 0 to 2 in node order."
    by_name = {view.name: view.rank for view in cluster.running()}
    assert [by_name[node.addr] for node in complete.nodes] == [0, 1, 2]
    assert complete.nodes == tuple(sorted(complete.nodes))

    # nodes-waiting: the newcomer waits, and the agents re-rendezvous into round 1 with it
    joined.append(cluster.add_node())
    newcomer = node_of(joined[-1])
    waiting_entry = run.entry("the newcomer on the wait list", lambda s: newcomer in s.wait_list and s.complete)
    waiting = only(diagnose_view(waiting_entry, run.settings, waiting_entry.seen_at), "nodes-waiting")
    # The monitor may fold revisions when it falls behind, so the first one it shows with the
    # newcomer waiting can also hold agents of round 0 that have started to rejoin.
    assert newcomer in waiting.nodes and set(waiting.nodes) == set(waiting_entry.snapshot.wait_list)
    assert str(waiting.nodes[0]) in waiting.message and "round 1" in waiting.message
    round_1 = run.state_when("round 1 with the newcomer", lambda s: s.round == 1 and s.complete)
    assert set(round_1.snapshot.participants) == {node_of(node) for node in joined}

    # redundant: round 1 is full, so the next newcomer waits idle until a participant leaves
    joined.append(cluster.add_node())
    spare = node_of(joined[-1])
    run.state_when("the spare node to be redundant", lambda s: spare in s.redundancy_list)
    redundant = only(run.findings(), "redundant")
    assert redundant.nodes == (spare,) and "maximum of 4 participants" in redundant.message
    assert codes(run.findings()) == {"complete", "redundant"}

    # stale-heartbeat: a crashed participant is late, then counts as dead interval x attempts after
    # its last heartbeat, when the late finding said, and is removed by the next write of a live node, when
    # the dead finding said
    victim_sim = joined[1]
    victim = node_of(victim_sim)
    crashed_at = run.view().revision
    cluster.crash(victim_sim)
    late = wait_for("the crashed node to be late", lambda: next(
        (f for f in run.findings() if f.code == "stale-heartbeat" and victim in f.nodes), None))
    assert late.severity == "warning" and "counts as dead at" in late.message, late
    last_heard = run.view().snapshot.last_heartbeats[victim]
    assert late.at == last_heard + timedelta(seconds=INTERVAL * LATE_ATTEMPTS)
    predicted, dead_at = predict_removal(run, victim)
    assert dead_at == late.at
    removal = wait_for("the dead node's removal", lambda: next(
        (e for e in run.history() if e.revision > crashed_at and e.snapshot and victim not in e.snapshot.last_heartbeats),
        None))
    assert victim not in removal.snapshot.participants
    error = seconds(removal.seen_at - predicted)
    MEASURED["stale"].append(error)
    MEASURED["stale-vs-dead"].append(seconds(removal.seen_at - dead_at))
    assert removal.seen_at >= dead_at, "removed before torch's rule says it is dead"
    assert abs(error) <= STALE_TOLERANCE, f"removed {error:+.3f} s after the predicted {predicted}"

    # ... and the redundant node then joins the next round in its place
    round_2 = run.state_when("round 2 with the spare node", lambda s: s.round >= 2 and s.complete)
    assert spare in round_2.snapshot.participants and victim not in round_2.snapshot.participants
    assert len(round_2.snapshot.participants) == 4


def predict_removal(run: Scenario, victim: Node) -> tuple[datetime, datetime]:
    """Watch the crashed ``victim`` as a viewer does; at the first look after it counts as dead
    (torch's rule, :meth:`RendezvousSettings.is_stale`), take the ``at`` of the dead-node
    finding. Returns that ``at`` and the moment the rule declares it dead.

    Should a live node remove the victim before any look after that moment (within a poll
    interval), the prediction is the one a viewer looking just then made: the diagnosis of the
    last revision still holding the victim, at the moment it was dead (the diagnosis is pure)."""
    settings = run.settings
    deadline = time.monotonic() + SAFETY
    while time.monotonic() < deadline:
        now = utc_now()
        view = run.view()
        last = view.snapshot.last_heartbeats.get(victim)
        if last is None:
            break
        if settings.is_stale(last, now):
            return dead_finding_at(diagnose_view(view, settings, now), victim), last + settings.heartbeat_expiry
        time.sleep(POLL)
    else:
        pytest.fail("The crashed node neither counted as dead nor was removed.")
    holding = [entry for entry in run.history() if entry.snapshot and victim in entry.snapshot.last_heartbeats][-1]
    dead_at = holding.snapshot.last_heartbeats[victim] + settings.heartbeat_expiry
    moment = max(dead_at, holding.seen_at) + timedelta(milliseconds=1)
    return dead_finding_at(diagnose_view(holding, settings, moment), victim), dead_at


def dead_finding_at(findings: tuple[Finding, ...], victim: Node) -> datetime:
    """The ``at`` of the finding that ``victim`` is dead: when a live node's write removes it."""
    stale = only(findings, "stale-heartbeat")
    assert stale.severity == "warning" and stale.nodes == (victim,), stale
    assert "longer than the" in stale.message and "after which torch counts a node as dead" in stale.message
    assert stale.at is not None
    # a new agent's first read drops the dead participant, so it finds room: the wait list, not
    # redundancy (as the redundant node shows, joining the next round once the dead one is gone)
    assert "once its first read has removed the dead one" in only(findings, "complete").next
    return stale.at


# -- every node silent, then closed -------------------------------------------------------------------


def etcd_expiry(etcd_server, api: str, key: str) -> tuple[datetime, datetime]:
    """The earliest and latest moment etcd may delete ``key`` by its TTL, as etcd reports it
    (v2: the key's expiration; v3: its lease's remaining TTL, in whole seconds)."""
    if api == "v2":
        result = etcd_server.get_client().read(key)
        expiration = datetime.fromisoformat(result.expiration.replace("Z", "+00:00"))
        return expiration, expiration
    url = f"http://{etcd_server.get_endpoint()}/v3"

    def post(path: str, body: dict) -> dict:
        request = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.loads(answer.read())

    now = utc_now()
    lease = post("/kv/range", {"key": base64.b64encode(key.encode()).decode()})["kvs"][0]["lease"]
    remaining = int(post("/lease/timetolive", {"ID": lease})["TTL"])
    return now + timedelta(seconds=remaining), now + timedelta(seconds=remaining + 1)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_silent_run_expires_and_a_closed_run_refuses_a_new_agent(scenario, backend, etcd_server, capsys):
    from torch.distributed.elastic.rendezvous.api import RendezvousClosedError

    run = scenario(backend, min_nodes=2, max_nodes=2)
    cluster = run.cluster
    first = cluster.add_node()
    run.state_when("the first node", lambda s: node_of(first) in s.participants)
    forming = only(run.findings(), "forming")
    assert more_needed(forming) == 1 and "to complete the round" in forming.message

    # min = max: the k-th node completes the round at once, in the write that adds it
    second = cluster.add_node()
    run.state_when("the round to complete", lambda s: s.complete)
    joining = [e for e in run.history() if e.snapshot and node_of(second) in e.snapshot.participants]
    assert joining[0].snapshot.complete, "a revision held both nodes in an open round"
    wait_for("the agents to run", lambda: len(cluster.running()) == 2)

    # every node crashed: nobody is left to remove them (an error), and etcd's TTL runs out
    nodes = {node_of(first), node_of(second)}
    cluster.crash(first)
    cluster.crash(second)
    settings = run.settings

    def all_dead() -> tuple[RunView, tuple[Finding, ...]] | None:
        view, now = run.view(), utc_now()
        if all(settings.is_stale(last, now) for last in view.snapshot.last_heartbeats.values()):
            return view, diagnose_view(view, settings, now)
        return None

    silent_view, findings = wait_for("every node to count as dead", all_dead)
    stale = only(findings, "stale-heartbeat")
    assert stale.severity == "error" and set(stale.nodes) == nodes and stale.at is None
    assert "No live node is left to remove them" in stale.next
    expiring = only(findings, "expiring")
    assert expiring.at == silent_view.updated_at + timedelta(seconds=STATE_TTL)
    earliest, latest = etcd_expiry(etcd_server, cluster.api, state_key(run))
    slack = 0 if cluster.api == "v2" else lease_slack(int(STATE_TTL))  # v3 leases may outlive the TTL
    assert expiring.at - timedelta(seconds=1.5) <= earliest and latest <= expiring.at + timedelta(seconds=slack + 1.5), (
        expiring.at, earliest, latest)

    # "nothing changes until a new agent joins": the state stays as the crashed nodes left it; the
    # first write of a new agent removes the dead and, every participant being dead, round 0
    # ends and the newcomer joins round 1, as `complete` says
    assert "round 1 starts and the agent joins it" in only(findings, "complete").next
    assert silent_view.revision == run.view().revision
    newcomer = cluster.add_node()
    run.state_when("the newcomer to join", lambda s: node_of(newcomer) in s.participants)
    first_write = next(e for e in run.history() if e.revision > silent_view.revision)
    assert first_write.snapshot.round == 1 and not first_write.snapshot.complete
    assert set(first_write.snapshot.participants) == {node_of(newcomer)}
    assert not nodes & first_write.snapshot.nodes
    assert more_needed(only(run.findings(), "forming")) == 1

    # closed: the open round's participant fails at its next read, and so does every new agent
    closer, release = create_node_handler(cluster.config, "closer")
    try:
        closer.set_closed()
    finally:
        release()
    run.state_when("the run to close", lambda s: s.closed)
    findings = run.findings()
    closed = only(findings, "closed")
    assert closed.severity == "warning" and "every new agent of this run fails with RendezvousClosedError" in closed.message
    assert "round 1 will not complete and its participants fail with RendezvousClosedError" in closed.message
    assert "forming" not in codes(findings)
    wait_for("the newcomer to be refused", lambda: newcomer.view.status == "closed")
    latecomer, release = create_node_handler(cluster.config, "latecomer")
    try:
        with pytest.raises(RendezvousClosedError):
            latecomer.next_rendezvous()
    finally:
        latecomer._stop_heartbeats()
        release()
    code, status = run.status(capsys, *run.flags)
    assert code == 0 and "closed" in {finding["code"] for finding in status["findings"]}


# -- hostile and broken states, names with HTML, clocks ahead -------------------------------------------


class _Hostile:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_with_backend(cluster: DemoCluster, run_id: str, state: bytes) -> None:
    """Write ``state`` as run ``run_id``'s with the real backend (rdzv's or torch's) of
    ``cluster``'s kind, as a handler's first write does."""
    backend = _create_backend(replace(cluster.config, run_id=run_id))[0]
    try:
        assert backend.set_state(state) is not None
    finally:
        kv = getattr(backend, "kv", None)  # rdzv's backends hold a client to close; torch's does not
        if kv is not None:
            kv.close()


def torch_state(heartbeats: dict[tuple[str, int, int], datetime]) -> bytes:
    """A completed round's state pickled by torch itself, with these heartbeats."""
    from torch.distributed.elastic.rendezvous.dynamic_rendezvous import _NodeDesc, _RendezvousState

    state = _RendezvousState()
    state.complete = True
    for rank, ((addr, pid, local_id), moment) in enumerate(sorted(heartbeats.items())):
        node = _NodeDesc(addr, pid, local_id)
        state.participants[node] = rank
        state.last_heartbeats[node] = moment
    return pickle.dumps(state)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", BACKENDS)
def test_hostile_and_undecodable_states_html_names_and_clocks_ahead(scenario, backend, etcd_server, tmp_path,
                                                                    capsys):
    run = scenario(backend, min_nodes=1, max_nodes=1)
    cluster = run.cluster
    kv = etcd_server.kv(cluster.api)
    garbage, hostile, skewed = (f"{run.run_id}-{name}" for name in ("garbage", "hostile", "skew"))
    try:
        # a node named with HTML: carried as plain text, as the state holds it
        cluster.add_node("node-1")
        run.state_when("the round to complete", lambda s: s.complete)
        html = cluster.add_node(HTML_NAME)
        run.state_when("the HTML-named node to be redundant", lambda s: node_of(html) in s.redundancy_list)
        redundant = only(run.findings(), "redundant")
        assert redundant.nodes == (node_of(html),) and redundant.nodes[0].addr == HTML_NAME
        assert f"({node_of(html)})" in redundant.message and "&lt;" not in redundant.message
        assert redundant.to_dict()["nodes"][0]["addr"] == HTML_NAME
        code, status = run.status(capsys, *run.flags)
        assert code == 0
        [shown] = [finding for finding in status["findings"] if finding["code"] == "redundant"]
        assert HTML_NAME in shown["message"] and "&lt;" not in shown["message"]

        # undecodable: the bytes are refused in words, and every agent fails on them at its next read
        kv.put(state_key(run), base64.b64encode(b"\x80\x05 this is not a pickle").decode(), ttl=300)
        broken = wait_for("the undecodable state", lambda: (view := run.view()) and view.error and view)
        assert broken.snapshot is None
        undecodable = only(run.findings(), "undecodable")
        assert undecodable.severity == "error" and "unsupported pickle opcode 0x20" in undecodable.message
        wait_for("every agent to fail on the bytes", lambda: all(
            view.status == "error" and "RendezvousStateError" in view.error for view in cluster.views(True)))

        # not even base64
        kv.put(state_key(run, garbage), "not base64 at all!", ttl=300)
        wait_for("the garbage run", lambda: run.monitor.run(garbage))
        assert "base64" in only(run.monitor.diagnose(garbage, run.given), "undecodable").message

        # hostile: a pickle that would call os.system is reported undecodable, and nothing runs
        marker = tmp_path / "pwned"
        write_with_backend(cluster, hostile, pickle.dumps(_Hostile(str(marker))))
        wait_for("the hostile run", lambda: run.monitor.run(hostile))
        refused = only(run.monitor.diagnose(hostile, run.given), "undecodable")
        assert "system" in refused.message
        capsys.readouterr()
        main(["status", "--endpoint", cluster.endpoint, "--run-id", hostile, "--json"])
        assert "undecodable" in {finding["code"] for finding in json.loads(capsys.readouterr().out)["findings"]}
        assert not marker.exists()

        # clock skew: a state written by torch's pickling, one heartbeat a minute in this clock's future
        ahead = utc_now() + timedelta(seconds=60)
        write_with_backend(cluster, skewed, torch_state({("ahead-host", 1, 0): ahead, ("on-time", 2, 0): utc_now()}))
        wait_for("the skewed run", lambda: run.monitor.run(skewed))
        findings = run.monitor.diagnose(skewed, cluster.config.settings)
        skew = only(findings, "clock-skew")
        assert skew.nodes == (Node("ahead-host", 1, 0),) and skew.severity == "warning"
        assert "stale-heartbeat" not in codes(findings)
    finally:
        # no broken state outlives the test, for whatever else lists the runs of this etcd
        for run_id in (run.run_id, garbage, hostile, skewed):
            kv.delete(state_key(run, run_id))
        kv.close()
