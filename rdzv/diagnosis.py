"""What a run's rendezvous is waiting for, and what torch does next: :func:`diagnose`.

A pure function of one reading of the state, the run's settings and the time: no I/O, no torch
import. Every finding follows what torch 2.13's ``dynamic_rendezvous.py`` really does, and says
who acts next. The codes, and the rule each follows:

``forming``
    The round is open and has fewer live participants than ``min_nodes``. Each agent waits in
    ``_RendezvousJoinOp`` until its own join deadline (``join_timeout`` after it called
    ``next_rendezvous``; the state does not hold it), then removes itself and raises
    ``RendezvousTimeoutError``.
``last-call``
    ``min_nodes`` reached: ``_add_to_participants`` set the deadline to the moment of reaching
    it plus ``last_call_timeout``; the first participant reading the state after it marks the
    round complete (``_RendezvousJoinOp``), or the node reaching ``max_nodes`` does at once.
``complete``
    World size and ranks, assigned in node order by ``_mark_rendezvous_complete``. Before that
    every participant holds the placeholder rank 0, which is never shown as a rank. A rank gone
    from a completed round is reported: ``_remove_participant_epilogue`` does not end the round
    (pytorch issue 111646).
``nodes-waiting``
    Nodes on the wait list: torchrun's agent sees them through ``num_nodes_waiting()`` and
    re-rendezvous; the round advances when its last participant leaves
    (``_remove_participant_epilogue``).
``redundant``
    Nodes that arrived with ``max_nodes`` participants in a completed round; ``_RendezvousJoinOp``
    keeps them idle, with no timeout, until a participant leaves.
``stale-heartbeat``
    At most twice: nodes late for their keep-alive (not yet dead), and nodes dead by
    ``_BackendRendezvousStateHolder._sanitize``'s rule (:meth:`RendezvousSettings.is_stale`), which
    the next state write by any live handler removes. Every node dead: nobody is left to remove
    them (an error, unless the run is closed: then it is how a finished job looks).
``closed``
    ``_RendezvousJoinOp`` answers every joining agent with ``RendezvousClosedError``.
``expiring``
    No live node is left to write the state: etcd deletes it ``ttl`` after its last write (the
    TTL ``EtcdRendezvousBackend.set_state`` writes with, torch's and rdzv's alike).
``undecodable``
    :class:`~rdzv.state.UndecodableStateError`: which check refused the bytes.
``clock-skew``
    Heartbeats stamped in this machine's future. Each handler's ``_sanitize`` judges the others'
    heartbeats by its own clock, so skew between nodes decides who is removed as dead.
``settings-unknown``
    Settings the state needs to be explained that were not given, and how to give them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import Any, Literal

from .kv.layout import STATE_TTL as LAYOUT_STATE_TTL
from .rendezvous_settings import RendezvousSettings
from .state import Node, RendezvousSnapshot, UndecodableStateError, node_order
from . import time_marks
from .text import clip, utc_time

__all__ = [
    "CLOCK_TOLERANCE",
    "CODES",
    "KEEP_ALIVE_SLACK",
    "SEVERITIES",
    "STATE_TTL",
    "Finding",
    "diagnose",
    "headline",
]

Severity = Literal["error", "warning", "info"]

SEVERITIES: tuple[Severity, ...] = ("error", "warning", "info")
"""Severities, most important first."""

CODES = ("undecodable", "stale-heartbeat", "closed", "clock-skew", "last-call", "forming", "nodes-waiting",
         "redundant", "complete", "expiring", "settings-unknown")
"""Every code :func:`diagnose` produces; within one severity, findings come in this order."""

STATE_TTL = float(LAYOUT_STATE_TTL)
"""Seconds etcd keeps a state after its last write (:data:`rdzv.kv.layout.STATE_TTL`)."""

KEEP_ALIVE_SLACK = timedelta(seconds=2)
"""How long past due a keep-alive may be before the node counts as late: a node in a join
reads the state about once a second and only then sends its due keep-alive."""

CLOCK_TOLERANCE = timedelta(seconds=1)
"""How far in this machine's future a heartbeat may be stamped before it is clock skew."""

NAMED_WRITERS = 4
"""Up to this many nodes keeping alive on time, a finding names the one whose keep-alive removes
the dead, and when it is due. With more, the next writer changes with nearly every write (a
1,000-node job writes hundreds of times a second), so the finding says only how soon at the
latest, in words that stay the same from one keep-alive to the next."""

