"""A trainer that does nothing: the benchmark's measure of the service's own cost per training.

Configured as ``MAIA_TRAINER=noop_trainer:train`` with ``bench/`` on ``PYTHONPATH``.
"""

from __future__ import annotations

from typing import Any


def train(ctx: Any) -> dict[str, Any]:
    return {}
