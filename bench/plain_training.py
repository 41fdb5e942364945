"""The built-in trainer's work as a plain script: the yardstick of the service's training overhead.

    python bench/plain_training.py DATASET.csv OUT.skops            # just train
    python bench/plain_training.py --measure DATASET.csv OUT.skops  # train in a child, measured

It does what ``maia_trainings.trainers.scoring`` does for ``{"dataset": "loans.csv"}``, written
out without the service: ``pandas.read_csv`` (numbers as 64-bit floats, text as categories, as
the trainer keeps them), the same pipeline as ``scoring.build_pipeline`` (median imputation and
scaling of numbers, one-hot encoding of text, ``LogisticRegression(max_iter=1000)``), a
stratified 80/20 split with seed 42, fit, evaluation (accuracy, precision, MAE, RMSE, ROC AUC)
and ``skops.io.dump``. It prints one JSON object: the figures, the rows, and ``work_s``, the
time from reading the file to the saved model (imports and interpreter start excluded).

With ``--measure`` it runs itself as its only child process and adds ``wall_s`` (the child's
whole life, interpreter start and imports included) and ``peak_mb``, the child's peak resident
memory from ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss``: with one child, exactly its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

TARGET = "defaulted"
SEED = 42


def train(dataset: str, out: str) -> dict[str, object]:
    began = time.perf_counter()
    import numpy as np
    import pandas as pd
    import skops.io
    from sklearn import metrics
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    imported = time.perf_counter()
    frame = pd.read_csv(dataset)
    for column in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].astype(np.float64)
        else:
            frame[column] = frame[column].astype("category")
    outcome = (frame[TARGET].to_numpy() == 1.0).astype(np.int8)
    data = frame.drop(columns=[TARGET])
    del frame
    loaded = time.perf_counter()

    numeric = [c for c in data.columns if pd.api.types.is_numeric_dtype(data[c])]
    text = [c for c in data.columns if c not in numeric]
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
    pipeline = Pipeline([("prepare", prepare), ("model", LogisticRegression(max_iter=1000))])
    train_x, test_x, train_y, test_y = train_test_split(
        data, outcome, test_size=0.2, stratify=outcome, random_state=SEED
    )
    pipeline.fit(train_x, train_y)
    fitted = time.perf_counter()

    probability = pipeline.predict_proba(test_x)[:, 1]
    predicted = (probability >= 0.5).astype(int)
    errors = probability - test_y
    figures = {
        "accuracy": float(metrics.accuracy_score(test_y, predicted)),
        "precission": float(metrics.precision_score(test_y, predicted, zero_division=0)),
        "mae": float(np.mean(np.abs(errors))),
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "roc_auc": float(metrics.roc_auc_score(test_y, probability)),
    }
    skops.io.dump(pipeline, out)
    done = time.perf_counter()
    return {
        **figures,
        "rows": len(data),
        "import_s": imported - began,
        "load_s": loaded - imported,
        "fit_s": fitted - loaded,
        "work_s": done - imported,
    }


def measure(dataset: str, out: str) -> dict[str, object]:
    began = time.perf_counter()
    child = subprocess.run(
        [sys.executable, __file__, dataset, out],
        capture_output=True,
        text=True,
        timeout=3600,
        check=True,
    )
    wall = time.perf_counter() - began
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = json.loads(child.stdout.strip().splitlines()[-1])
    result.update(wall_s=wall, peak_mb=usage.ru_maxrss / 1024)  # kilobytes on Linux
    return result


def main(argv: list[str]) -> int:
    if argv[:1] == ["--measure"] and len(argv) == 3:
        print(json.dumps(measure(argv[1], argv[2])))
        return 0
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(train(argv[0], argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