_SEVERITY_RANK = {severity: index for index, severity in enumerate(SEVERITIES)}
_CODE_RANK = {code: index for index, code in enumerate(CODES)}
_NAMES_SHOWN = 3
_NAME_CHARS = 60
_RANKS_SHOWN = 5
_SETTINGS_FLAGS = ("--nnodes MIN:MAX and --rdzv-conf join_timeout=...,last_call_timeout=...,"
                   "keep_alive_interval=...,keep_alive_max_attempt=...")


@dataclass(frozen=True)
class Finding:
    """One thing to know about a run.

    ``code`` is one of :data:`CODES`; ``message`` says what is so in one sentence; ``next``
    says what torch 2.13's handlers do next and who does it; ``at`` is when a deadline or
    timeout decides it (``None`` when nothing does, or when it depends on a setting that was
    not given); ``nodes`` are the nodes concerned. Node names in the text are plain text, as
    the state holds them: a view escapes them.

    ``marked`` is ``(message, next)`` with every span that time alone changes ("for 2 min 05 s",
    "by 04:10:35 UTC") left as a :mod:`rdzv.time_marks` mark: it stays the same from one second
    to the next, for a view that keeps those spans current itself. ``message`` and ``next`` are
    it read at the ``now`` the finding was made for. Not given, it is ``(message, next)``.
    """

    code: str
    severity: Severity
    message: str
    next: str
    at: datetime | None = None
    nodes: tuple[Node, ...] = ()
    marked: tuple[str, str] = field(default=("", ""), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.marked == ("", ""):  # made without marks: its text is what it reads at any time
            object.__setattr__(self, "marked", (self.message, self.next))

    def to_dict(self) -> dict[str, Any]:
        """The finding as JSON-ready data (``at`` in ISO 8601)."""
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "next": self.next,
            "at": None if self.at is None else self.at.isoformat(),
            "nodes": [node.to_dict() for node in self.nodes],
        }


def _importance(finding: Finding) -> tuple[int, int]:
    return _SEVERITY_RANK[finding.severity], _CODE_RANK.get(finding.code, len(CODES))


def headline(findings: Iterable[Finding]) -> Finding | None:
    """The most important of ``findings`` (errors before warnings before info), or ``None``."""
    return min(findings, key=_importance, default=None)


def diagnose(
    snapshot: RendezvousSnapshot | UndecodableStateError | None,
    settings: RendezvousSettings,
    now: datetime,
    *,
    revision_time: datetime | None = None,
    ttl: float = STATE_TTL,
) -> tuple[Finding, ...]:
    """Explain one reading of a run's rendezvous state, most important finding first.

    ``snapshot`` is the decoded state, the :class:`UndecodableStateError` its bytes raised, or
    ``None`` when the run has no state. ``settings`` are the run's handlers' settings; what they
    do not give (:attr:`RendezvousSettings.given`) is reported as ``settings-unknown``, and
    no ``at`` is derived from a default. ``revision_time`` is when the state was last written,
    if known; ``ttl`` how many seconds etcd keeps it after that. Naive datetimes are read as UTC.
    Pure: the same arguments give the same findings.
    """
    now = _utc(now)
    if isinstance(snapshot, UndecodableStateError):
        findings = [_undecodable(snapshot)]
    elif snapshot is None:
        findings = [_no_state(settings, ttl)]
        findings += _settings_unknown(settings, ("min_nodes", "join_timeout"))
    elif isinstance(snapshot, RendezvousSnapshot):
        findings = _Diagnosis(snapshot, settings, now, ttl).findings(
            None if revision_time is None else _utc(revision_time))
    else:
        raise TypeError(f"diagnose takes a RendezvousSnapshot, an UndecodableStateError or None, "
                        f"not {type(snapshot).__name__}.")
    return tuple(_read_at(finding, now) for finding in sorted(findings, key=_importance))


def _read_at(finding: Finding, now: datetime) -> Finding:
    """``finding``, made with time marks in its text, as it reads at ``now``."""
    marked = (finding.message, finding.next)
    return replace(finding, message=time_marks.expand(finding.message, now),
                   next=time_marks.expand(finding.next, now), marked=marked)


# --- the findings ------------------------------------------------------------------------------


