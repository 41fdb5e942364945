"""The built-in credit-scoring trainer: a scikit-learn pipeline fitted on a loan book.

Parameters are the training's meta (a JSON object; every key optional):

- ``dataset``: a CSV file name inside ``DATASETS_DIR``, or ``{"datasource": NAME, "query":
  "SELECT …"}`` naming a database the operator listed in ``DATASOURCES``; absent, the built-in
  demo portfolio (``DEMO_ROWS`` generated loans).
- ``target`` (``defaulted``), ``features`` (every other column), ``positive`` (the value of the
  target that means default, when the target is text and that is not obvious).
- ``model``: ``logistic_regression`` (default), ``gradient_boosting`` (scikit-learn's
  histogram-based gradient boosting), ``random_forest``; ``params``: its hyper-parameters.
- ``test_size`` (0.2), ``seed`` (42), ``threshold`` (0.5), ``max_runtime`` (seconds).

Everything that shapes the data lives in one ``Pipeline`` (imputation, scaling, one-hot
encoding, the model), so the saved artifact scores raw rows. It is saved with skops, a format
that loads without running arbitrary code.

Every run returns its validation pack (``trainers.validation``) as its ``report``, computed on
the held-out rows: the reference pack of the trainer interface. Permutation importance (for
models without coefficients) is measured on at most ``IMPORTANCE_ROWS`` of those rows, drawn
with the seed, so that a large test set does not multiply the run's time.
"""

from __future__ import annotations

import inspect
import math
import platform
import time
from collections.abc import Iterable, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io
from sklearn import metrics as skm
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ..errors import PathOutside
from ..paths import resolve_inside
from . import InvalidParams, TrainingContext, portfolio, validation
from .datasets import Dataset, encode_target, load_dataset

MODELS: dict[str, type] = {
    "logistic_regression": LogisticRegression,
    "gradient_boosting": HistGradientBoostingClassifier,
    "random_forest": RandomForestClassifier,
}
# Our defaults where scikit-learn's would disappoint on a loan book.
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "logistic_regression": {"max_iter": 1000},
    "random_forest": {"n_estimators": 100, "min_samples_leaf": 5},
}
PARAMETERS = frozenset(
    {
        "dataset",
        "target",
        "features",
        "positive",
        "model",
        "params",
        "test_size",
        "seed",
        "threshold",
        "max_runtime",
    }
)
SQL_STARTS = ("select", "with")
# What a saved pipeline is made of; skops asks before loading any other type.
TRUSTED_MODULES = ("sklearn.", "numpy.", "builtins.")
# The held-out rows permutation importance shuffles, at most: a ranking needs no more.
IMPORTANCE_ROWS = 2_000
# The libraries whose versions decide what a run computes (the reproducibility record).
RECORDED_PACKAGES = ("scikit-learn", "numpy", "pandas", "scipy", "skops", "maia-trainings")
TRAINER_NAME = f"{__name__}:train"


# Validation at creation ----------------------------------------------------------------------


