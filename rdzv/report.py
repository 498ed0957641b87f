"""One run's whole story as one self-contained HTML file: what ``rdzv report`` writes and a person
attaches to a bug report.

:func:`render_report` turns a :class:`~rdzv.monitor.RunHistory` (read back from etcd, or later
from a recording) into one HTML document that opens offline in any browser: inline CSS, an inline
SVG timeline, no script, no font, no image, and a Content-Security-Policy that forbids every
request, so even a page someone tampered with afterwards cannot reach the network.

What it shows, in order: where the story comes from and how complete it is; what is happening at
the last revision (:func:`rdzv.diagnosis.diagnose`); the timeline; the event log (every revision
that changed more than heartbeats, with its change sentences from :mod:`rdzv.monitor.describe`
and the diagnosis as it stood then; runs of heartbeat-only revisions as one line each); the node
table (:func:`rdzv.nodes.node_rows`) at each round's completion and at the last revision.

Everything that comes from etcd (run id, node names, errors, sentences naming nodes) is written
through :func:`_text`: non-printable characters as escapes (:func:`rdzv.text.printable`), then
HTML-escaped, so a node named ``<img src=x onerror=alert(1)>`` is text. No panel, bokeh or torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape

from . import __version__
from .diagnosis import Finding, headline
from .diff import ChangeKind
from .monitor import (
    ESTIMATE_MARK,
    Revision,
    RunHistory,
    change_sentences,
    diagnose_view,
    revision_kind,
    revision_time,
)
from .nodes import COLUMNS, NodeRow, node_rows
from .rendezvous_settings import DURATIONS, RendezvousSettings
from .text import NO_VALUE, age, clock, printable

__all__ = ["MAX_ROUND_TABLES", "render_report"]

SENTENCES_SHOWN = 8
"""Change sentences of one event shown at once; the rest fold into a ``<details>``."""

SENTENCES_KEPT = 200
"""Change sentences of one event written at all (``rdzv history --json`` has every one)."""

TOOLTIP_SENTENCES = 6
"""Change sentences in one timeline tooltip."""

MAX_ROUND_TABLES = 20
"""Node tables of round completions written (the newest): each holds every node of its round."""

_WIDTH, _HEIGHT = 1000, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 48, 16, 14, 34

_STYLE = """
:root{--fg:#1d2330;--muted:#5b6474;--line:#d9dee7;--bg:#fff;--soft:#f5f7fa;--part:#2563eb;--wait:#d97706;
--ok:#15803d;--bad:#b91c1c;--warn:#b45309;--info:#1d4ed8}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg);
margin:0 auto;padding:24px;max-width:1280px}
h1{font-size:22px;margin:0 0 8px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid var(--line);
padding-bottom:4px}h3{font-size:15px;margin:18px 0 6px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0}
dl.meta dt{color:var(--muted)}dl.meta dd{margin:0}
.note{color:var(--muted)}
code,.mono,td.num,td.rev,td.time{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
.finding{border-left:4px solid var(--info);background:var(--soft);padding:8px 12px;margin:8px 0}
.finding.error{border-color:var(--bad)}.finding.warning{border-color:var(--warn)}
.finding p{margin:2px 0}.finding .next{color:var(--muted)}
.sev{display:inline-block;font-size:11px;font-weight:600;text-transform:uppercase;padding:0 6px;
border-radius:3px;color:#fff;background:var(--info);margin-right:6px}
.sev.error{background:var(--bad)}.sev.warning{background:var(--warn)}
table{border-collapse:collapse;width:100%;margin:6px 0}
th,td{border-bottom:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--soft);font-weight:600;position:sticky;top:0}
td.num{text-align:right}
tr.heartbeats td{color:var(--muted);font-style:italic}
tr.completed td.what{color:var(--ok)}tr.left td.what,tr.undecodable td.what,tr.deleted td.what{color:var(--bad)}
td.what p,td.meant p{margin:0}
tr.stale td{color:var(--bad)}
:target{background:#fff7cc}
svg.timeline{width:100%;height:auto;background:var(--soft);border:1px solid var(--line)}
svg .axis{stroke:var(--muted);stroke-width:1}svg .grid{stroke:var(--line);stroke-width:1}
svg text{font-size:11px;fill:var(--muted)}
svg .participants{fill:none;stroke:var(--part);stroke-width:2}
svg .waiting{fill:none;stroke:var(--wait);stroke-width:2;stroke-dasharray:5 3}
svg circle{fill:var(--muted);stroke:#fff;stroke-width:1}
svg circle.joined{fill:var(--part)}svg circle.completed{fill:var(--ok)}svg circle.left,svg circle.undecodable,
svg circle.deleted{fill:var(--bad)}svg circle.waiting{fill:var(--wait)}
.legend span{margin-right:16px}.legend i{display:inline-block;width:18px;height:3px;vertical-align:middle;
margin-right:4px}
.swatch-p{background:var(--part)}.swatch-w{background:var(--wait)}
.legend .dot{display:inline-block;width:9px;height:9px;border-radius:50%;vertical-align:middle;margin-right:4px}
.dot.ok{background:var(--ok)}.dot.bad{background:var(--bad)}.dot.part{background:var(--part)}
footer{margin-top:32px;color:var(--muted);font-size:12px}
"""

# The node tables' number columns, right-aligned by position (no attribute on a thousand cells).
_STYLE += ",".join(f"table.nodes td:nth-child({index + 1})" for index, (field, _) in enumerate(COLUMNS)
                   if field in ("pid", "local_id", "rank")) + "{text-align:right;font-family:ui-monospace,monospace}\n"


def _text(value: object) -> str:
    """``value`` as HTML text: non-printable characters escaped, then ``& < > " '`` escaped."""
    return escape(printable(str(value)), quote=True)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _is_event(entry: Revision) -> bool:
    """Whether ``entry`` gets its own line in the event log (it changed more than heartbeats, or
    it is where the story's completeness is said)."""
    return revision_kind(entry) != "heartbeat" or entry.complete_from is not None


def _has(entry: Revision, *kinds: ChangeKind) -> bool:
    return any(change.kind in kinds for change in entry.changes)


def _event_class(entry: Revision) -> str:
    """What an event chiefly is, for its colour: an error, a completion, a node leaving, ..."""
    kind = revision_kind(entry)
    if kind in ("undecodable", "deleted"):
        return kind
    if _has(entry, ChangeKind.COMPLETED):
        return "completed"
    if _has(entry, ChangeKind.LEFT, ChangeKind.LEFT_PARTICIPANTS, ChangeKind.LEFT_WAIT_LIST,
            ChangeKind.LEFT_REDUNDANCY_LIST):
        return "left"
    if _has(entry, ChangeKind.JOINED, ChangeKind.CREATED):
        return "joined"
    if _has(entry, ChangeKind.WAITING, ChangeKind.REDUNDANT):
        return "waiting"
    return "other"


def render_report(history: RunHistory, settings: RendezvousSettings, *, source: str, generated_at: datetime) -> str:
    """The report of ``history`` as one self-contained HTML document.

    ``settings`` are the run's handlers' settings (merged with what they published); ``source``
    says where the story was read (``"etcd at host:2379 below /torch/elastic"``, ``"recording
    FILE"``); ``generated_at`` is when (UTC); :meth:`RunHistory.scope` says how complete the story is. The diagnosis of each revision is
    made as of that revision's time, and "What's happening" as of the last one's.
    """
    revisions = history.revisions
    last = revisions[-1] if revisions else None
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        # No request of any kind: not a script, a style sheet, a font, an image or a favicon.
        ("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
         "img-src 'none'; base-uri 'none'; form-action 'none'\">\n"),
        "<meta name=\"referrer\" content=\"no-referrer\">\n",
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n",
        f"<title>rdzv report: run {_text(history.run_id)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n",
    ]
    parts.append(_header(history, settings, source, generated_at))
    parts.append(_happening(last, settings))
    parts.append(_timeline(revisions))
    parts.append(_event_log(revisions, settings))
    parts.append(_completions(revisions, settings))
    parts.append(_last_state(last, settings))
    parts.append(f"<footer>Written by rdzv {_text(__version__)} on {_stamp(generated_at)}. This file makes no "
                 "network request and runs no script. It names the run's nodes and hosts: look it over before "
                 "attaching it to a public bug report.</footer>\n</body>\n</html>\n")
    return "".join(parts)


# --- the header -------------------------------------------------------------------------------


def _header(history: RunHistory, settings: RendezvousSettings, source: str, generated_at: datetime) -> str:
    revisions = history.revisions
    events = sum(1 for entry in revisions if _is_event(entry))
    read_back = sum(1 for entry in revisions if entry.read_back)
    rows = [
        ("Run", f"<code>{_text(history.run_id)}</code>"),
        ("etcd API", _text(history.api)),
        ("Read from", _text(source)),
        ("Generated", _stamp(generated_at)),
    ]
    if revisions:
        first, last = revisions[0], revisions[-1]
        rows.append(("Revisions", (f"{len(revisions)} ({first.revision} to {last.revision}): {events} with "
                                   f"changes, {len(revisions) - events} heartbeat-only; {read_back} read back "
                                   "from etcd's history")))
        rows.append(("Time span", f"{_text(_stamp_of(first))} to {_text(_stamp_of(last))}"))
    rows.append(("The story", _text(history.scope()) + "."))
    rows.append(("Settings", _settings_text(settings)))
    body = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return (f"<header>\n<h1>Rendezvous report: run <code>{_text(history.run_id)}</code></h1>\n"
            f"<dl class=\"meta\">{body}</dl>\n"
            f"<p class=\"note\">Times are UTC. etcd records no time for a revision: times marked {ESTIMATE_MARK} "
            "were estimated from the state itself (its newest heartbeat), never measured; the others are when rdzv "
            "read the revision.</p>\n</header>\n")


def _stamp_of(entry: Revision) -> str:
    return (ESTIMATE_MARK if entry.time_estimated else "") + _stamp(entry.seen_at)


def _settings_text(settings: RendezvousSettings) -> str:
    def value(name: str) -> str:
        amount = getattr(settings, name)
        if amount is None:
            return "unknown"
        return f"{amount:g} s" if name in DURATIONS else str(amount)

    names = ("min_nodes", "max_nodes", *DURATIONS, "keep_alive_max_attempt")
    given = [f"{name} {value(name)}" for name in names if settings.knows(name)]
    assumed = [f"{name} {value(name)}" for name in names if not settings.knows(name)]
    text = ", ".join(given) if given else "none given"
    if assumed:
        text += f" (not given, so not relied on: {', '.join(assumed)})"
    return _text(text)


# --- what's happening -------------------------------------------------------------------------


def _finding(finding: Finding) -> str:
    when = f" <span class=\"note\">(decided at {clock(finding.at)} UTC)</span>" if finding.at is not None else ""
    return (f"<div class=\"finding {finding.severity}\"><p><span class=\"sev {finding.severity}\">"
            f"{_text(finding.severity)}</span>{_text(finding.message)}{when}</p>"
            f"<p class=\"next\">Next: {_text(finding.next)}</p></div>\n")


def _happening(last: Revision | None, settings: RendezvousSettings) -> str:
    head = "<section id=\"happening\">\n<h2>What's happening</h2>\n"
    if last is None:
        return head + "<p>No revision of the run was read.</p>\n</section>\n"
    findings = diagnose_view(last, settings, last.seen_at)
    body = "".join(_finding(finding) for finding in findings) or "<p>Nothing to report.</p>\n"
    return (head + f"<p class=\"note\">As of the last revision, <a href=\"#rev-{last.revision}\">{last.revision}"
            f"</a>, {_text(revision_time(last))} UTC.</p>\n" + body + "</section>\n")


# --- the timeline -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Point:
    entry: Revision
    x: float
    participants: int
    waiting: int


def _counts(entries: Sequence[Revision]) -> Iterator[tuple[Revision, int, int]]:
    """Each entry with its participant and waiting counts (a deletion counts none; an
    undecodable state repeats the last counts known)."""
    participants = waiting = 0
    for entry in entries:
        if entry.snapshot is not None:
            participants, waiting = len(entry.snapshot.participants), len(entry.snapshot.wait_list)
        elif entry.error is None:
            participants = waiting = 0
        yield entry, participants, waiting


def _timeline(revisions: Sequence[Revision]) -> str:
    head = "<section id=\"timeline\">\n<h2>Timeline</h2>\n"
    if not revisions:
        return head + "<p>No revision to draw.</p>\n</section>\n"
    start, end = revisions[0].seen_at, revisions[-1].seen_at
    span = max((end - start).total_seconds(), 1e-3)
    inner_w, inner_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    points = [_Point(entry, _LEFT + inner_w * (entry.seen_at - start).total_seconds() / span, p, w)
              for entry, p, w in _counts(revisions)]
    top = max(1, max(max(point.participants, point.waiting) for point in points))

    def y(count: int) -> float:
        return _TOP + inner_h * (1 - count / top)

    svg = [(f"<svg class=\"timeline\" viewBox=\"0 0 {_WIDTH} {_HEIGHT}\" role=\"img\" "
            "aria-label=\"Participants and waiting nodes over time\">")]
    for count in sorted({0, top // 2, top}):
        svg.append(f"<line class=\"grid\" x1=\"{_LEFT}\" x2=\"{_WIDTH - _RIGHT}\" y1=\"{y(count):.1f}\" "
                   f"y2=\"{y(count):.1f}\"/><text x=\"{_LEFT - 6}\" y=\"{y(count) + 4:.1f}\" "
                   f"text-anchor=\"end\">{count}</text>")
    baseline = _TOP + inner_h
    svg.append(f"<line class=\"axis\" x1=\"{_LEFT}\" x2=\"{_WIDTH - _RIGHT}\" y1=\"{baseline}\" y2=\"{baseline}\"/>")
    for index in range(5):
        fraction = index / 4
        moment = start + (end - start) * fraction
        anchor = "start" if index == 0 else "end" if index == 4 else "middle"
        svg.append(f"<text x=\"{_LEFT + inner_w * fraction:.1f}\" y=\"{baseline + 16}\" text-anchor=\"{anchor}\">"
                   f"{clock(moment)}</text>")
    svg.append(_step_line("participants", points, lambda point: y(point.participants), _WIDTH - _RIGHT))
    svg.append(_step_line("waiting", points, lambda point: y(point.waiting), _WIDTH - _RIGHT))
    for point in points:
        entry = point.entry
        if not _is_event(entry):
            continue
        sentences = change_sentences(entry, heartbeats=False)
        shown = sentences[:TOOLTIP_SENTENCES]
        if len(sentences) > TOOLTIP_SENTENCES:
            shown.append(f"… and {len(sentences) - TOOLTIP_SENTENCES} more changes.")
        tip = f"Revision {entry.revision}, {revision_time(entry)} UTC: " + " ".join(shown)
        kind = _event_class(entry)
        radius = 5 if kind in ("completed", "left", "undecodable", "deleted") else 3.5
        svg.append(f"<a href=\"#rev-{entry.revision}\"><circle class=\"{kind}\" cx=\"{point.x:.1f}\" "
                   f"cy=\"{y(point.participants):.1f}\" r=\"{radius}\"><title>{_text(tip)}</title></circle></a>")
    svg.append("</svg>")
    legend = ("<p class=\"legend note\"><span><i class=\"swatch-p\"></i>participants</span>"
              "<span><i class=\"swatch-w\"></i>waiting (dashed)</span>"
              "<span><span class=\"dot ok\"></span>round completed</span>"
              "<span><span class=\"dot bad\"></span>node left or crashed, state lost</span>"
              "<span><span class=\"dot part\"></span>node joined</span>"
              f"<span>x: time, UTC ({ESTIMATE_MARK} estimated for revisions read back). Hover a dot for what "
              "changed; click it for its line in the event log.</span></p>\n")
    return head + "".join(svg) + "\n" + legend + "</section>\n"


def _step_line(name: str, points: Sequence[_Point], y, right: float) -> str:
    coords: list[str] = []
    previous = None
    for point in points:
        level = y(point)
        if previous is not None:
            coords.append(f"{point.x:.1f},{previous:.1f}")
        coords.append(f"{point.x:.1f},{level:.1f}")
        previous = level
    coords.append(f"{right:.1f},{previous:.1f}")
    return f"<polyline class=\"{name}\" points=\"{' '.join(coords)}\"/>"


# --- the event log ----------------------------------------------------------------------------


def _event_log(revisions: Sequence[Revision], settings: RendezvousSettings) -> str:
    rows: list[str] = []
    quiet: list[Revision] = []
    for entry in revisions:
        if not _is_event(entry):
            quiet.append(entry)
            continue
        if quiet:
            rows.append(_heartbeats_row(quiet))
            quiet = []
        rows.append(_event_row(entry, settings))
    if quiet:
        rows.append(_heartbeats_row(quiet))
    return ("<section id=\"events\">\n<h2>Event log</h2>\n<p class=\"note\">Every revision that changed more than "
            "heartbeats, oldest first, with what the diagnosis said as of then; heartbeat-only revisions are "
            "summed up in one line per stretch.</p>\n<table class=\"events\">\n<thead><tr><th>Revision</th>"
            "<th>Time (UTC)</th><th>Round</th><th title=\"participants / waiting / redundant\">Nodes p/w/r</th>"
            "<th>What changed</th><th>What it meant then</th></tr></thead>\n<tbody>\n"
            + "".join(rows) + "</tbody>\n</table>\n</section>\n")


def _event_row(entry: Revision, settings: RendezvousSettings) -> str:
    snap = entry.snapshot
    round_ = str(snap.round) if snap is not None else NO_VALUE
    counts = (f"{len(snap.participants)}/{len(snap.wait_list)}/{len(snap.redundancy_list)}" if snap is not None
              else NO_VALUE)
    sentences = change_sentences(entry, heartbeats=False)
    what = "".join(f"<p>{_text(sentence)}</p>" for sentence in sentences[:SENTENCES_SHOWN])
    if len(sentences) > SENTENCES_SHOWN:
        kept = sentences[SENTENCES_SHOWN:SENTENCES_KEPT]
        more = "".join(f"<p>{_text(sentence)}</p>" for sentence in kept)
        if len(sentences) > SENTENCES_KEPT:
            more += (f"<p class=\"note\">… and {len(sentences) - SENTENCES_KEPT} more "
                     f"(rdzv history --json lists every one).</p>")
        what += f"<details><summary>{len(sentences) - SENTENCES_SHOWN} more changes</summary>{more}</details>"
    finding = headline(diagnose_view(entry, settings, entry.seen_at))
    meant = (f"<p><span class=\"sev {finding.severity}\">{_text(finding.severity)}</span>{_text(finding.message)}"
             f"</p>" if finding is not None else "")
    origin = " title=\"read back from etcd's history\"" if entry.read_back else ""
    return (f"<tr id=\"rev-{entry.revision}\" class=\"{_event_class(entry)}\"><td class=\"rev\"{origin}>"
            f"{entry.revision}</td><td class=\"time\">{_text(revision_time(entry))}</td><td class=\"num\">{round_}</td>"
            f"<td class=\"num\">{counts}</td><td class=\"what\">{what}</td><td class=\"meant\">{meant}</td></tr>\n")


def _heartbeats_row(entries: Sequence[Revision]) -> str:
    first, last = entries[0], entries[-1]
    if len(entries) == 1:
        span = f"revision {first.revision}, {revision_time(first)}"
        text = "1 heartbeat-only revision"
    else:
        span = f"revisions {first.revision} to {last.revision}, {revision_time(first)} to {revision_time(last)}"
        text = f"{len(entries)} heartbeat-only revisions"
    ids = "".join(f"<a id=\"rev-{entry.revision}\"></a>" for entry in (first, last)) if len(entries) > 1 else \
        f"<a id=\"rev-{first.revision}\"></a>"
    return (f"<tr class=\"heartbeats\"><td colspan=\"6\">{ids}{text} ({_text(span)}): the nodes only renewed their "
            "keep-alives.</td></tr>\n")


# --- node tables ------------------------------------------------------------------------------


def _cell(row: NodeRow, field: str) -> str:
    if field == "rank":
        return NO_VALUE if row.rank is None else str(row.rank)
    if field == "heartbeat_age":
        return NO_VALUE if row.heartbeat_age is None else f"{age(row.heartbeat_age)} ago"
    if field == "stale":
        return "stale" if row.stale else ""
    return _text(getattr(row, field))


def _node_table(entry: Revision, settings: RendezvousSettings) -> str:
    snap = entry.snapshot
    if snap is None:
        return f"<p>{_text(change_sentences(entry)[-1])}</p>\n"
    rows = node_rows(snap, settings, entry.seen_at)
    deadline = "none" if snap.deadline is None else f"{clock(snap.deadline)} UTC"
    summary = (f"<p>Round {snap.round}, {'complete' if snap.complete else 'not complete'}"
               f"{', closed' if snap.closed else ''}; {len(snap.participants)} participants, {len(snap.wait_list)} "
               f"waiting, {len(snap.redundancy_list)} redundant; last-call deadline {deadline}.")
    ranked = snap.ranked() if snap.complete else ()
    if ranked:
        summary += f" World size {len(ranked)}, ranks {ranked[0][1]} to {ranked[-1][1]}."
    summary += " Heartbeat ages are as of this revision.</p>\n"
    if not rows:
        return summary + "<p>No node.</p>\n"
    head = "".join(f"<th>{heading}</th>" for _, heading in COLUMNS)
    body = []  # a thousand rows per table: no attribute per cell (the CSS aligns the numbers)
    for row in rows:
        cells = "".join(f"<td>{_cell(row, field)}</td>" for field, _ in COLUMNS)
        body.append(f"<tr class=\"stale\">{cells}</tr>" if row.stale else f"<tr>{cells}</tr>")
    return (summary + f"<table class=\"nodes\"><thead><tr>{head}</tr></thead><tbody>" + "\n".join(body)
            + "</tbody></table>\n")


def _completions(revisions: Sequence[Revision], settings: RendezvousSettings) -> str:
    done = [entry for entry in revisions if entry.snapshot is not None and _has(entry, ChangeKind.COMPLETED)]
    head = "<section id=\"completions\">\n<h2>State at each round's completion</h2>\n"
    if not done:
        return head + "<p>No round completed in this story.</p>\n</section>\n"
    parts = [head]
    if len(done) > MAX_ROUND_TABLES:
        left_out = done[:-MAX_ROUND_TABLES]
        parts.append(f"<p class=\"note\">{len(done)} rounds completed; the node tables of the newest "
                     f"{MAX_ROUND_TABLES} follow. The earlier completions (revisions "
                     f"{', '.join(str(entry.revision) for entry in left_out)}) are in the event log.</p>\n")
        done = done[-MAX_ROUND_TABLES:]
    for entry in done:
        parts.append(f"<h3 id=\"round-{entry.revision}\">Round {entry.snapshot.round} completed at revision "
                     f"<a href=\"#rev-{entry.revision}\">{entry.revision}</a>, {_text(revision_time(entry))} UTC</h3>\n")
        parts.append(_node_table(entry, settings))
    parts.append("</section>\n")
    return "".join(parts)


def _last_state(last: Revision | None, settings: RendezvousSettings) -> str:
    head = "<section id=\"last\">\n<h2>State at the last revision</h2>\n"
    if last is None:
        return head + "<p>No revision of the run was read.</p>\n</section>\n"
    return (head + f"<h3>Revision <a href=\"#rev-{last.revision}\">{last.revision}</a>, "
            f"{_text(revision_time(last))} UTC</h3>\n" + _node_table(last, settings) + "</section>\n")
