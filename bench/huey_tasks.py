"""The huey side of the dispatch benchmark: a file-backed ``SqliteHuey`` and a no-op task.

The queue's SQLite file is ``$BENCH_HUEY_DB``. The consumer runs as its own process:

    BENCH_HUEY_DB=/tmp/x/huey.db PYTHONPATH=bench huey_consumer huey_tasks.huey -w 2 -k thread

with huey's default polling (a worker with nothing to do sleeps 0.1 s, then 1.15 times longer
each time it again finds nothing, up to 10 s).
"""

from __future__ import annotations

import os
import time

from huey import SqliteHuey

huey = SqliteHuey("maia-bench", filename=os.environ.get("BENCH_HUEY_DB", "huey-bench.db"))


@huey.task()
def noop(enqueued_at: float) -> tuple[float, float, float]:
    """Does nothing; returns when it was enqueued, started and finished (time.time())."""
    started = time.time()
    return enqueued_at, started, time.time()