def _number(value: Any) -> bool:
    """A JSON number: an int of any size, or a finite float; not a bool."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def validate(params: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
    """Check the parameters before the training is queued; InvalidParams names each problem."""
    errors: dict[str, list[str]] = {}

    def problem(key: str, message: str) -> None:
        errors.setdefault(key, []).append(message)

    for key in sorted(set(params) - PARAMETERS):
        problem(key, f"Unknown parameter; use any of {', '.join(sorted(PARAMETERS))}.")
    if "dataset" in params:
        for message in _dataset_problems(params["dataset"], settings):
            problem("dataset", message)
    target = params.get("target", portfolio.TARGET)
    if not isinstance(target, str) or not target:
        problem("target", "Must be a column name.")
    features = params.get("features")
    if features is not None:
        if not (
            isinstance(features, list)
            and features
            and all(isinstance(f, str) and f for f in features)
        ):
            problem("features", "Must be a non-empty list of column names.")
        elif len(set(features)) != len(features) or target in features:
            problem("features", "Must name each column once, and not the target.")
    model = params.get("model", "logistic_regression")
    if not isinstance(model, str) or model not in MODELS:
        problem("model", f"Must be one of {', '.join(MODELS)}.")
    elif "params" in params:
        for message in _hyperparameter_problems(model, params["params"]):
            problem("params", message)
    if "test_size" in params and not (_number(params["test_size"]) and 0 < params["test_size"] < 1):
        problem("test_size", "Must be a number between 0 and 1.")
    if "seed" in params and not (
        isinstance(params["seed"], int)
        and not isinstance(params["seed"], bool)
        and 0 <= params["seed"] < 2**32
    ):
        problem("seed", "Must be a whole number from 0 to 2**32 - 1.")
    if "threshold" in params and not (_number(params["threshold"]) and 0 < params["threshold"] < 1):
        problem("threshold", "Must be a number between 0 and 1.")
    if "max_runtime" in params and not (
        _number(params["max_runtime"]) and params["max_runtime"] > 0
    ):
        problem("max_runtime", "Must be a positive number of seconds.")
    if "positive" in params and not isinstance(params["positive"], str | int):
        problem("positive", "Must be the target's value that means default.")
    if errors:
        raise InvalidParams(errors)


def _dataset_problems(dataset: Any, settings: Mapping[str, Any]) -> Iterable[str]:
    if isinstance(dataset, str):
        try:
            path = resolve_inside(Path(settings["DATASETS_DIR"]), dataset)
        except PathOutside as exc:
            yield f"{exc} (a CSV file name inside the datasets folder)"
            return
        try:
            found = path.is_file()
        except OSError:  # a name the file system cannot hold
            found = False
        if not found:
            yield f"No dataset named {dataset!r} in the datasets folder."
        return
    if not isinstance(dataset, Mapping) or set(dataset) != {"datasource", "query"}:
        yield 'Must be a CSV file name or {"datasource": NAME, "query": "SELECT ..."}.'
        return
    datasources = settings.get("DATASOURCES") or {}
    if not isinstance(dataset["datasource"], str) or dataset["datasource"] not in datasources:
        names = ", ".join(sorted(datasources)) or "none are configured"
        yield f"Unknown datasource {dataset['datasource']!r} ({names})."
    query = dataset["query"]
    if not isinstance(query, str) or not query.strip().lower().startswith(SQL_STARTS):
        yield "The query must be one SELECT statement."
    elif ";" in query.strip().rstrip(";"):
        yield "The query must be one statement."


def _hyperparameter_problems(model: str, hyperparameters: Any) -> Iterable[str]:
    if not isinstance(hyperparameters, Mapping):
        yield "Must be an object of the model's hyper-parameters."
        return
    estimator_class = MODELS[model]
    accepted = set(inspect.signature(estimator_class).parameters)
    unknown = sorted(set(hyperparameters) - accepted)
    if unknown:
        yield f"Unknown for {model}: {', '.join(unknown)}."
        return
    try:
        # scikit-learn checks types and ranges itself, as fit would.
        estimator_class(**hyperparameters)._validate_params()
    except (TypeError, ValueError) as exc:
        yield str(exc)


# Training --------------------------------------------------------------------------------


def build_pipeline(
    frame: pd.DataFrame, model: str, hyperparameters: Mapping[str, Any], seed: int
) -> Pipeline:
    """Imputation, scaling and one-hot encoding in front of the model, as one pipeline."""
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    text = [c for c in frame.columns if c not in numeric]
    prepare = ColumnTransformer(
        [
            ("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            (
                "text",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value="missing"),
                    OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                ),
                text,
            ),
        ],
        sparse_threshold=0.0,
    )
    options = {**MODEL_DEFAULTS.get(model, {}), **hyperparameters}
    estimator_class = MODELS[model]
    if "random_state" in inspect.signature(estimator_class).parameters:
        options.setdefault("random_state", seed)
    return Pipeline([("prepare", prepare), ("model", estimator_class(**options))])


def score_metrics(outcome: np.ndarray, probability: np.ndarray, threshold: float) -> dict[str, Any]:
    """The figures reported for a model's test part (``outcome`` 0/1, 1 = default)."""
    predicted = (probability >= threshold).astype(int)
    errors = probability - outcome
    auc = float(skm.roc_auc_score(outcome, probability))
    false_rate, true_rate, _ = skm.roc_curve(outcome, probability)
    return {
        "accuracy": float(skm.accuracy_score(outcome, predicted)),
        "precission": float(skm.precision_score(outcome, predicted, zero_division=0)),
        "mae": float(np.mean(np.abs(errors))),
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "metrics": {
            "roc_auc": auc,
            "gini": 2 * auc - 1,
            "ks": float(np.max(true_rate - false_rate)),
            "recall": float(skm.recall_score(outcome, predicted, zero_division=0)),
            "f1": float(skm.f1_score(outcome, predicted, zero_division=0)),
            "brier": float(skm.brier_score_loss(outcome, probability)),
        },
    }


class _Steps:
    """Progress in steps, with each step's duration in the log."""

    def __init__(self, ctx: TrainingContext) -> None:
        self.ctx = ctx
        self.started = time.monotonic()

    def done(self, what: str, progress: float) -> None:
        now = time.monotonic()
        self.ctx.log(f"{what} in {now - self.started:.2f} s")
        self.ctx.progress(progress)
        self.started = now


