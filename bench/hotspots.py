"""Where one process's CPU goes during one benchmark scenario: py-spy, attached while it runs.

``bench/run --profile worker:fast`` (or ``reader:``, and ``batch1``, ``slow256``, ``batched``)
runs the scenario as ``bench/run`` does and samples the process tree (children included) at 100 Hz,
only threads holding the GIL (``--gil``): CPU spent in Python, not time spent waiting. It
prints the functions found most often on those stacks (inclusive) and keeps the raw samples
in ``bench/results/raw/profile.txt``. This is how the worker's hot spots of the delivery
engine issue were found (``http.client`` header parsing, kombu's client per operation).
"""

from __future__ import annotations

import collections
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

SCENARIOS: dict[str, tuple[int, dict[str, Any]]] = {
    "fast": (20000, {"events": True}),
    "batch1": (4000, {"events": False, "batch_size": 1}),
    "slow256": (5000, {"events": True, "concurrency": 256, "slow": True}),
    "batched": (30000, {"events": True, "request_batch": {"max_records": 100}, "counted": True}),
}
PROCESSES = ("reader", "worker")


class Sampler:
    """py-spy on one of the pipeline's processes, from ``start`` to ``stop``."""

    def __init__(self, process: str, out: Path) -> None:
        spy = shutil.which("py-spy", path=str(Path(__file__).resolve().parents[1] / ".venv/bin"))
        if spy is None:
            raise SystemExit("py-spy is missing: bench/run installs bench/requirements.txt")
        self.spy, self.process, self.out = spy, process, out
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, procs: list[Any]) -> None:
        """``procs`` as the benchmark starts them: the reader, then the worker."""
        pid = procs[PROCESSES.index(self.process)].pid
        self._proc = subprocess.Popen([self.spy, "record", "--subprocesses", "--gil", "-r",
                                       "100", "-f", "raw", "-o", str(self.out), "--pid",
                                       str(pid)], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        time.sleep(1)  # py-spy attaches

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGINT)
            self._proc.wait(60)


def run(bench: Any, spec: str, out: Path) -> None:
    """Profile ``process:scenario`` (e.g. ``worker:fast``) on ``bench`` (a ``Bench``)."""
    process, _, scenario = spec.partition(":")
    if process not in PROCESSES or scenario not in SCENARIOS:
        raise SystemExit(f"--profile takes one of {PROCESSES} : one of {list(SCENARIOS)}")
    n, job = SCENARIOS[scenario]
    job = dict(job)
    slow, events, counted = job.pop("slow", False), job.pop("events"), job.pop("counted", False)
    out.parent.mkdir(parents=True, exist_ok=True)
    bench.sampler = Sampler(process, out)
    if counted:  # records per request: counted at the job's counter, as batched_vs_single does
        bench.ours_counted(f"profile {spec}", n, events=events,
                           url=bench.nginx.url + "/ingest/batch", headers={}, **job)
    else:
        bench.ours(f"profile {spec}", n, events=events, sink=bench.slow if slow else None,
                   **job)
    report(out)


def report(raw: Path, top: int = 60) -> None:
    """The functions most often on the sampled stacks, inclusive, in % of all samples."""
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        total += int(n)
        for frame in {re.sub(r":\d+\)", ")", f) for f in stack.split(";")}:
            counts[frame] += int(n)
    print(f"  {total} samples (10 ms each) in {raw}; frames on every stack left out")
    shown = [(frame, n) for frame, n in counts.most_common() if n < total]
    for frame, n in shown[:top]:
        print(f"  {100 * n / total:5.1f}%  {frame[:120]}")
