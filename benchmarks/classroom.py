"""How many students one machine holds: a class of N on the hub of deploy/, Run All together.

For each N, N students log in to the real JupyterHub of deploy/jupyterhub_config.py
(the one tests/test_hub.py starts), each in a headless Chromium of their own, open the
same lesson and press Run All at the same moment. For each N it prints:

* the lesson's wall time per student (Run All pressed to last cell done): median and slowest;
* memory per student, at its peak while the lesson ran: the student's single-user
  server, kernel, Redis, worker processes and programs together (RSS from psutil,
  sampled every 0.2 s; the browser is the student's own machine's and is not counted);
* CPU seconds per student for the whole Run All: the CPU time of every process under
  the student's server, each as last sampled (every 0.2 s), summed;
* the slowest cell, timed inside the kernel, and how long it took.

Then a sizing line: what a class of 30 needs, from the largest N measured.

    python benchmarks/classroom.py [--students 1 2 4 8] [--lesson 05_pubsub_across_processes.ipynb]

Needs what tests/test_hub.py needs: Chromium and chromedriver (Debian's), the hub's
proxy (make deploy/node_modules/.bin/configurable-http-proxy), a non-loopback address.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import browser_harness as harness  # noqa: E402
from tests import hub_harness  # noqa: E402

#: Run in the student's kernel before the lesson: each cell's duration, kept in the kernel.
TIME_CELLS = """
import time as _time
_timings, _started = [], {}
def _pre(info):
    _started["at"], _started["source"] = _time.perf_counter(), info.raw_cell
def _post(result):
    if "at" in _started:
        _timings.append((_time.perf_counter() - _started.pop("at"), _started.pop("source")))
get_ipython().events.register("pre_run_cell", _pre)
get_ipython().events.register("post_run_cell", _post)
"""

SLOWEST = """
import json as _json
_slow = max(_timings, default=(0.0, ""))
print("SLOWEST", _json.dumps([_slow[0], _slow[1].strip().splitlines()[0] if _slow[1] else ""]))
"""


class Peak:
    """Each student's server and everything under it, sampled in a thread: the peak of their
    summed RSS, and the CPU time each process had used when last seen."""

    def __init__(self, hub: hub_harness.Hub):
        self.hub = hub
        self.peak: dict[str, int] = {}
        self.cpu: dict[str, dict[int, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, server in self.hub.servers().items():
                total = 0
                try:
                    tree = [server, *server.children(recursive=True)]
                except psutil.Error:
                    continue
                used = self.cpu.setdefault(name, {})
                for each in tree:
                    try:
                        total += each.memory_info().rss
                        times = each.cpu_times()
                        used[each.pid] = times.user + times.system
                    except psutil.Error:
                        continue
                self.peak[name] = max(self.peak.get(name, 0), total)

    def cpu_seconds(self, name: str, before: dict[int, float]) -> float:
        used = self.cpu.get(name, {})
        return sum(seconds - before.get(pid, 0.0) for pid, seconds in used.items())


def cpu_now(process: psutil.Process) -> dict[int, float]:
    """The CPU time each process of the tree under ``process`` has used so far."""
    used = {}
    for each in [process, *process.children(recursive=True)]:
        times = each.cpu_times()
        used[each.pid] = times.user + times.system
    return used


def one_student(
    student: hub_harness.Student, lesson: str, go: threading.Barrier, peak: Peak
) -> dict:
    student.open(lesson)
    answer = student.execute(TIME_CELLS)
    assert answer["error"] is None, answer
    before = cpu_now(student.hub.servers()[student.name])
    go.wait()
    started = time.monotonic()
    cells = student.run_all()
    wall = time.monotonic() - started
    errors = harness.errors_in(cells)
    slowest = student.execute(SLOWEST)["stdout"]
    cpu = peak.cpu_seconds(student.name, before)
    student.shut_down_kernel()
    seconds, cell = json.loads(slowest.split("SLOWEST ", 1)[1])
    return {"wall": wall, "cpu": cpu, "slowest": seconds, "cell": cell, "errors": errors}


def measure(hub: hub_harness.Hub, count: int, lesson: str, round_: int) -> dict:
    students = [hub_harness.Student(f"r{round_}s{number}", hub) for number in range(count)]
    try:
        with ThreadPoolExecutor(count) as pool:
            list(pool.map(lambda student: student.log_in(), students))
            go = threading.Barrier(count)
            with Peak(hub) as peak:
                results = list(pool.map(lambda s: one_student(s, lesson, go, peak), students))
    finally:
        for student in students:
            student.quit()
    failed = [
        f"{student.name}: {result['errors'][0][:200]}"
        for student, result in zip(students, results, strict=True)
        if result["errors"]
    ]
    memory = [peak.peak.get(student.name, 0) / 2**20 for student in students]
    slowest = max(results, key=lambda result: result["slowest"])
    return {
        "students": count,
        "wall_median": statistics.median(r["wall"] for r in results),
        "wall_max": max(r["wall"] for r in results),
        "memory_median": statistics.median(memory),
        "memory_max": max(memory),
        "cpu_median": statistics.median(r["cpu"] for r in results),
        "slowest": slowest["slowest"],
        "slowest_cell": slowest["cell"],
        "failed": failed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--lesson", default="05_pubsub_across_processes.ipynb")
    args = parser.parse_args()
    address = hub_harness.outside_address()
    if harness.chromium_paths() is None or not hub_harness.PROXY.exists() or address is None:
        sys.exit("needs Chromium, the hub's proxy and a non-loopback address (see the docstring)")
    memory = psutil.virtual_memory().total / 2**30
    print(f"lesson {args.lesson}; {os.cpu_count()} cores, {memory:.0f} GiB; a round per class size")
    print(f"{'students':>8} {'wall s (median/max)':>20} {'MiB each (median/max)':>22} "
          f"{'CPU s each':>10}  slowest cell")  # fmt: skip
    rows = []
    with tempfile.TemporaryDirectory() as work:
        hub = hub_harness.start_hub(Path(work), ROOT / "notebooks", address)
        try:
            for round_, count in enumerate(args.students):
                row = measure(hub, count, args.lesson, round_)
                rows.append(row)
                print(f"{count:>8} {row['wall_median']:>9.1f} / {row['wall_max']:<8.1f} "
                      f"{row['memory_median']:>10.0f} / {row['memory_max']:<9.0f} "
                      f"{row['cpu_median']:>10.1f}  {row['slowest']:.1f} s: "
                      f"{row['slowest_cell'][:60]}")  # fmt: skip
                for line in row["failed"]:
                    print(f"{'':>8} FAILED {line}")
        finally:
            left = hub.stop()
            if left:
                print("left running after the hub stopped (killed):", *left, sep="\n  ")
    last = rows[-1]
    memory = 30 * last["memory_max"] / 1024
    cores = 30 * last["cpu_median"] / 60
    print(
        f"A class of 30 on {args.lesson}: about {memory:.1f} GiB for the students' servers "
        f"(30 × {last['memory_max']:.0f} MiB, the most one took with {last['students']} at once), "
        f"and {cores:.1f} cores for all of them to Run All within the same minute "
        f"(30 × {last['cpu_median']:.1f} CPU s / 60 s); add the hub and its proxy."
    )


if __name__ == "__main__":
    main()
