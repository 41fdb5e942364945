"""Trainers that return what the service must refuse (``TRAINER = "bad_trainers:<name>"``)."""

from __future__ import annotations

import math


def unknown_key(ctx):
    ctx.output_path.write_text("model")
    return {"accuracy": 0.5, "loss": 0.3}


def accuracy_above_one(ctx):
    return {"accuracy": 1.5}


def negative_precission(ctx):
    return {"precission": -0.1}


def negative_mae(ctx):
    return {"mae": -1}


def infinite_rmse(ctx):
    return {"rmse": math.inf}


def nan_accuracy(ctx):
    return {"accuracy": math.nan}


def not_a_mapping(ctx):
    return [("accuracy", 0.5)]


def metrics_not_an_object(ctx):
    return {"accuracy": 0.5, "metrics": [0.1, 0.2]}


def non_numeric_mae(ctx):
    return {"mae": "low"}
