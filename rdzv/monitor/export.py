"""A run's history as CSV (one row per revision) or JSON (every revision with its full snapshot)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from .model import Revision

FORMATS = ("csv", "json")

CSV_COLUMNS = (
    "run_id", "api", "revision", "seen_at", "size", "round", "complete", "closed", "participants", "waiting",
    "redundant", "heartbeat_only", "resync", "skipped", "read_back", "time_estimated", "deleted", "error", "changes",
)

# A spreadsheet runs a cell starting with one of these as a formula; run ids and node
# addresses come from etcd, so such cells are quoted with a leading apostrophe.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def export_revisions(run_id: str, api: str | None, revisions: Sequence[Revision], fmt: str) -> str:
    """``revisions`` of ``run_id`` (on ``api``) as ``"csv"`` or ``"json"`` text.

    Raises:
        ValueError: ``fmt`` is neither; the message names the accepted formats.
    """
    fmt = str(fmt).strip().lower()
    if fmt == "csv":
        return _csv(run_id, api, revisions)
    if fmt == "json":
        return json.dumps(
            {"run_id": run_id, "api": api, "revisions": [_record(entry) for entry in revisions]}, indent=1
        )
    raise ValueError(f"The history export format must be 'csv' or 'json', not {fmt!r}.")


def _sentences(entry: Revision) -> list[str]:
    return [change.describe() for change in entry.changes]


def _record(entry: Revision) -> dict[str, Any]:
    return {
        "revision": entry.revision,
        "seen_at": entry.seen_at.isoformat(),
        "size": entry.size,
        "heartbeat_only": entry.heartbeat_only,
        "resync": entry.resync,
        "skipped": entry.skipped,
        "read_back": entry.read_back,
        "time_estimated": entry.time_estimated,
        "complete_from": entry.complete_from,
        "deleted": entry.deleted,
        "error": entry.error,
        "changes": [
            {"kind": str(change.kind), "node": None if change.node is None else str(change.node),
             "detail": change.detail, "sentence": sentence}
            for change, sentence in zip(entry.changes, _sentences(entry))
        ],
        "snapshot": None if entry.snapshot is None else entry.snapshot.to_dict(),
    }


def _cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def _csv(run_id: str, api: str | None, revisions: Sequence[Revision]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for entry in revisions:
        snapshot = entry.snapshot
        writer.writerow([
            _cell(run_id), api or "", entry.revision, entry.seen_at.isoformat(), entry.size,
            "" if snapshot is None else snapshot.round,
            "" if snapshot is None else snapshot.complete,
            "" if snapshot is None else snapshot.closed,
            "" if snapshot is None else len(snapshot.participants),
            "" if snapshot is None else len(snapshot.wait_list),
            "" if snapshot is None else len(snapshot.redundancy_list),
            entry.heartbeat_only, entry.resync, entry.skipped, entry.read_back, entry.time_estimated, entry.deleted,
            _cell(entry.error or ""), _cell(" ".join(_sentences(entry))),
        ])
    return out.getvalue()