def _undecodable(error: UndecodableStateError) -> Finding:
    """torch reads the same bytes with ``pickle.loads`` in ``_BackendRendezvousStateHolder.sync``."""
    return Finding(
        "undecodable", "error",
        f"The rendezvous state cannot be decoded: {time_marks.plain(clip(str(error.reason), 200))}.",
        "torch's handlers read these bytes with pickle.loads at their next read of the state: if pickle "
        "fails, every agent of the run fails on it (with RendezvousStateError for pickle's own errors), and if it "
        "succeeds they run whatever the bytes call; find what wrote them, or delete the state to start the run "
        "afresh.")


def _no_state(settings: RendezvousSettings, ttl: float) -> Finding:
    """No state: torch's ``sync`` starts from a new ``_RendezvousState`` (round 0, nobody joined)."""
    if settings.knows("min_nodes"):
        needed = settings.min_nodes
        message = (f"No rendezvous state: 0 of {needed} nodes have joined; "
                   f"{needed} more {_are(needed)} needed {_before_last_call(settings)}.")
    else:
        message = "No rendezvous state: no node has joined."
    return Finding(
        "forming", "info", message,
        f"Either no agent has joined yet or etcd deleted the state {_span(ttl)} after its last write; the first "
        f"agent to join writes a new one, for round 0, and {_join_timeout_clause(settings)}.")


