"""A small built-in trainer: logistic regression on generated loan data, in plain Python.

It stands in until a real scoring trainer is configured, and it is a complete example of the
trainer interface. Parameters (the training's meta, all optional): ``rows`` (2000), ``epochs``
(20), ``seed`` (42), ``learning_rate`` (0.5), ``threshold`` (0.5).
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

from . import TrainingContext

FEATURES = ("income", "debt_ratio", "late_payments")


def _portfolio(rows: int, rng: random.Random) -> list[tuple[list[float], int]]:
    data = []
    for _ in range(rows):
        income = rng.gauss(0, 1)
        debt_ratio = rng.gauss(0, 1)
        late = float(min(rng.expovariate(1.0), 6.0))
        score = -1.2 - 0.8 * income + 0.9 * debt_ratio + 0.6 * late + rng.gauss(0, 0.7)
        data.append(([income, debt_ratio, late], 1 if score > 0 else 0))
    return data


def _probability(weights: list[float], bias: float, x: list[float]) -> float:
    z = bias + sum(w * v for w, v in zip(weights, x, strict=True))
    return 1.0 / (1.0 + math.exp(-max(min(z, 30.0), -30.0)))


def train(ctx: TrainingContext) -> dict[str, Any]:
    params = ctx.params
    rows = max(int(params.get("rows", 2000)), 10)
    epochs = int(params.get("epochs", 20))
    rate = float(params.get("learning_rate", 0.5))
    threshold = float(params.get("threshold", 0.5))
    rng = random.Random(int(params.get("seed", 42)))  # noqa: S311 - synthetic data, not secrets

    data = _portfolio(rows, rng)
    split = int(len(data) * 0.8)
    train_rows, test_rows = data[:split], data[split:]
    ctx.log(f"generated {rows} loans: {split} to train on, {len(test_rows)} to test")

    weights, bias = [0.0] * len(FEATURES), 0.0
    for epoch in range(epochs):
        gradient, gradient_bias = [0.0] * len(FEATURES), 0.0
        for x, y in train_rows:
            error = _probability(weights, bias, x) - y
            gradient = [g + error * v for g, v in zip(gradient, x, strict=True)]
            gradient_bias += error
        weights = [w - rate * g / split for w, g in zip(weights, gradient, strict=True)]
        bias -= rate * gradient_bias / split
        ctx.progress((epoch + 1) / epochs * 0.9)

    probabilities = [_probability(weights, bias, x) for x, _ in test_rows]
    outcomes = [y for _, y in test_rows]
    predicted = [1 if p >= threshold else 0 for p in probabilities]
    true_positive = sum(1 for p, y in zip(predicted, outcomes, strict=True) if p == y == 1)
    flagged = sum(predicted)
    errors = [p - y for p, y in zip(probabilities, outcomes, strict=True)]
    ctx.output_path.write_text(
        json.dumps({"features": FEATURES, "weights": weights, "bias": bias, "threshold": threshold})
    )
    ctx.log("saved the model")
    return {
        "accuracy": sum(1 for p, y in zip(predicted, outcomes, strict=True) if p == y)
        / len(outcomes),
        "precission": true_positive / flagged if flagged else 0.0,
        "mae": sum(abs(e) for e in errors) / len(errors),
        "rmse": math.sqrt(sum(e * e for e in errors) / len(errors)),
        "metrics": {
            "n_train": split,
            "n_test": len(test_rows),
            "positive_rate": sum(outcomes) / len(outcomes),
        },
    }


# The trainer interface's optional attribute (see maia_trainings.trainers).
vars(train)["binary_name"] = "model.json"
