"""Trainers for the tests: each does what its training's meta asks, and records what it did.

Configured as ``TRAINER = "sample_trainers:train"`` (the tests folder is on the path).
Meta keys: ``action`` (below), ``seconds``, ``record`` (a file that gets one JSON line at each
start and end, written with O_APPEND so concurrent runs never interleave a line), ``until``
(for ``retry_until``: the attempt that succeeds), ``model_bytes`` (the size of the model file
to write, for filling a disk), ``trainer_version`` (a version the trainer reports), ``report``
(a validation pack the trainer returns as it is; ``"champion"`` in it is replaced by what the
trainer was told of its model's champion).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from maia_trainings.trainers import Retry, TrainingContext


def _record(ctx: TrainingContext, event: str) -> None:
    path = ctx.params.get("record")
    if not path:
        return
    line = json.dumps(
        {
            "event": event,
            "id": ctx.training["id"],
            "attempt": ctx.training["attempts"],
            "pid": os.getpid(),
            "t": time.time(),
        }
    )
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def train(ctx: TrainingContext) -> dict:
    params = ctx.params
    action = params.get("action", "ok")
    seconds = float(params.get("seconds", 0))
    _record(ctx, "start")
    print(f"stdout line from training {ctx.training['id']}")
    print(f"stderr line from training {ctx.training['id']}", file=sys.stderr)
    ctx.log(f"action {action}")
    if action == "raise":
        raise ValueError("the data has no target column")
    if action == "exit":
        os._exit(3)
    if action == "sys_exit":
        sys.exit(0)
    if action == "abort":
        os.abort()
    if action == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "retry":
        raise Retry("the data source is unavailable")
    if action == "retry_until" and ctx.training["attempts"] < int(params["until"]):
        raise Retry(f"attempt {ctx.training['attempts']} is too early")
    if action == "write_then_raise":
        ctx.output_path.write_bytes(b"half a model")
        raise RuntimeError("failed while saving")
    if action == "spin":
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            pass
    elif action == "steps":
        steps = int(params.get("steps", 4))
        for step in range(steps):
            time.sleep(seconds / steps)
            ctx.progress((step + 1) / steps)
            ctx.log(f"step {step + 1} of {steps}")
    elif seconds:
        time.sleep(seconds)
    if action == "noisy":
        for n in range(int(params.get("lines", 10000))):
            print(f"noise line {n:06d} " + "x" * 60)
    if params.get("model_bytes"):
        with Path(ctx.output_path).open("wb") as model:
            for _ in range(int(params["model_bytes"]) // 65536 + 1):
                model.write(b"\0" * 65536)
    else:
        Path(ctx.output_path).write_text(json.dumps({"trained": ctx.training["id"]}))
    _record(ctx, "end")
    result = {"accuracy": 0.9, "precission": 0.8, "mae": 0.1, "rmse": 0.2, "metrics": {"auc": 0.7}}
    if params.get("trainer_version"):
        result["version"] = params["trainer_version"]
    if "report" in params:
        report = params["report"]
        if isinstance(report, dict) and "champion" in report:
            report = {**report, "champion": ctx.champion}
        result["report"] = report
    return result
