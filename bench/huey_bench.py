"""The huey comparison of the dispatch benchmark: the consumer of huey_tasks.py, and its timings."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from common import BENCH, PYTHON, Processes, log, percentile


def available() -> bool:
    """Whether huey is installed (its columns are n/a without it)."""
    try:
        importlib.import_module("huey")
    except ImportError:
        return False
    return True


class HueyBench:
    """huey's SqliteHuey in a temporary folder and a ``huey_consumer`` with 2 thread workers."""

    def __init__(self, workdir: Path, processes: Processes, env: dict[str, str]) -> None:
        self.processes = processes
        self.env = env
        self.folder = workdir / "huey"
        self.folder.mkdir()
        self.database = self.folder / "huey.db"
        self.process: subprocess.Popen[bytes] | None = None
        os.environ["BENCH_HUEY_DB"] = str(self.database)
        sys.modules.pop("huey_tasks", None)
        self.tasks = importlib.import_module("huey_tasks")

    def start(self) -> None:
        env = dict(self.env)
        env["BENCH_HUEY_DB"] = str(self.database)
        consumer = shutil.which("huey_consumer", path=str(Path(PYTHON).parent)) or shutil.which(
            "huey_consumer"
        )
        command = [consumer] if consumer else [PYTHON, "-m", "huey.bin.huey_consumer"]
        self.process = self.processes.start(
            [*command, "huey_tasks.huey", "--workers", "2", "--worker-type", "thread"],
            env=env,
            log_path=self.folder / "consumer.log",
            cwd=BENCH,
        )
        for _ in range(3):  # warm-up; also proves the consumer runs
            self.one(timeout=30)

    def one(self, timeout: float = 60) -> float:
        """Enqueue one no-op task and wait for it; its enqueue-to-start latency in seconds."""
        enqueued = time.time()
        result = self.tasks.noop(enqueued)
        _, started, _ = result.get(blocking=True, timeout=timeout)
        return started - enqueued

    def sequential(self, samples: int, reps: int) -> dict[str, list[float]]:
        """``reps`` times ``samples`` tasks one at a time: the p50 and p99 latency (ms) of each."""
        p50s, p99s = [], []
        for rep in range(reps):
            latencies = [self.one() * 1e3 for _ in range(samples)]
            p50s.append(percentile(latencies, 0.5))
            p99s.append(percentile(latencies, 0.99))
            log(f"  huey rep {rep + 1}: p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms")
        return {"p50": p50s, "p99": p99s}

    def burst(self, count: int) -> float:
        """Enqueue ``count`` tasks at once and wait for all: tasks per second."""
        results = [self.tasks.noop(time.time()) for _ in range(count)]
        times = [result.get(blocking=True, timeout=120) for result in results]
        first = min(t[0] for t in times)
        last = max(t[2] for t in times)
        rate = count / (last - first)
        log(f"  huey burst: {rate:.1f} tasks/s")
        return rate

    def stop(self) -> None:
        if self.process is not None:
            self.processes.stop(self.process)
            self.process = None
