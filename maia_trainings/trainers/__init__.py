"""The trainer interface: what a trainer function is given, what it returns, how it is found.

A trainer is a plain function, named in the ``TRAINER`` setting as ``"package.module:function"``.
The service calls it in a child process as ``train(ctx)`` with a :class:`TrainingContext`, and
it returns a mapping with any of ``accuracy``, ``precission``, ``mae``, ``rmse``, ``version``,
``metrics`` (a dict of further figures) and ``report`` (its validation pack, below). It writes
its model to ``ctx.output_path``; the service then publishes that file, atomically, as the
training's ``binaryPath``.

The ``report`` is a JSON object served as ``GET /trainings/{id}/report``, and drawn as its
page (``trainers.report_page``). The scoring trainer's pack is the reference: the sections
``discrimination``, ``gains``, ``calibration``, ``stability``, ``top_features``,
``score_bins`` and ``reproducibility``, shaped as ``trainers.validation`` makes them. A custom
trainer may return any of them (the page shows what it finds) and sections of its own (shown
in the JSON only). ``ctx.champion`` is the current champion of the training's model when the
run starts (its ``id``, ``version`` and the ``score_bins`` its pack kept, if any), for a
stability index against it. A pack larger than ``REPORT_MAX_BYTES`` as JSON fails the run.

An ordinary exception fails the training at once with its message: it would fail again.
Raise :class:`Retry` for a failure worth another attempt (a database that was briefly away).

A trainer may also have a ``validate(params, settings)`` attribute: it is called when a
training is created, and raises :class:`InvalidParams` to refuse it with a 400.
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ..errors import InvalidParams, Retry
from ..fields import METRICS

__all__ = [
    "InvalidParams",
    "Retry",
    "Trainer",
    "TrainingContext",
    "binary_name",
    "check_result",
    "load_trainer",
    "params_from_meta",
    "trainer_settings",
    "validate_params",
]

# Settings every trainer sees (besides any TRAINER_* ones the operator adds for their own).
TRAINER_SETTINGS = ("DATASETS_DIR", "DATASOURCES", "DEMO_ROWS", "MODELS_DIR")
# Keys of a trainer's result that the service records; anything else is refused.
RESULT_KEYS = frozenset({*(metric.name for metric in METRICS), "version", "metrics", "report"})
# A validation pack is figures and thinned curves, tens of kilobytes; far more is a mistake.
REPORT_MAX_BYTES = 4 * 1024 * 1024


@dataclass
class TrainingContext:
    """What a trainer gets to work with."""

    # The training's meta parsed as a JSON object; {} when meta is not one.
    params: dict[str, Any]
    # The training as the API shows it.
    training: dict[str, Any]
    # Where to write the model file.
    output_path: Path
    # The service's settings a trainer may use (DATASETS_DIR, DATASOURCES, ...).
    settings: Mapping[str, Any]
    _progress: Callable[[float], None] = field(repr=False)
    _log: Callable[[str], None] = field(repr=False)
    # The model's champion when the run started: id, version and its pack's score_bins.
    champion: Mapping[str, Any] | None = None

    def progress(self, fraction: float) -> None:
        """Report how far along the run is, from 0 to 1."""
        self._progress(min(max(float(fraction), 0.0), 1.0))

    def log(self, message: str) -> None:
        """Add a line to the training's log."""
        self._log(str(message))


Trainer = Callable[[TrainingContext], Mapping[str, Any] | None]


@functools.lru_cache(maxsize=16)
def load_trainer(spec: str) -> Trainer:
    """The function named by ``"package.module:function"``, imported once per process."""
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"TRAINER must look like 'package.module:function', not {spec!r}")
    trainer = getattr(importlib.import_module(module_name), function_name, None)
    if not callable(trainer):
        raise ValueError(f"{spec!r} does not name a function")
    return cast(Trainer, trainer)


def params_from_meta(meta: str | None) -> dict[str, Any]:
    """A training's meta as its trainer's parameters: the JSON object it holds, else {}."""
    try:
        params = json.loads(meta) if meta else {}
    except (ValueError, RecursionError):  # free text, or JSON nested past what Python parses
        return {}
    return params if isinstance(params, dict) else {}


def validate_params(trainer: Trainer, params: dict[str, Any], settings: Mapping[str, Any]) -> None:
    """Run the trainer's optional ``validate(params, settings)`` hook, if it has one.

    The API calls it when a training is created or its meta changes, so that bad parameters
    are a 400 then rather than a failed run later; it raises :class:`InvalidParams`.
    """
    hook = getattr(trainer, "validate", None)
    if hook is not None:
        hook(params, settings)


def binary_name(trainer: Trainer) -> str:
    """The file name a trainer's model gets when the client chose no binaryPath."""
    return getattr(trainer, "binary_name", "model.bin")


def check_result(result: Mapping[str, Any] | None) -> dict[str, Any]:
    """A trainer's result, checked: known keys, finite metrics in their ranges."""
    if result is None:
        return {}
    if not isinstance(result, Mapping):
        raise TypeError(f"a trainer must return a mapping, not {type(result).__name__}")
    unknown = set(result) - RESULT_KEYS
    if unknown:
        raise ValueError(f"a trainer's result has unknown keys: {', '.join(sorted(unknown))}")
    checked: dict[str, Any] = {}
    for metric in METRICS:
        name = metric.name
        if result.get(name) is None:
            continue
        try:
            value = float(result[name])
        except (TypeError, ValueError):
            raise ValueError(f"the trainer's {name} is not a number: {result[name]!r}") from None
        if not metric.in_range(value):
            raise ValueError(f"the trainer's {name} is out of range: {value}")
        checked[name] = value
    if result.get("version") is not None:
        checked["version"] = str(result["version"])[:64]
    if result.get("metrics") is not None:
        if not isinstance(result["metrics"], Mapping):
            raise TypeError("the trainer's metrics must be a mapping of names to figures")
        metrics = dict(result["metrics"])
        # Round-trips through JSON, so that what is stored is what is shown.
        checked["metrics"] = json.loads(json.dumps(metrics, allow_nan=False, default=float))
    if result.get("report") is not None:
        checked["report"] = _checked_report(result["report"])
    return checked


def _checked_report(report: Any) -> dict[str, Any]:
    """A trainer's validation pack as the JSON object that will be stored."""
    if not isinstance(report, Mapping):
        raise TypeError("the trainer's report must be a mapping of sections")
    try:
        text = json.dumps(dict(report), allow_nan=False, default=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the trainer's report is not plain JSON: {exc}") from None
    if len(text) > REPORT_MAX_BYTES:
        raise ValueError(
            f"the trainer's report is {len(text):,} bytes as JSON; at most {REPORT_MAX_BYTES:,}"
        )
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def trainer_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a trainer sees: those it is documented to use, and any TRAINER_* ones."""
    return {
        key: value
        for key, value in config.items()
        if key in TRAINER_SETTINGS or (key.startswith("TRAINER_") and key != "TRAINER")
    }
