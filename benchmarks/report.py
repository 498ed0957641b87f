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
    """Scaling curves and the new comparisons: store get vs keys, rendezvous time vs nodes, decode +
    diff vs participants (against pickle.loads), one compare-and-swap vs state size (against etcd's
    floor), change-to-browser and server CPU vs sessions, and the sustained load over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sections = results["sections"]
    figure, axes = plt.subplots(2, 3, figsize=(19, 10.5))
    _plot_store_get(axes[0][0], sections.get("store_get"))
    _plot_rendezvous(axes[0][1], sections.get("rendezvous"))
    _plot_decode(axes[0][2], sections.get("decode"))
    _plot_cas(axes[1][0], sections.get("load"))
    _plot_sessions(axes[1][1], sections.get("sessions"))
    _plot_sustained(axes[1][2], sections.get("load"))
    mode = "quick" if results["meta"].get("quick") else "full"
    figure.suptitle(f"rdzv vs torch ({mode} run, {results['meta'].get('started_at', '')})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
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


def _plot_decode(axis: Any, section: dict | None) -> None:
    title = "decode + diff per revision vs pickle.loads"
    if _unavailable(axis, title, section):
        return
    by_size = section["data"].get("ms", {})
    sizes = sorted(int(n) for n in by_size)
    lines = (("full_join", "o", "-", "rdzv full path (decode_state_b64 + diff_states), join"),
             ("stream_heartbeat", "o", "-", "rdzv monitor heartbeat path (StateStream)"),
             ("torch_b64_pickle_loads_join", "s", "--", "reference: b64decode + pickle.loads"),
             ("pickle_loads_heartbeat", "s", ":", "reference: pickle.loads"))
    for name, marker, style, label in lines:
        axis.plot(sizes, [by_size[str(n)][name] for n in sizes], marker=marker, linestyle=style, label=label)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("participants")
    axis.set_ylabel("median ms per revision")
    axis.set_title(title)
    axis.legend(fontsize=8)
    axis.grid(True, which="both", alpha=0.3)


def _plot_cas(axis: Any, section: dict | None) -> None:
    title = "one compare-and-swap vs state size"
    if _unavailable(axis, title, section) or not section["data"].get("cas"):
        if section and section.get("status") == "ok":
            _unavailable(axis, title, {"reason": "no compare-and-swap was measured"})
        return
    costs = section["data"]["cas"]
    for api, color in (("v2", "tab:blue"), ("v3", "tab:orange")):
        sizes = sorted(int(key.split("-")[1]) for key in costs if key.startswith(api + "-"))
        if not sizes:
            continue
        ms = [costs[f"{api}-{n}"]["ms"] for n in sizes]
        axis.plot(sizes, [m["backend_set_state"] for m in ms], marker="o", color=color,
                  label=f"rdzv backend set_state, {api}")
        axis.plot(sizes, [m["kv_put_floor"] for m in ms], marker="s", linestyle="--", color=color,
                  label=f"floor: raw KV put, {api}")
        axis.plot(sizes, [m["bare_http_cas"] for m in ms], marker="^", linestyle=":", color=color,
                  label=f"etcd's own CAS (bare HTTP), {api}")
        if api == "v2" and all("torch_etcd_v2_set_state" in m for m in ms):
            axis.plot(sizes, [m["torch_etcd_v2_set_state"] for m in ms], marker="x", color="tab:red",
                      label="torch etcd-v2 set_state")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("nodes in the state")
    axis.set_ylabel("median ms per write")
    axis.set_title(title)
    axis.legend(fontsize=7)
    axis.grid(True, which="both", alpha=0.3)


def _plot_sessions(axis: Any, section: dict | None) -> None:
    title = "dashboard sessions on a 1,000-node load"
    if _unavailable(axis, title, section):
        return
    crowd = section["data"].get("many_viewers")
    if crowd:
        rows = section["data"].get("breakdown", [])
        counts = [entry["sessions"] for entry in rows]
        axis.plot(counts, [entry["lag_p50_ms"] for entry in rows], marker="o", label="change-to-browser p50")
        axis.plot(counts, [entry["lag_p99_ms"] for entry in rows], marker="o", label="change-to-browser p99")
        cpu = axis.twinx()
        cpu.plot(counts, [entry["server_cores"] for entry in rows], marker="s", linestyle="--", color="tab:gray",
                 label="server CPU (cores, right)")
        cpu.set_ylabel("server CPU, cores")
        cpu.set_ylim(bottom=0)
        cpu.legend(loc="upper right", fontsize=8)
        axis.set_xticks(counts)
    quiet = section["data"].get("push_vs_poll")
    if quiet:
        for kind, style in (("push", "-."), ("poll", ":")):
            values = sorted(quiet["lags_s"][kind])
            if values:
                axis.axhline(values[len(values) // 2] * 1000, linestyle=style, color="black", alpha=0.6,
                             label=f"1 page, etcd quiet: {kind} p50")
    axis.set_ylim(bottom=0)
    axis.set_xlabel("sessions open (1 Chromium page + lightweight sessions)")
    axis.set_ylabel("ms from write to the page")
    axis.set_title(title)
    axis.legend(loc="upper left", fontsize=8)
    axis.grid(True, alpha=0.3)


def _plot_sustained(axis: Any, section: dict | None) -> None:
    title = "sustained 1,000-node load"
    if _unavailable(axis, title, section) or not section["data"].get("sustained"):
        if section and section.get("status") == "ok":
            _unavailable(axis, title, {"reason": "the sustained load did not run"})
        return
    sustained = section["data"]["sustained"]
    for name, label in (("monitor_lag_by_second", "monitor lag, max per second"),
                        ("page_lag_by_second", "page lag, max per second")):
        series = sustained.get(name) or []
        if series:
            axis.plot([s for s, _ in series], [lag * 1000 for _, lag in series], label=label)
    axis.axhline(1000, color="tab:red", linestyle=":", label="1 s target")
    axis.set_xlabel("seconds since the load's first write")
    axis.set_ylabel("ms behind etcd")
    worst = max((lag for name in ("monitor_lag_by_second", "page_lag_by_second")
                 for _, lag in sustained.get(name) or []), default=0.0)
    axis.set_ylim(0, max(1200.0, worst * 1000 * 1.2))
    memory = axis.twinx()
    samples = sustained.get("rss_samples") or []
    memory.plot([s[0] for s in samples], [s[1] for s in samples], color="tab:gray", linestyle="--",
                label="monitor process RSS (MB, right)")
    if any(s[2] for s in samples):
        memory.plot([s[0] for s in samples], [s[2] for s in samples], color="tab:brown", linestyle="--",
                    label="dashboard server RSS (MB, right)")
    memory.set_ylabel("MB")
    highest = max((value for sample in samples for value in sample[1:] if value), default=1.0)
    memory.set_ylim(0, highest * 1.8)  # below the lag's 1 s line
    memory.legend(loc="lower right", fontsize=8)
    stats = sustained.get("stats", {})
    axis.set_title(f"{title}: {stats.get('achieved_rate', 0):.0f} writes/s")
    axis.legend(loc="upper left", fontsize=8)
    axis.grid(True, alpha=0.3)
