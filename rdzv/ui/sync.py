"""Bringing a ColumnDataSource to new whole columns while sending the browser only what changed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from bokeh.models import ColumnDataSource

from .shared_answers import SharedAnswers

SyncResult = Literal["unchanged", "patched", "streamed", "replaced"]

STEPS_KEPT = 8
"""Steps between shared columns remembered for the other sources taking the same step."""


@dataclass(frozen=True)
class _Step:
    """What brings a source from one set of columns to another; never changed once made."""

    result: SyncResult
    patches: Mapping[str, list[tuple[int, object]]]
    streamed: Mapping[str, Sequence] | None


_STEPS: SharedAnswers[_Step] = SharedAnswers(STEPS_KEPT)


def sync_source(source: ColumnDataSource, columns: Mapping[str, Sequence], key: str | tuple[str, ...],
                shown: Mapping[str, Sequence] | None = None) -> SyncResult:
    """Make ``source.data`` equal ``columns``, whose column ``key`` (or columns, together)
    identifies each row. A column may be a list or a 1-d NumPy array (Bokeh sends an array's
    numbers as binary, far cheaper than a list's, NaN above all); the source keeps a copy.

    * same rows in the same order: only the cells that differ are sent (``source.patch``);
      nothing at all when none differ;
    * the old rows followed by new ones: the changed cells are patched and the new rows
      streamed (``source.stream``);
    * anything else (rows removed or reordered, other columns): the data is replaced.

    ``shown``: the columns this function last brought ``source`` to, when many sources are
    brought to the same columns (objects that nobody changes, such as one table shared by every
    session): the step from ``shown`` to ``columns`` is then worked out once, for all of them.

    Returns which of these happened.
    """
    step = _shared_step(shown, columns, key) if shown is not None else _step(source.data, columns, key)
    if step.result == "replaced":
        source.data = {name: _copy(values) for name, values in columns.items()}
        return step.result
    if step.patches:
        source.patch(dict(step.patches))
    if step.streamed is not None:
        source.stream(dict(step.streamed))
    return step.result


def _shared_step(shown: Mapping[str, Sequence], columns: Mapping[str, Sequence], key: str | tuple[str, ...]
                 ) -> _Step:
    return _STEPS.get((shown, columns), key, lambda: _step(shown, columns, key))


def _step(old: Mapping[str, Sequence], columns: Mapping[str, Sequence], key: str | tuple[str, ...]) -> _Step:
    replace = _Step("replaced", {}, None)
    if set(old) != set(columns):
        return replace
    new_keys, old_keys = _keys(columns, key), _keys(old, key)
    if not old_keys and not new_keys:
        return _Step("unchanged", {}, None)
    if new_keys[: len(old_keys)] != old_keys:
        return replace
    shared = len(old_keys)
    patches = {}
    for name, values in columns.items():
        changed = _changed_cells(old[name], values, shared)
        if changed:
            patches[name] = changed
    if len(new_keys) > shared:
        return _Step("streamed", patches, {name: _copy(values[shared:]) for name, values in columns.items()})
    return _Step("patched" if patches else "unchanged", patches, None)


def _keys(columns: Mapping[str, Sequence], key: str | tuple[str, ...]) -> list:
    if isinstance(key, str):
        return list(columns[key])
    return list(zip(*(_plain(columns[name]) for name in key), strict=True))


def _copy(values: Sequence) -> Sequence:
    return values.copy() if isinstance(values, np.ndarray) else list(values)


def _plain(values: Sequence) -> list:
    """``values`` as a list of Python values (an array's numbers as Python numbers)."""
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


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
    if isinstance(current, np.ndarray) or isinstance(values, np.ndarray):
        old, new = np.asarray(current[:rows]), np.asarray(values[:rows])
        differ = old != new
        if old.dtype.kind == "f" and new.dtype.kind == "f":
            differ &= ~(np.isnan(old) & np.isnan(new))
        return [(int(row), new[row].item()) for row in np.flatnonzero(differ)]
    if isinstance(current, list) and isinstance(values, list) and rows == len(current) == len(values) \
            and current == values:
        return []
    return [(row, values[row]) for row in range(rows) if current[row] != values[row] and not (
        _is_nan(current[row]) and _is_nan(values[row]))]


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)