class _Diagnosis:
    """The findings of one decoded state; the heartbeats are read once, in :meth:`__init__`."""

    def __init__(self, snapshot: RendezvousSnapshot, settings: RendezvousSettings, now: datetime, ttl: float) -> None:
        self.snapshot, self.settings, self.now, self.ttl = snapshot, settings, now, ttl
        self.interval = timedelta(seconds=settings.keep_alive_interval)
        self.keep_alive_known = settings.knows("keep_alive_interval", "keep_alive_max_attempt")
        late_limit = now - self.interval - KEEP_ALIVE_SLACK
        # Nodes heard from after both the late and the dead limit are neither: only the others
        # need the dead rule itself.
        recent = now - min(self.interval + KEEP_ALIVE_SLACK, settings.heartbeat_expiry)
        future = now + CLOCK_TOLERANCE
        is_stale = settings.is_stale
        dead: list[Node] = []
        late: list[Node] = []
        skewed: list[Node] = []
        for node, last in snapshot.last_heartbeats.items():
            if last >= recent:
                if last > future:
                    skewed.append(node)
            elif is_stale(last, now):
                dead.append(node)
            elif last < late_limit:
                late.append(node)
        self.dead, self.late, self.skewed = dead, late, skewed
        self.live = len(snapshot.last_heartbeats) - len(dead)

    def findings(self, revision_time: datetime | None) -> list[Finding]:
        snapshot = self.snapshot
        found: list[Finding] = []
        if snapshot.closed:
            found.append(self._closed())
        if snapshot.complete:
            found.append(self._complete())
        elif not snapshot.closed:
            found.append(self._open_round())
        if snapshot.wait_list and not snapshot.closed:
            found.append(self._waiting())
        if snapshot.redundancy_list and not snapshot.closed:
            found.append(self._redundant())
        if self.dead:
            found.append(self._dead())
        if self.late:
            found.append(self._late())
        if self.skewed:
            found.append(self._skewed())
        if self.live == 0:
            found.append(self._expiring(revision_time))
        found += _settings_unknown(self.settings, self._settings_needed())
        return found

    # -- rounds ---------------------------------------------------------------------------------

    def _live_participants(self) -> list[Node]:
        participants = self.snapshot.participants
        if not self.dead:
            return list(participants)
        dead = set(self.dead)
        return [node for node in participants if node not in dead]

    def _open_round(self) -> Finding:
        """``_RendezvousJoinOp`` on an open round, as the participants see it: ``_sanitize`` has
        already dropped the dead from their copy, and with them below ``min_nodes``
        ``_remove_participant_epilogue`` clears the deadline."""
        snapshot, settings = self.snapshot, self.settings
        live = self._live_participants()
        joined = len(live)
        nodes = tuple(sorted(live, key=node_order))
        dead_note = self._dead_participants_note(joined)
        if settings.knows("min_nodes") and joined < settings.min_nodes:
            return self._forming(joined, nodes, dead_note)
        if snapshot.deadline is None:
            if not settings.knows("min_nodes"):
                return self._forming(joined, nodes, dead_note)
            maximum = settings.max_nodes if settings.knows("max_nodes") else "max_nodes"
            return Finding(
                "last-call", "warning",
                f"{_count(joined, 'node')} {_have(joined)} joined round {snapshot.round}{dead_note}, at least the "
                f"minimum of {settings.min_nodes}, but the state holds no last-call deadline, so the round "
                f"completes only once {maximum} have joined.",
                "torch sets the deadline when the participants reach exactly min_nodes (_add_to_participants), so "
                "these handlers run with another min_nodes than the one given here.",
                nodes=nodes)
        return self._last_call(snapshot.deadline, joined, nodes, dead_note)

    def _forming(self, joined: int, nodes: tuple[Node, ...], dead_note: str) -> Finding:
        snapshot, settings = self.snapshot, self.settings
        if settings.knows("min_nodes"):
            needed = settings.min_nodes - joined
            message = (f"{joined} of {settings.min_nodes} nodes {_have(joined)} joined round {snapshot.round}"
                       f"{dead_note}; {needed} more {_are(needed)} needed {_before_last_call(settings)}.")
        else:
            message = (f"{_count(joined, 'node')} {_have(joined)} joined round {snapshot.round}{dead_note}; how "
                       "many more are needed is not known without min_nodes.")
        return Finding(
            "forming", "info", message,
            f"Each joined agent reads the state about once a second while it waits; "
            f"{_join_timeout_clause(settings)}.",
            nodes=nodes)

    def _last_call(self, deadline: datetime, joined: int, nodes: tuple[Node, ...], dead_note: str) -> Finding:
        snapshot, settings = self.snapshot, self.settings
        minimum = f", at least the minimum of {settings.min_nodes}" if settings.knows("min_nodes") else ""
        if settings.knows("max_nodes") and joined < settings.max_nodes:
            more = settings.max_nodes - joined
            early = f", or at once if {more} more {_verb(more, 'joins', 'join')} (the maximum is {settings.max_nodes})"
        else:
            early = ""
        if deadline > self.now:
            when = (f"the last call ends at {utc_time(deadline)} and the round then completes with the nodes joined "
                    f"by then{early}")
        else:
            when = (f"the last call ended at {utc_time(deadline)}, {time_marks.since(deadline)} ago, so the next "
                    "participant to read the state completes the round")
        return Finding(
            "last-call", "info",
            f"{_count(joined, 'node')} {_have(joined)} joined round {snapshot.round}{dead_note}{minimum}: {when}.",
            "The first participant to read the state after the deadline (each reads it about once a second) marks "
            "the round complete and assigns the ranks in node order (_RendezvousJoinOp); nodes that join before "
            "then take part too, and until then no participant has a rank.",
            at=deadline, nodes=nodes)

    def _dead_participants_note(self, live: int) -> str:
        dead = len(self.snapshot.participants) - live
        return f" (not counting {_count(dead, 'dead node')})" if dead else ""

    def _complete(self) -> Finding:
        """``_mark_rendezvous_complete`` assigned ranks 0..n-1 in node order; removing a
        participant later (``_remove_participant_epilogue``) leaves the round complete."""
        snapshot, settings = self.snapshot, self.settings
        ranked = sorted(snapshot.participants.items(), key=itemgetter(1))
        nodes = tuple(node for node, _ in ranked)
        size = len(ranked)
        round_ = snapshot.round
        expected = ranked[-1][1] + 1 if ranked else 0
        if expected > size:
            present = set(snapshot.participants.values())
            missing = [rank for rank in range(expected) if rank not in present]
            shown = ", ".join(map(str, missing[:_RANKS_SHOWN])) + (
                f" and {len(missing) - _RANKS_SHOWN} more" if len(missing) > _RANKS_SHOWN else "")
            message = (f"Round {round_} completed with at least {expected} nodes, but {size} remain: "
                       f"{'rank' if len(missing) == 1 else 'ranks'} {shown} left.")
            if snapshot.wait_list:
                return Finding(
                    "complete", "info", message,
                    f"The nodes on the wait list make every remaining agent re-rendezvous; round {round_ + 1} starts "
                    f"once the last participant has left round {round_}.", nodes=nodes)
            return Finding(
                "complete", "warning", message,
                "torch does not end a completed round when a participant leaves or is removed as dead (pytorch "
                "issue 111646): the remaining agents keep their ranks and notice only when their workers fail or "
                f"a node joins the wait list; round {round_ + 1} starts once every participant has left round "
                f"{round_}.",
                nodes=nodes)
        if size == 0:
            message = f"Round {round_} is complete but has no participants."
        elif size == 1:
            message = f"Round {round_} is complete: 1 node, with rank 0."
        else:
            ranks = "0 and 1" if size == 2 else f"0 to {size - 1}"
            message = f"Round {round_} is complete: {size} nodes, with ranks {ranks} in node order."
        # A new agent's first read drops the dead participants (_sanitize) before its join op
        # looks at the round; a round left without participants advances at once
        # (_remove_participant_epilogue), and the newcomer joins the next one.
        live = len(self._live_participants())
        dead = size - live
        if snapshot.closed:
            newcomer = "the run is closed, so no new agent can join"
        elif dead and not live:
            newcomer = (f"a new agent's first read would remove the dead {_verb(dead, 'participant', 'participants')}, "
                        f"which leaves round {round_} with none, so round {round_ + 1} starts and the agent joins it "
                        "(_sanitize, _remove_participant_epilogue)")
        elif settings.knows("max_nodes") and live < settings.max_nodes:
            removed = f", once its first read has removed the dead {_verb(dead, 'one', 'ones')}" if dead else ""
            newcomer = (f"a new agent would join the wait list and so start round {round_ + 1} "
                        f"(up to {settings.max_nodes - live} more fit{removed})")
        elif settings.knows("max_nodes"):
            newcomer = f"a new agent would be redundant (the maximum of {settings.max_nodes} is reached)"
        else:
            newcomer = "a new agent would join the wait list, or be redundant if max_nodes is reached"
        if live:
            agents = (f"The agents run their workers and their handlers only send keep-alives (every "
                      f"{_span(settings.keep_alive_interval)}) until a node joins the wait list or an agent's workers "
                      "fail")
        else:
            agents = "No participant's agent is alive to run workers or send keep-alives"
        return Finding("complete", "info", message, f"{agents}; {newcomer}.", nodes=nodes)

    # -- the lists --------------------------------------------------------------------------------

    def _waiting(self) -> Finding:
        """``_RendezvousJoinOp`` puts a node arriving at a completed round with room on the wait list;
        torchrun's agent checks ``num_nodes_waiting()`` while its workers are healthy."""
        snapshot = self.snapshot
        nodes = tuple(sorted(snapshot.wait_list, key=node_order))
        count = len(nodes)
        round_ = snapshot.round
        if snapshot.complete:
            return Finding(
                "nodes-waiting", "info",
                f"{_count(count, 'node')} {_verb(count, 'waits', 'wait')} to join round {round_ + 1}: {_names(nodes)}.",
                f"Every agent of round {round_} sees {_them(count)} at its next num_nodes_waiting() check (torchrun's "
                "agent checks every --monitor-interval, 0.1 s by default, while its workers are healthy), stops its "
                f"workers and rejoins; round {round_ + 1} starts once the last participant has left round {round_}, "
                f"and the waiting nodes join it.",
                nodes=nodes)
        return Finding(
            "nodes-waiting", "info",
            f"{_count(count, 'node')} on the wait list {_have(count)} not yet joined round {round_}: {_names(nodes)}.",
            "Each moves from the wait list to the participants at its next read of the state, about once a "
            "second (_RendezvousJoinOp).",
            nodes=nodes)

    def _redundant(self) -> Finding:
        """``_RendezvousJoinOp``: a node in the redundancy list waits, with no join timeout, while
        the round has ``max_nodes`` participants; then it moves on to the wait list."""
        snapshot, settings = self.snapshot, self.settings
        nodes = tuple(sorted(snapshot.redundancy_list, key=node_order))
        count = len(nodes)
        round_ = snapshot.round
        size = len(self._live_participants())
        subject = f"{_count(count, 'node')} ({_names(nodes)}) {_verb(count, 'is', 'are')} redundant"
        joins = _verb(count, "joins", "join")
        next_round = f"{joins} the wait list, which makes every agent re-rendezvous" if snapshot.complete else (
            f"{joins} round {round_}")
        if settings.knows("max_nodes") and size < settings.max_nodes:
            return Finding(
                "redundant", "info",
                f"{subject}, but round {round_} now has {size} of at most {settings.max_nodes} participants.",
                f"At {_their(count)} next read of the state, about once a second, {_they(count)} "
                f"{_verb(count, 'leaves', 'leave')} the redundancy list and {next_round} (_RendezvousJoinOp).",
                nodes=nodes)
        full = (f"round {round_} already has its maximum of {settings.max_nodes} participants"
                if settings.knows("max_nodes") else f"round {round_} had max_nodes participants when they came")
        return Finding(
            "redundant", "info",
            f"{subject}: {full}.",
            f"{_they(count).capitalize()} {_verb(count, 'stays', 'stay')} idle with no join timeout, reading the state about once "
            f"a second and sending keep-alives, until a participant leaves; then {_they(count)} {next_round} "
            "(_RendezvousJoinOp).",
            nodes=nodes)

    def _closed(self) -> Finding:
        """``_RendezvousJoinOp`` on a closed state: ``RendezvousClosedError``, or, for a redundant
        node, ``RendezvousGracefulExitError``; torchrun's launcher closes it when its agent ends."""
        snapshot = self.snapshot
        waiting = sorted(snapshot.wait_list, key=node_order)
        redundant = sorted(snapshot.redundancy_list, key=node_order)
        fates = []
        if not snapshot.complete and snapshot.participants:
            fates.append(f"round {snapshot.round} will not complete and its participants fail with "
                         "RendezvousClosedError at their next read")
        if waiting:
            fates.append(f"{_count(len(waiting), 'node')} on the wait list {_verb(len(waiting), 'fails', 'fail')} "
                         f"with RendezvousClosedError at {_their(len(waiting))} next read")
        if redundant:
            fates.append(f"{_count(len(redundant), 'redundant node')} {_verb(len(redundant), 'exits', 'exit')} "
                         "with RendezvousGracefulExitError")
        fate = "; " + _join(fates) if fates else ""
        return Finding(
            "closed", "warning",
            f"The rendezvous is closed: every new agent of this run fails with RendezvousClosedError{fate}.",
            "An agent closes it when its torchrun ends (but not when torchrun is killed by a signal) and nothing "
            "reopens it; to run again, start the job with a new --rdzv-id, or, once no agent of the old job is "
            f"left, delete the state (etcd also deletes it {_span(self.ttl)} after its last write).",
            nodes=tuple(waiting + redundant))

    # -- heartbeats -------------------------------------------------------------------------------

    def _keep_alive_text(self) -> str:
        settings = self.settings
        text = (f"a keep-alive every {_span(settings.keep_alive_interval)}, {settings.keep_alive_max_attempt} "
                f"{'attempt' if settings.keep_alive_max_attempt == 1 else 'attempts'}")
        return text if self.keep_alive_known else f"torch's defaults, {text}; this job's were not given"

    def _silence(self, nodes: Sequence[Node]) -> str:
        heartbeats = self.snapshot.last_heartbeats
        if len(nodes) == 1:
            return f"Node {_name(nodes[0])} has sent no keep-alive for {time_marks.since(heartbeats[nodes[0]])}"
        moments = [heartbeats[node] for node in nodes]
        return (f"{len(nodes)} nodes ({_names(nodes)}) have sent no keep-alive for "
                f"{time_marks.since(max(moments))} to {time_marks.since(min(moments))}")

    def _next_write(self, after: datetime, silent: Collection[Node]) -> tuple[Node, datetime] | None:
        """Which node not in ``silent`` next writes the state after ``after``, and when, if each
        keeps sending a keep-alive every interval from its last one (``_RendezvousKeepAliveOp``)."""
        interval = self.settings.keep_alive_interval
        best: tuple[float, Node] | None = None
        for node, last in self.snapshot.last_heartbeats.items():
            if node in silent:
                continue
            wait = interval - (after - last).total_seconds() % interval
            if best is None or wait < best[0]:
                best = (wait, node)
        return None if best is None else (best[1], after + timedelta(seconds=best[0]))

    def _removal(self, target: datetime, after: str) -> tuple[str, datetime | None] | None:
        """How nodes dead at ``target`` are removed: by the first state write after it of a node
        heard from on time (else of a late one, if it writes again), in words that follow "removes
        them", and when that write is due (``None`` when more than :data:`NAMED_WRITERS` nodes
        keep alive on time: one of them writes within an interval). ``after`` names ``target``
        in those words (``""`` for now). ``None``: no node is left to write."""
        silent = set(self.dead)
        if self.live > len(self.late):
            silent.update(self.late)
            writers = self.live - len(self.late)
            if writers > NAMED_WRITERS:
                interval = _span(self.settings.keep_alive_interval)
                return (f"within {interval}{after} at the latest: each of the {writers} nodes heard from on time "
                        f"writes a keep-alive every {interval}"), None
        writer = self._next_write(target, silent)
        if writer is None:
            return None
        node, when = writer
        return f"at the latest {_name(node)}'s keep-alive due about {utc_time(when)}", when

    def _dead(self) -> Finding:
        """``_sanitize``: a node whose last heartbeat is older than interval x attempts is dead and
        is removed from every list by the next handler that writes the state."""
        snapshot = self.snapshot
        nodes = tuple(sorted(self.dead, key=node_order))
        count = len(nodes)
        it = _them(count)
        expiry = _span(self.settings.keep_alive_interval * self.settings.keep_alive_max_attempt)
        if self.live == 0 and snapshot.closed:
            return Finding(
                "stale-heartbeat", "info",
                f"{self._silence(nodes)}: the run is closed and its agents have stopped, as a finished job's do.",
                "Nothing will remove them: no live node is left to write the state, which etcd deletes "
                f"{_span(self.ttl)} after its last write.",
                nodes=nodes)
        message = (f"{self._silence(nodes)}, longer than the {expiry} after which torch counts a node as dead "
                   f"({self._keep_alive_text()}).")
        removal = self._removal(self.now, "")
        if removal is None:
            return Finding(
                "stale-heartbeat", "error", message,
                f"No live node is left to remove {it}: nothing changes until a new agent joins this run (its first "
                f"write removes the dead, _sanitize) or etcd deletes the state {_span(self.ttl)} after its last write.",
                nodes=nodes)
        how, when = removal
        consequence = ""
        if any(node in snapshot.participants for node in nodes):
            if snapshot.complete:
                consequence = (f"; removing a participant does not end round {snapshot.round}: torch marks nothing "
                               "and assigns no new ranks, so the other agents notice only when their workers fail "
                               "or a node joins the wait list (pytorch issue 111646)")
            else:
                consequence = ("; the round then counts only the live participants, and below min_nodes its last "
                               "call is cancelled (_remove_participant_epilogue)")
        return Finding(
            "stale-heartbeat", "warning", message,
            f"The next state write by a live node removes {it} (_sanitize), {how}{consequence}.",
            at=when if self.keep_alive_known else None, nodes=nodes)

    def _late(self) -> Finding:
        """A node writes a keep-alive every interval (``_should_keep_alive``); one that has not is
        late, and dead by ``_sanitize``'s rule interval x attempts after its last heartbeat."""
        heartbeats = self.snapshot.last_heartbeats
        nodes = tuple(sorted(self.late, key=node_order))
        count = len(nodes)
        dead_at = min(heartbeats[node] for node in nodes) + self.settings.heartbeat_expiry
        first = "it counts" if count == 1 else "the first counts"
        message = (f"{self._silence(nodes)}, though one is due every {_span(self.settings.keep_alive_interval)}: "
                   f"{first} as dead at {utc_time(dead_at)} ({self._keep_alive_text()}).")
        removal = self._removal(dead_at, " of that")
        if removal is not None and self.live > count:
            next_ = (f"If {_they(count)} {_verb(count, 'stays', 'stay')} silent, the first state write after that "
                     f"removes {_them(count)} (_sanitize), {removal[0]}.")
        else:
            next_ = (f"Every other node is silent too: if {_they(count)} {_verb(count, 'stays', 'stay')} silent, no "
                     f"live node is left to remove {_them(count)}.")
        return Finding("stale-heartbeat", "warning", message, next_,
                       at=dead_at if self.keep_alive_known else None, nodes=nodes)

    def _skewed(self) -> Finding:
        heartbeats = self.snapshot.last_heartbeats
        nodes = tuple(sorted(self.skewed, key=node_order))
        ahead = time_marks.ahead(max(heartbeats[node] for node in nodes))
        if len(nodes) == 1:
            message = f"Node {_name(nodes[0])}'s last heartbeat is stamped {ahead} ahead of this machine's clock."
        else:
            message = (f"{len(nodes)} nodes' last heartbeats ({_names(nodes)}) are stamped up to {ahead} ahead of "
                       "this machine's clock.")
        return Finding(
            "clock-skew", "warning", message,
            "Either this clock or theirs is off, so heartbeat ages seen here are not reliable; each handler judges "
            "heartbeats by its own clock (_sanitize), so one whose clock runs ahead by more than "
            f"{_span(self.settings.keep_alive_interval * self.settings.keep_alive_max_attempt)} removes live nodes "
            "as dead.",
            nodes=nodes)

    def _expiring(self, revision_time: datetime | None) -> Finding:
        """No live handler is left to write (``_RendezvousKeepAliveOp``), so the state's TTL runs out."""
        ttl = self.ttl
        span = _span(ttl)
        if revision_time is not None:
            at: datetime | None = revision_time + timedelta(seconds=ttl)
            if at > self.now:
                message = (f"No live node is left to write this state, last written at {utc_time(revision_time)}: etcd "
                           f"deletes it at {utc_time(at)}, {span} after that write.")
            else:
                message = (f"No live node is left to write this state, last written at {utc_time(revision_time)}: etcd "
                           f"deletes a state {span} after its last write, so it should be gone since {utc_time(at)}.")
        else:
            at = None
            heartbeats = self.snapshot.last_heartbeats
            bound = f", not before {utc_time(max(heartbeats.values()) + timedelta(seconds=ttl))}" if heartbeats else ""
            message = (f"No live node is left to write this state: etcd deletes it {span} after its last write, "
                       f"which is not known here{bound}.")
        return Finding(
            "expiring", "info", message,
            f"Until then the state stays as it is{', closed' if self.snapshot.closed else ''}; after that the next "
            "agent to join this run id starts afresh at round 0.",
            at=at)

    def _settings_needed(self) -> list[str]:
        snapshot = self.snapshot
        needed = []
        if not snapshot.closed:
            if not snapshot.complete:
                needed.append("min_nodes")
                if snapshot.deadline is None:
                    needed.append("join_timeout")
            needed.append("max_nodes")
        if snapshot.last_heartbeats:
            needed += ["keep_alive_interval", "keep_alive_max_attempt"]
        return needed


