"""Publishing a run: ``bench/run --publish`` copies its results to ``docs/results/bench/`` and
rewrites the marked table of ``docs/performance.md``.

A run without ``--publish`` writes only ``bench/results/`` (not tracked), so running the
benchmark never edits the repository. Only the part between the two markers is written; the
prose around it is the maintainers'.
"""

from __future__ import annotations

import datetime
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

BEGIN = "<!-- bench:begin: bench/run --publish writes this part -->"
END = "<!-- bench:end -->"

GOALS: dict[str, tuple[str, Callable[[float], bool]]] = {
    "fast_default_vs_naive": ("≥ 5", lambda v: v >= 5),
    "per_message_vs_ceiling": ("≥ 0.9", lambda v: v >= 0.9),
    "slow_default_msgs": ("≥ 256", lambda v: v >= 256),
    "slow_c256_msgs": ("≥ 1,500", lambda v: v >= 1500),
    "p99_ms_half_load": ("≤ 100", lambda v: v <= 100),
    "cpu_ms_per_msg": ("≤ 0.5", lambda v: v <= 0.5),
    "ordering_key_vs_none": ("≥ 0.8", lambda v: v >= 0.8),
    "slow_ordering_key_msgs": ("≥ 256", lambda v: v >= 256),
    "console_500_jobs_load_ms": ("≤ 300", lambda v: v <= 300),
    "batched_request_vs_single": ("≥ 10", lambda v: v >= 10),
    "cpu_ms_per_record_batched": ("≤ 0.1", lambda v: v <= 0.1),
}
"""The goals the issues set, as the performance page shows them next to each figure."""


def render(results: list[dict[str, Any]], figures: dict[str, Any], quick: bool) -> str:
    day = datetime.date.today().isoformat()
    lines = [BEGIN, "",
             f"Last run: {day}, `bench/run{' --quick' if quick else ''}`, one configuration "
             "each, in this order:", "",
             "| configuration | messages | msg/s | CPU ms/msg | p50 ms | p99 ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['messages']:,} | {r['throughput']:,.0f} | "
                     f"{_n(r.get('cpu_ms_per_msg'))} | {_n(r.get('p50_ms'))} | "
                     f"{_n(r.get('p99_ms'))} |")
    lines += ["", "| figure | value | goal | met |", "|---|---:|---:|---|"]
    for name, (goal, met) in GOALS.items():
        value = figures.get(name)
        if value is not None:
            lines.append(f"| `{name}` | {value} | {goal} | {'yes' if met(value) else '**no**'} |")
    lines += ["", "![throughput by configuration](results/bench/throughput.png)", "",
              "`RESULT " + " ".join(f"{k}={v}" for k, v in figures.items()) + "`", "", END]
    return "\n".join(lines)


def publish(run: Path, docs: Path, results: list[dict[str, Any]], figures: dict[str, Any],
            quick: bool) -> None:
    """Copy the run's reports into ``docs/results/bench/`` and replace the marked part of
    ``docs/performance.md`` (which must have the markers)."""
    target = docs / "results" / "bench"
    target.mkdir(parents=True, exist_ok=True)
    for name in ("results.md", "results.json", "throughput.png"):
        shutil.copy(run / name, target / name)
    page = docs / "performance.md"
    text = page.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start == -1 or end < start:
        raise SystemExit(f"{page} has lost its benchmark markers: nothing published")
    page.write_text(text[:start] + render(results, figures, quick) + text[end + len(END):])
    print(f"  published to {target} and {page}")


def _n(value: float | None) -> str:
    return "" if value is None else f"{value:g}"
