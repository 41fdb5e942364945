"""The validation pack's figures, against scikit-learn, SciPy and hand computations."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from maia_trainings.trainers import validation

JSON_TYPES = (dict, list, str, int, float, bool, type(None))


def scored(rows: int = 2000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes drawn from their scores: a calibrated model with some discrimination."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1.5, 8, rows)
    return (rng.random(rows) < p).astype(int), p


def plain(value: Any) -> bool:
    """Only JSON's own Python types all the way down (np.float64 passes json.dumps, but is
    not what a pack promises)."""
    if type(value) not in JSON_TYPES:
        return False
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


# Discrimination ---------------------------------------------------------------------------


def test_auc_gini_and_brier_are_scikit_learns():
    y, p = scored()
    figures = validation.discrimination(y, p)
    assert figures["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert figures["gini"] == pytest.approx(2 * roc_auc_score(y, p) - 1, abs=1e-12)
    assert figures["brier"] == pytest.approx(brier_score_loss(y, p), abs=1e-12)


def test_ks_on_a_hand_made_example():
    # Bads score 0.3, 0.5, 0.6; goods 0.1, 0.2, 0.4. At or above 0.5: 2/3 of bads, no good.
    y = [0, 0, 1, 0, 1, 1]
    p = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    figures = validation.discrimination(y, p)
    assert figures["ks"] == pytest.approx(2 / 3)
    assert figures["ks_threshold"] == 0.5
    bads = [s for s, bad in zip(p, y, strict=True) if bad]
    goods = [s for s, bad in zip(p, y, strict=True) if not bad]
    assert figures["ks"] == pytest.approx(ks_2samp(bads, goods).statistic)


def test_ks_is_the_two_sample_statistic_on_larger_data_with_ties():
    y, p = scored(3000, seed=11)
    p = np.round(p, 2)  # many ties
    ks = validation.discrimination(y, p)["ks"]
    assert ks == pytest.approx(ks_2samp(p[y == 1], p[y == 0]).statistic, abs=1e-12)


def test_curves_are_bounded_keep_their_ends_and_the_ks_point():
    y, p = scored(20000, seed=5)
    figures = validation.discrimination(y, p)
    roc, ks_curve = figures["roc"], figures["ks_curve"]
    assert len(roc) <= validation.CURVE_POINTS
    assert len(ks_curve) == len(roc)
    assert (roc[0]["fpr"], roc[0]["tpr"], roc[0]["threshold"]) == (0.0, 0.0, None)
    assert (roc[-1]["fpr"], roc[-1]["tpr"]) == (1.0, 1.0)
    assert roc[-1]["threshold"] == pytest.approx(p.min())
    best = max(ks_curve, key=lambda point: point["bad_rate_cum"] - point["good_rate_cum"])
    assert best["bad_rate_cum"] - best["good_rate_cum"] == pytest.approx(figures["ks"])
    assert best["threshold"] == figures["ks_threshold"]
    fprs = [point["fpr"] for point in roc]
    assert fprs == sorted(fprs)


def test_one_class_gives_none_rather_than_raising():
    figures = validation.discrimination([0, 0, 0, 0], [0.1, 0.2, 0.2, 0.4])
    assert figures["auc"] is None
    assert figures["gini"] is None
    assert figures["ks"] is None
    assert figures["roc"] is None
    assert figures["brier"] == pytest.approx(brier_score_loss([0, 0, 0, 0], [0.1, 0.2, 0.2, 0.4]))
    pack = validation.validation_pack([0, 0, 0, 0], [0.1, 0.2, 0.2, 0.4])
    assert all(row["lift"] is None for row in pack["gains"])
    assert plain(pack)
    json.dumps(pack, allow_nan=False)


def test_mismatched_or_non_finite_input_is_refused():
    with pytest.raises(ValueError, match="outcomes but"):
        validation.discrimination([0, 1], [0.5])
    with pytest.raises(ValueError, match="finite"):
        validation.discrimination([0, 1], [0.5, math.nan])
    with pytest.raises(ValueError, match="0 \\(repaid\\)"):
        validation.discrimination([0, 2], [0.5, 0.6])


# Deciles and gains ------------------------------------------------------------------------


def test_deciles_are_equal_groups_numbered_from_the_riskiest():
    groups = validation.deciles(np.arange(100))
    assert np.bincount(groups).tolist() == [0] + [10] * 10
    assert groups[99] == 1
    assert groups[0] == 10


@pytest.mark.parametrize(
    ("scores", "expected_groups"),
    [
        ([0.3] * 50, 1),
        ([0.1] * 70 + [0.9] * 30, 2),
        ([0.1] * 5 + [0.5] * 90 + [0.9] * 5, 2),  # the lowest scores are too few for a cut
        ([0.1] * 20 + [0.5] * 60 + [0.9] * 20, 3),
    ],
)
def test_tied_scores_share_a_group_and_few_distinct_scores_give_fewer_groups(
    scores, expected_groups
):
    array = np.array(scores)
    groups = validation.deciles(array)
    assert len(set(groups.tolist())) == expected_groups
    assert set(groups.tolist()) == set(range(1, expected_groups + 1))
    for score in set(scores):
        assert len(set(groups[array == score].tolist())) == 1


def test_gains_table_adds_up():
    y, p = scored(1003)
    table = validation.gains_table(y, p)
    assert [row["decile"] for row in table] == list(range(1, 11))
    assert sum(row["rows"] for row in table) == len(y)
    assert sum(row["defaults"] for row in table) == y.sum()
    assert table[-1]["cumulative_defaults_share"] == pytest.approx(1.0)
    assert table[-1]["cumulative_rows_share"] == pytest.approx(1.0)
    assert table[-1]["cumulative_lift"] == pytest.approx(1.0)
    # The whole population's lift, each decile weighted by its rows, is 1.
    assert sum(row["lift"] * row["rows"] for row in table) / len(y) == pytest.approx(1.0)
    for riskier, safer in itertools.pairwise(table):
        assert riskier["min_score"] > safer["max_score"]
    assert table[0]["default_rate"] == pytest.approx(y[p >= table[0]["min_score"]].mean())
    assert table[0]["lift"] > 1 > table[-1]["lift"]


# Calibration ------------------------------------------------------------------------------


def test_calibration_compares_predicted_and_observed_by_decile():
    y, p = scored(5000, seed=8)
    figures = validation.calibration(y, p)
    table = figures["deciles"]
    assert sum(row["rows"] for row in table) == len(y)
    assert sum(row["mean_predicted"] * row["rows"] for row in table) == pytest.approx(p.sum())
    assert sum(row["observed_rate"] * row["rows"] for row in table) == pytest.approx(y.sum())


def test_hosmer_lemeshow_matches_the_textbook_formula():
    y, p = scored(1000, seed=4)
    groups = validation.deciles(p)
    statistic = 0.0
    for group in range(1, 11):
        inside = groups == group
        rows, expected, observed = inside.sum(), p[inside].sum(), y[inside].sum()
        statistic += (observed - expected) ** 2 / (expected * (1 - expected / rows))
    figures = validation.hosmer_lemeshow(y, p, groups)
    assert figures["statistic"] == pytest.approx(statistic)
    assert figures["df"] == 8


def test_hosmer_lemeshow_accepts_calibrated_and_rejects_miscalibrated_scores():
    y, p = scored(20000, seed=21)
    calibrated = validation.calibration(y, p)["hosmer_lemeshow"]
    assert calibrated["p_value"] > 0.05
    miscalibrated = validation.calibration(y, p / 2)["hosmer_lemeshow"]
    assert miscalibrated["p_value"] < 1e-6


def test_hosmer_lemeshow_of_a_certain_prediction_proved_wrong_is_none():
    figures = validation.hosmer_lemeshow([1, 0, 0, 1], [0.0, 0.0, 0.5, 0.5], [1, 1, 2, 2])
    assert figures["statistic"] is None
    assert figures["p_value"] is None


# Stability --------------------------------------------------------------------------------


def test_psi_on_known_shares_is_the_hand_computed_value():
    expected = np.repeat(np.arange(10.0), 10)  # ten bins of 10 %
    counts = [20, 20, 10, 10, 10, 10, 5, 5, 5, 5]  # of 100, from the lowest score up
    actual = np.repeat(np.arange(10.0), counts)
    figures = validation.psi(expected, actual)
    # 2 x (0.2 - 0.1) ln 2  +  4 x (0.05 - 0.1) ln 0.5  =  0.4 ln 2
    assert figures["psi"] == pytest.approx(0.4 * math.log(2))
    table = figures["bins"]
    assert [row["actual_share"] for row in table] == [c / 100 for c in reversed(counts)]
    assert all(row["expected_share"] == pytest.approx(0.1) for row in table)
    assert (table[0]["lower"], table[0]["upper"]) == (8.0, None)
    assert (table[-1]["lower"], table[-1]["upper"]) == (None, 0.0)


def test_psi_floors_an_empty_bin():
    expected = np.repeat(np.arange(10.0), 10)
    actual = np.repeat(np.arange(1.0, 10.0), [12, 11, 11, 11, 11, 11, 11, 11, 11])
    figures = validation.psi(expected, actual)
    shares = np.array([0.0, 12, 11, 11, 11, 11, 11, 11, 11, 11]) / 100
    floored = np.maximum(shares, validation.PSI_FLOOR)
    by_hand = np.sum((floored - 0.1) * np.log(floored / 0.1))
    assert figures["psi"] == pytest.approx(by_hand)
    assert figures["bins"][-1]["actual_share"] == 0.0
    assert plain(figures)


def test_psi_against_a_kept_distribution_equals_psi_against_its_scores():
    # A pack keeps only its score_bins; a later model's PSI against them must be the same
    # figure as against the champion's scores themselves.
    _, champion = scored(1000, seed=3)
    _, challenger = scored(700, seed=4)
    kept = json.loads(json.dumps(validation.score_bins(champion)))
    assert len(kept["edges"]) == 9
    assert sum(kept["shares"]) == pytest.approx(1.0)
    assert validation.psi_against(kept, challenger) == validation.psi(champion, challenger)
    assert validation.psi_against({"edges": [], "shares": []}, challenger)["psi"] is None
    assert validation.psi_against({"edges": [0.5], "shares": [1.0]}, challenger)["psi"] is None


def test_identical_distributions_have_no_drift():
    _, p = scored(1000)
    assert validation.psi(p, p)["psi"] == 0.0
    assert validation.psi(p, np.random.default_rng(1).permutation(p))["psi"] == 0.0


# Features ---------------------------------------------------------------------------------


def loan_book(rows: int = 400, seed: int = 2) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.normal(50, 10, rows),
            "debt_ratio": rng.random(rows),
            "noise": rng.normal(0, 1, rows),
            "region": rng.choice(["north", "south", "east"], rows),
        }
    )
    risk = 4 * frame["debt_ratio"] - 0.05 * (frame["income"] - 50) - 2
    return frame, (rng.random(rows) < 1 / (1 + np.exp(-risk))).astype(int)


def prepared(model: Any) -> Pipeline:
    return Pipeline(
        [
            (
                "prepare",
                ColumnTransformer(
                    [
                        ("numbers", StandardScaler(), ["income", "debt_ratio", "noise"]),
                        ("text", OneHotEncoder(sparse_output=False), ["region"]),
                    ]
                ),
            ),
            ("model", model),
        ]
    )


def test_logistic_regression_features_are_ranked_by_absolute_coefficient():
    frame, y = loan_book()
    pipeline = prepared(LogisticRegression()).fit(frame, y)
    figures = validation.top_features(pipeline, list(frame.columns), frame, y)
    assert figures["method"] == "coefficient"
    names = pipeline[:-1].get_feature_names_out().tolist()
    weights = dict(zip(names, pipeline[-1].coef_[0], strict=True))
    listed = figures["features"]
    assert {row["name"] for row in listed} == set(names)
    assert [abs(row["coefficient"]) for row in listed] == sorted(
        (abs(w) for w in weights.values()), reverse=True
    )
    assert all(row["coefficient"] == weights[row["name"]] for row in listed)
    assert listed[0]["name"] == "numbers__debt_ratio"
    assert listed[0]["coefficient"] > 0


def test_top_features_keeps_the_top_n():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 30))
    y = (X[:, 0] + rng.normal(size=200) > 0).astype(int)
    model = LogisticRegression().fit(X, y)
    figures = validation.top_features(model, None, X, y)
    assert len(figures["features"]) == validation.TOP_FEATURES
    assert figures["features"][0]["name"] == "x0"


def test_a_random_forest_uses_permutation_importance():
    frame, y = loan_book()
    pipeline = prepared(RandomForestClassifier(n_estimators=20, random_state=0)).fit(frame, y)
    figures = validation.top_features(pipeline, None, frame, y, random_state=0)
    assert figures["method"] == "permutation"
    assert figures["features"][0]["name"] == "debt_ratio"
    assert {row["name"] for row in figures["features"]} == set(frame.columns)
    importances = [row["importance"] for row in figures["features"]]
    assert importances == sorted(importances, reverse=True)
    again = validation.top_features(pipeline, None, frame, y, random_state=0)
    assert again == figures


# The pack ---------------------------------------------------------------------------------


def test_the_pack_is_plain_json_bounded_and_deterministic():
    frame, y = loan_book(rows=3000)
    pipeline = prepared(LogisticRegression()).fit(frame, y)
    p = pipeline.predict_proba(frame)[:, 1]
    champion = np.clip(p + np.random.default_rng(9).normal(0, 0.05, len(p)), 0, 1)
    pack = validation.validation_pack(
        y, p, champion_scores=champion, model=pipeline, X=frame, feature_names=None
    )
    assert set(pack) == {
        "discrimination",
        "gains",
        "calibration",
        "stability",
        "top_features",
        "score_bins",
    }
    assert plain(pack)
    assert len(json.dumps(pack, allow_nan=False)) < 100_000
    assert pack["stability"]["psi"] > 0
    assert pack["top_features"]["method"] == "coefficient"
    assert pack == validation.validation_pack(
        y, p, champion_scores=champion, model=pipeline, X=frame
    )


def test_an_empty_pack_is_still_plain_json():
    pack = validation.validation_pack([], [], champion_scores=[])
    assert pack["gains"] == []
    assert pack["calibration"]["hosmer_lemeshow"] == {
        "statistic": None,
        "df": None,
        "p_value": None,
    }
    assert pack["stability"]["psi"] is None
    assert plain(pack)


def test_the_pack_without_champion_or_model():
    y, p = scored(500)
    pack = validation.validation_pack(y, p)
    assert pack["stability"] is None
    assert pack["top_features"] is None
    assert plain(pack)
