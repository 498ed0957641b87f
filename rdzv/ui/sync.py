"""Bringing a ColumnDataSource to new whole columns while sending the browser only what changed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from bokeh.models import ColumnDataSource

SyncResult = Literal["unchanged", "patched", "streamed", "replaced"]


def sync_source(source: ColumnDataSource, columns: Mapping[str, Sequence], key: str) -> SyncResult:
    """Make ``source.data`` equal ``columns``, whose column ``key`` identifies each row.

    * same rows in the same order: only the cells that differ are sent (``source.patch``);
      nothing at all when none differ;
    * the old rows followed by new ones: the changed cells are patched and the new rows
      streamed (``source.stream``);
    * anything else (rows removed or reordered, other columns): the data is replaced.

    Returns which of these happened.
    """
    old = source.data
    new_keys = list(columns[key])
    if set(old) != set(columns):
        return _replace(source, columns)
    old_keys = list(old[key])
    if not old_keys and not new_keys:
        return "unchanged"
    if new_keys[: len(old_keys)] != old_keys:
        return _replace(source, columns)
    shared = len(old_keys)
    patches = {}
    for name, values in columns.items():
        changed = _changed_cells(old[name], values, shared)
        if changed:
            patches[name] = changed
    if patches:
        source.patch(patches)
    if len(new_keys) > shared:
        source.stream({name: list(values[shared:]) for name, values in columns.items()})
        return "streamed"
    return "patched" if patches else "unchanged"


def _replace(source: ColumnDataSource, columns: Mapping[str, Sequence]) -> SyncResult:
    source.data = {name: list(values) for name, values in columns.items()}
    return "replaced"


def patch_column(source: ColumnDataSource, name: str, values: Sequence) -> bool:
    """Patch the cells of one column that differ from ``values`` (same length); True if any did."""
    current = source.data[name]
    if len(current) != len(values):
        return False
    changed = _changed_cells(current, values, len(values))
    if changed:
        source.patch({name: changed})
    return bool(changed)


def _changed_cells(current: Sequence, values: Sequence, rows: int) -> list[tuple[int, object]]:
    """``(row, new value)`` of the first ``rows`` cells where ``values`` differs from ``current``
    (NaN, which differs from itself, counts as equal to NaN)."""
    return [(row, values[row]) for row in range(rows) if current[row] != values[row] and not (
        _is_nan(current[row]) and _is_nan(values[row]))]


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)