def train(ctx: TrainingContext) -> dict[str, Any]:
    params = ctx.params
    validate(params, ctx.settings)
    target = params.get("target", portfolio.TARGET)
    model = params.get("model", "logistic_regression")
    seed = int(params.get("seed", 42))
    threshold = float(params.get("threshold", 0.5))
    steps = _Steps(ctx)

    ctx.progress(0.01)
    dataset = load_dataset(params, ctx.settings)
    frame, source = dataset.frame, dataset.source
    features = params.get("features") or [c for c in frame.columns if c != target]
    missing = [c for c in [target, *features] if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{source} has no column {', '.join(map(repr, missing))}; "
            f"its columns are {', '.join(frame.columns)}"
        )
    known = frame[target].notna().to_numpy()
    if not known.all():
        ctx.log(f"left out {int((~known).sum())} rows without a {target}")
        frame = frame[known]
    outcome, positive = encode_target(frame[target], params.get("positive"))
    data = frame[features]
    del frame
    ctx.log(
        f"loaded {len(data)} rows and {len(features)} feature columns from {source}; "
        f"{int(outcome.sum())} defaults ({outcome.mean():.1%}, {target} = {positive!r})"
    )
    steps.done("loading", 0.3)

    train_x, test_x, train_y, test_y = train_test_split(
        data,
        outcome,
        test_size=float(params.get("test_size", 0.2)),
        stratify=outcome,
        random_state=seed,
    )
    pipeline = build_pipeline(data, model, params.get("params", {}), seed)
    pipeline.fit(train_x, train_y)
    steps.done(f"fitting {model} on {len(train_x)} rows", 0.8)

    probability = pipeline.predict_proba(test_x)[:, 1]
    result = score_metrics(np.asarray(test_y), probability, threshold)
    result["metrics"].update(
        n_train=len(train_x), n_test=len(test_x), positive_rate=float(outcome.mean())
    )
    steps.done(
        f"evaluating on {len(test_x)} rows (ROC AUC {result['metrics']['roc_auc']:.3f})", 0.9
    )

    result["report"] = validation_report(
        ctx, pipeline, test_x, np.asarray(test_y), probability, dataset, features=features
    )
    stability = result["report"]["stability"]
    steps.done(
        "the validation pack"
        + (
            f" (PSI {stability['psi']:.4f} against the champion)"
            if stability and stability["psi"] is not None
            else ""
        ),
        0.95,
    )

    skops.io.dump(pipeline, ctx.output_path)
    steps.done(f"saving the model ({ctx.output_path.stat().st_size} bytes)", 1.0)
    return result


def validation_report(
    ctx: TrainingContext,
    pipeline: Pipeline,
    test_x: pd.DataFrame,
    test_y: np.ndarray,
    probability: np.ndarray,
    dataset: Dataset,
    *,
    features: list[str],
) -> dict[str, Any]:
    """The run's validation pack, with its reproducibility record."""
    params = ctx.params
    seed = int(params.get("seed", 42))
    champion = ctx.champion or {}
    pack = validation.validation_pack(test_y, probability, champion_bins=champion.get("score_bins"))
    if pack["stability"] is not None:
        pack["stability"].update(champion_id=champion.get("id"), champion=champion.get("version"))
    if len(test_x) > IMPORTANCE_ROWS:
        chosen = np.random.default_rng(seed).choice(len(test_x), IMPORTANCE_ROWS, replace=False)
        test_x, test_y = test_x.iloc[np.sort(chosen)], test_y[np.sort(chosen)]
    pack["top_features"] = validation.top_features(
        pipeline, features, test_x, test_y, random_state=seed
    )
    model = params.get("model", "logistic_regression")
    pack["reproducibility"] = {
        "trainer": TRAINER_NAME,
        "dataset": dataset.provenance,
        "parameters": params,
        "model": model,
        "hyperparameters": pipeline.named_steps["model"].get_params(),
        "seed": seed,
        "test_size": float(params.get("test_size", 0.2)),
        "test_rows": len(probability),
        "versions": {"python": platform.python_version(), **_versions(RECORDED_PACKAGES)},
    }
    return pack


def _versions(packages: Iterable[str]) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def load_model(path: Path | str) -> Pipeline:
    """Load a model this trainer saved; types from outside scikit-learn and NumPy are refused."""
    untrusted = skops.io.get_untrusted_types(file=path)
    foreign = [name for name in untrusted if not name.startswith(TRUSTED_MODULES)]
    if foreign:
        raise ValueError(f"the file holds types this trainer never saves: {', '.join(foreign)}")
    return skops.io.load(path, trusted=untrusted)


# The trainer interface's optional attributes (see maia_trainings.trainers).
vars(train).update(validate=validate, binary_name="model.skops")
