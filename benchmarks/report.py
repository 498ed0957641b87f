"""The results of a benchmark run as a text table, a JSON file and a PNG of the scaling curves."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

COLUMNS = ("metric", "rdzv", "torch", "ratio (torch/rdzv)", "target", "met", "note")


def _number(value: float | None, unit: str) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    digits = 3 if abs(value) < 1 else 2 if abs(value) < 100 else 0
    return f"{value:,.{digits}f} {unit}".strip()


def _cells(line: dict[str, Any]) -> list[str]:
    if line.get("status") == "unavailable":
        return [line["metric"], "unavailable", "", "", line.get("target") or "", "", line.get("reason", "")]
    ratio = line.get("ratio")
    met = line.get("met")
    return [
        line["metric"],
        _number(line.get("rdzv"), line.get("unit", "")),
        _number(line.get("torch"), line.get("unit", "")) if line.get("torch") is not None else "—",
        f"{ratio:.2f}×" if ratio is not None else "—",
        line.get("target") or "",
        "" if met is None else ("yes" if met else "NO"),
        line.get("note") or "",
    ]


def _grid(header: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines)]
    render = [" | ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip()
              for cells in [header, *lines]]
    render.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(render)


def format_table(results: dict[str, Any]) -> str:
    """The summary table (every section's rows), then each section's breakdown, if it has one."""
    lines: list[list[str]] = []
    for section in results["sections"].values():
        if section["status"] != "ok":
            lines.append([section["title"], "unavailable", "", "", "", "", section.get("reason", "")])
            continue
        lines.extend(_cells(line) for line in section["rows"])
    text = [_grid(list(COLUMNS), lines)]
    for section in results["sections"].values():
        breakdown = section.get("data", {}).get("breakdown")
        if section["status"] == "ok" and breakdown:
            header = list(breakdown[0])
            body = [[_plain(entry.get(field)) for field in header] for entry in breakdown]
            text.append(f"\n{section['title']}: breakdown (medians)\n" + _grid(header, body))
    return "\n".join(text)


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return "—" if value is None else str(value)


def write_json(results: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")


def write_png(results: dict[str, Any], path: Path) -> None:
    """Scaling curves: store get vs keys, rendezvous time vs nodes, monitor cost vs participants."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = results["sections"]
    figure, axes = plt.subplots(1, 3, figsize=(17, 5))
    _plot_store_get(axes[0], sections.get("store_get"))
    _plot_rendezvous(axes[1], sections.get("rendezvous"))
    _plot_monitor(axes[2], sections.get("monitor"))
    mode = "quick" if results["meta"].get("quick") else "full"
    figure.suptitle(f"rdzv vs torch ({mode} run, {results['meta'].get('started_at', '')})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _unavailable(axis: Any, title: str, section: dict | None) -> bool:
    if section and section.get("status") == "ok":
        return False
    reason = (section or {}).get("reason", "not run")
    axis.set_title(title)
    axis.set_axis_off()
    axis.text(0.5, 0.5, f"unavailable:\n{reason[:120]}", ha="center", va="center", wrap=True,
              transform=axis.transAxes)
    return True


def _plot_store_get(axis: Any, section: dict | None) -> None:
    title = "store get of a present key"
    if _unavailable(axis, title, section):
        return
    medians = section["data"]["median_ms"]
    sizes = [int(size) for size in medians]
    for name in ("torch", "rdzv-v2", "rdzv-v3"):
        points = [(size, medians[str(size)][name]) for size in sizes if name in medians[str(size)]]
        if points:
            axis.plot([s for s, _ in points], [v for _, v in points], marker="o", label=name)
    axis.set_xscale("symlog", linthresh=100)
    axis.set_yscale("log")
    axis.set_xticks(sizes, [f"{s:,}" for s in sizes])
    axis.minorticks_off()
    axis.set_xlabel("other keys in the store")
    axis.set_ylabel("median ms per get")
    axis.set_title(title)
    axis.legend()
    axis.grid(True, which="both", alpha=0.3)


def _plot_rendezvous(axis: Any, section: dict | None) -> None:
    title = "rendezvous completion"
    if _unavailable(axis, title, section):
        return
    for name, by_size in section["data"]["median_s"].items():
        if by_size:
            sizes = sorted(int(n) for n in by_size)
            axis.plot(sizes, [by_size[str(n)] for n in sizes], marker="o", label=name)
    axis.set_ylim(bottom=0)
    axis.set_xlabel("nodes (N = min = max)")
    axis.set_ylabel("median seconds to complete")
    axis.set_title(title)
    axis.legend()
    axis.grid(True, alpha=0.3)


def _plot_monitor(axis: Any, section: dict | None) -> None:
    title = "monitor: decode + diff per revision"
    if _unavailable(axis, title, section):
        return
    by_size = section["data"].get("decode_diff_ms", {})
    reference = section["data"].get("pickle_loads_ms", {})
    sizes = sorted(int(n) for n in by_size)
    axis.plot(sizes, [by_size[str(n)] for n in sizes], marker="o", label="rdzv decode_state_b64 + diff_states")
    if reference:
        axis.plot(sizes, [reference[str(n)] for n in sizes], marker="s", linestyle="--",
                  label="reference: b64decode + pickle.loads")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("participants")
    axis.set_ylabel("median ms per revision")
    axis.set_title(title)
    axis.legend()
    axis.grid(True, which="both", alpha=0.3)