_CANNOT_SAY = {
    "min_nodes": "how many more nodes the round needs",
    "max_nodes": "when the round is full",
    "join_timeout": "when waiting agents give up",
    "keep_alive_interval": "when a silent node counts as dead",
}


def _settings_unknown(settings: RendezvousSettings, needed: Sequence[str]) -> list[Finding]:
    missing = [name for name in needed if name not in settings.given]
    if not missing:
        return []
    cannot = list(dict.fromkeys(_CANNOT_SAY[name if name != "keep_alive_max_attempt" else "keep_alive_interval"]
                                for name in missing))
    assumed = (" (torch's defaults are assumed for the keep-alive, which this job may not use)"
               if any(name.startswith("keep_alive") for name in missing) else "")
    return [Finding(
        "settings-unknown", "info",
        f"Without {_join(missing)}, rdzv cannot say {_join(cannot, 'or')}{assumed}.",
        f"Give them as torchrun takes them, {_SETTINGS_FLAGS}, to rdzv status, rdzv history or rdzv dashboard.")]


# --- words ----------------------------------------------------------------------------------------


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _span(seconds: float) -> str:
    """A setting's duration: ``"5 s"``, ``"10 min"``, ``"2 h"``, ``"0.5 s"``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def _name(node: Node) -> str:
    return time_marks.plain(clip(str(node), _NAME_CHARS))


def _names(nodes: Sequence[Node]) -> str:
    shown = ", ".join(_name(node) for node in nodes[:_NAMES_SHOWN])
    return shown if len(nodes) <= _NAMES_SHOWN else f"{shown} and {len(nodes) - _NAMES_SHOWN} more"


def _join(words: Sequence[str], conjunction: str = "and") -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def _count(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _verb(count: int, singular: str, plural: str) -> str:
    return singular if count == 1 else plural


def _have(count: int) -> str:
    return _verb(count, "has", "have")


def _are(count: int) -> str:
    return _verb(count, "is", "are")


def _them(count: int) -> str:
    return _verb(count, "it", "them")


def _they(count: int) -> str:
    return _verb(count, "it", "they")


def _their(count: int) -> str:
    return _verb(count, "its", "their")


def _before_last_call(settings: RendezvousSettings) -> str:
    if settings.knows("max_nodes") and settings.max_nodes == settings.min_nodes:
        return "to complete the round"
    return "before the last call can start"


def _join_timeout_clause(settings: RendezvousSettings) -> str:
    """An agent's join deadline is its own (``next_rendezvous``: start + join_timeout); the state
    does not hold it, but an agent waiting now started at the latest now."""
    if settings.knows("join_timeout"):
        return (f"an agent gives up {_span(settings.join_timeout)} after it started joining, removing itself and "
                f"failing with RendezvousTimeoutError, so every agent waiting now has given up by "
                f"{time_marks.clock_after(timedelta(seconds=settings.join_timeout))} at the latest unless the round "
                "completes")
    return (f"an agent gives up join_timeout after it started joining (torch's default is "
            f"{_span(settings.join_timeout)}; this job's was not given), removing itself and failing with "
            "RendezvousTimeoutError")
