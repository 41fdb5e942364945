"""The figures of a model validation pack, computed from held-out outcomes and scores.

Pure functions over arrays (``y_true`` 1 = default, ``p_default`` the predicted probability of
default); each returns a JSON-ready dict of plain floats, ints, lists and ``None`` (where a
figure is undefined), never NaN or infinity, so a pack stores and serves as it is. Curves are
thinned to at most ``CURVE_POINTS`` points, so a pack's size does not grow with the test rows.

Score groups ("deciles") are cut at the scores' quantiles and numbered from the riskiest
(decile 1 holds the highest scores). A score equal to a cut point falls below it, so tied
scores always share a group; when scores have few distinct values, cut points coincide and
are merged, so there are fewer than ten groups (two groups for a model that only ever gives
two scores), each holding at least one row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.stats import chi2  # type: ignore[import-untyped]
from sklearn.inspection import permutation_importance
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve

# The most points a stored curve keeps (its end points and the KS maximum among them).
CURVE_POINTS = 200
# The score groups of the gains, calibration and stability tables.
GROUPS = 10
# The share a PSI bin is given when it holds no rows: ln(0) is undefined, and a floor this
# small still makes an emptied bin dominate the index, as it should.
PSI_FLOOR = 1e-6
# The features a pack lists.
TOP_FEATURES = 20
# Shuffles per feature for permutation importance: enough for a ranking, cheap on a test set.
PERMUTATION_REPEATS = 5

Array = npt.NDArray[np.float64]


def _number(value: float) -> float | None:
    """A plain float, or None where a figure came out NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None


def _scores(scores: npt.ArrayLike) -> Array:
    array = np.asarray(scores, dtype=np.float64).ravel()
    if not np.isfinite(array).all():
        raise ValueError("scores must be finite numbers")
    return array


def _outcomes(y_true: npt.ArrayLike, p_default: npt.ArrayLike) -> tuple[Array, Array]:
    """Outcomes (0/1) and scores as float arrays of one length, checked."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    p = _scores(p_default)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} outcomes but {len(p)} scores")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("outcomes must be 0 (repaid) or 1 (defaulted)")
    return y, p


def _both_classes(y: Array) -> bool:
    return bool(y.size) and 0 < y.sum() < y.size


# Discrimination ---------------------------------------------------------------------------


def _thin(size: int, keep: int) -> list[int]:
    """At most CURVE_POINTS indices into a curve of ``size`` points, evenly spread, with both
    ends and ``keep``."""
    if size <= CURVE_POINTS:
        return list(range(size))
    spread = np.linspace(0, size - 1, CURVE_POINTS - 1).round().astype(int)
    return sorted({*spread.tolist(), keep})


def discrimination(y_true: npt.ArrayLike, p_default: npt.ArrayLike) -> dict[str, Any]:
    """AUC, Gini, KS with its curve, the ROC curve, and the Brier score.

    KS is the largest gap between the shares of bads and of goods scoring at or above a
    threshold (``ks_threshold``, the highest where several tie): the two-sample
    Kolmogorov-Smirnov statistic of the bads' scores against the goods'. The curves start at
    the point where no row is flagged, whose threshold (above every score) is None. With one
    class only, AUC, Gini, KS and the curves are None.
    """
    y, p = _outcomes(y_true, p_default)
    brier = _number(brier_score_loss(y, p)) if y.size else None
    if not _both_classes(y):
        return {
            "auc": None,
            "gini": None,
            "ks": None,
            "ks_threshold": None,
            "roc": None,
            "ks_curve": None,
            "brier": brier,
        }
    auc = float(roc_auc_score(y, p))
    # Every distinct score is a threshold, so the KS maximum is exact.
    fpr, tpr, thresholds = roc_curve(y, p, drop_intermediate=False)
    gap = np.abs(tpr - fpr)
    # Of thresholds tied at the maximum (up to rounding), the highest: the fewest rows flagged.
    best = int(np.argmax(gap >= gap.max() - 1e-12))
    points = _thin(len(thresholds), best)
    threshold = [_number(t) for t in thresholds]
    return {
        "auc": auc,
        "gini": 2 * auc - 1,
        "ks": float(gap[best]),
        "ks_threshold": threshold[best],
        "roc": [
            {"fpr": float(fpr[i]), "tpr": float(tpr[i]), "threshold": threshold[i]} for i in points
        ],
        "ks_curve": [
            {
                "threshold": threshold[i],
                "bad_rate_cum": float(tpr[i]),
                "good_rate_cum": float(fpr[i]),
            }
            for i in points
        ],
        "brier": brier,
    }


# Score groups -----------------------------------------------------------------------------


def decile_edges(scores: npt.ArrayLike, n: int = GROUPS) -> list[float]:
    """The cut points between ``n`` groups of ``scores`` of (nearly) equal size, ascending.

    Each cut point is a score itself (the ``inverted_cdf`` quantile, not an interpolation),
    so no group between two cut points is empty; cut points that coincide are merged, and one
    at the highest score is dropped, as it would leave the top group empty.
    """
    array = _scores(scores)
    if array.size == 0 or n < 2:
        return []
    cuts = np.unique(np.quantile(array, np.arange(1, n) / n, method="inverted_cdf"))
    return [float(cut) for cut in cuts if cut < array.max()]


def _group_of(scores: Array, edges: Sequence[float]) -> npt.NDArray[np.int64]:
    """Each score's group, 1 for the riskiest: a score equal to a cut point falls below it."""
    ascending = np.searchsorted(np.asarray(edges, dtype=np.float64), scores, side="left")
    return np.asarray(len(edges) + 1 - ascending, dtype=np.int64)


def deciles(p_default: npt.ArrayLike, n: int = GROUPS) -> npt.NDArray[np.int64]:
    """Each row's score group, 1 (riskiest) to at most ``n``; see the module's docstring."""
    p = _scores(p_default)
    return _group_of(p, decile_edges(p, n))


def gains_table(y_true: npt.ArrayLike, p_default: npt.ArrayLike) -> list[dict[str, Any]]:
    """Rows, defaults and lift by score decile, from the riskiest.

    ``cumulative_defaults_share`` is the share of all defaults found in this decile and the
    riskier ones; ``lift`` is the decile's default rate over the whole population's, and
    ``cumulative_lift`` the same for this decile and the riskier ones (1 at the last). Both
    are None when there is no default at all.
    """
    y, p = _outcomes(y_true, p_default)
    group = deciles(p)
    overall = float(y.mean()) if y.size else 0.0
    total_defaults = int(y.sum())
    table = []
    rows_so_far = defaults_so_far = 0
    for decile in range(1, int(group.max(initial=0)) + 1):
        inside = group == decile
        rows, defaults = int(inside.sum()), int(y[inside].sum())
        rows_so_far += rows
        defaults_so_far += defaults
        rate = defaults / rows
        table.append(
            {
                "decile": decile,
                "min_score": float(p[inside].min()),
                "max_score": float(p[inside].max()),
                "rows": rows,
                "defaults": defaults,
                "default_rate": rate,
                "cumulative_rows_share": rows_so_far / y.size,
                "cumulative_defaults_share": (
                    defaults_so_far / total_defaults if total_defaults else None
                ),
                "lift": rate / overall if overall else None,
                "cumulative_lift": (defaults_so_far / rows_so_far) / overall if overall else None,
            }
        )
    return table


# Calibration ------------------------------------------------------------------------------


def hosmer_lemeshow(
    y_true: npt.ArrayLike, p_default: npt.ArrayLike, groups: npt.ArrayLike
) -> dict[str, Any]:
    """The Hosmer-Lemeshow statistic over ``groups`` (a group number per row), with
    ``df = groups - 2`` and its chi-squared p-value.

    A group predicted with certainty (mean 0 or 1) adds nothing when the outcomes agree; when
    they do not, the statistic is infinite and reported as None. With fewer than three groups
    there is no degree of freedom left: ``df`` and the p-value are None.
    """
    y, p = _outcomes(y_true, p_default)
    group = np.asarray(groups).ravel()
    statistic = 0.0
    labels = np.unique(group)
    for label in labels:
        inside = group == label
        rows = int(inside.sum())
        expected = p[inside].sum()
        observed = y[inside].sum()
        variance = expected * (1 - expected / rows)
        if variance > 0:
            statistic += (observed - expected) ** 2 / variance
        elif not math.isclose(observed, expected, abs_tol=1e-9):
            statistic = math.inf
    df = len(labels) - 2
    finite = _number(statistic) if len(labels) else None
    return {
        "statistic": finite,
        "df": df if df > 0 else None,
        "p_value": _number(chi2.sf(finite, df)) if finite is not None and df > 0 else None,
    }


def calibration(y_true: npt.ArrayLike, p_default: npt.ArrayLike) -> dict[str, Any]:
    """Mean predicted probability against observed default rate by score decile (from the
    riskiest), and the Hosmer-Lemeshow test over those deciles."""
    y, p = _outcomes(y_true, p_default)
    group = deciles(p)
    table = []
    for decile in range(1, int(group.max(initial=0)) + 1):
        inside = group == decile
        table.append(
            {
                "decile": decile,
                "rows": int(inside.sum()),
                "mean_predicted": float(p[inside].mean()),
                "observed_rate": float(y[inside].mean()),
            }
        )
    return {"deciles": table, "hosmer_lemeshow": hosmer_lemeshow(y, p, group)}


# Stability --------------------------------------------------------------------------------


def score_bins(scores: npt.ArrayLike, bins: int = GROUPS) -> dict[str, Any]:
    """The decile cut points of ``scores`` and each group's share, from the riskiest: what a
    pack keeps of its score distribution, so that a later model's PSI can be measured
    against it without the rows."""
    array = _scores(scores)
    edges = decile_edges(array, bins)
    if array.size == 0:
        return {"edges": [], "shares": []}
    counts = np.bincount(_group_of(array, edges), minlength=len(edges) + 2)[1:]
    return {"edges": edges, "shares": [float(share) for share in counts / array.size]}


def psi(
    expected_scores: npt.ArrayLike, actual_scores: npt.ArrayLike, bins: int = GROUPS
) -> dict[str, Any]:
    """The population stability index of ``actual_scores`` against ``expected_scores`` (the
    champion's), over bins cut at the expected scores' deciles, from the riskiest.

    PSI = Σ (actual share - expected share) · ln(actual share / expected share), each share
    floored at PSI_FLOOR; the table shows the shares as they are. None when either side has
    no scores. A champion whose scores are all one value gives one bin, and a PSI of 0.
    """
    return psi_against(score_bins(expected_scores, bins), actual_scores)


def psi_against(expected: Mapping[str, Any], actual_scores: npt.ArrayLike) -> dict[str, Any]:
    """The PSI of ``actual_scores`` against a distribution kept by :func:`score_bins`."""
    actual = _scores(actual_scores)
    edges = [float(edge) for edge in expected.get("edges") or []]
    shares = [float(share) for share in expected.get("shares") or []]
    if not shares or len(shares) != len(edges) + 1 or actual.size == 0:
        return {"psi": None, "bins": []}
    count = len(shares)
    expected_share = np.asarray(shares, dtype=np.float64)
    actual_share = np.bincount(_group_of(actual, edges), minlength=count + 1)[1:] / len(actual)
    floored_e = np.maximum(expected_share, PSI_FLOOR)
    floored_a = np.maximum(actual_share, PSI_FLOOR)
    contribution = (floored_a - floored_e) * np.log(floored_a / floored_e)
    # Group 1 lies above the highest cut point; group k between cut points k and k - 1.
    bounds: list[float | None] = [None, *reversed(edges), None]
    table = [
        {
            "bin": i + 1,
            "lower": bounds[i + 1],
            "upper": bounds[i],
            "expected_share": float(expected_share[i]),
            "actual_share": float(actual_share[i]),
            "contribution": float(contribution[i]),
        }
        for i in range(count)
    ]
    return {"psi": float(contribution.sum()), "bins": table}


# Features ---------------------------------------------------------------------------------


def _final_step(model: Any) -> tuple[Any, list[str] | None]:
    """The estimator at the end of a pipeline (or the model itself), and the names of the
    columns it sees, when the steps before it can tell."""
    steps = getattr(model, "steps", None)
    if not steps:
        return model, None
    preparation = model[:-1]
    try:
        names = [str(name) for name in preparation.get_feature_names_out()]
    except (AttributeError, ValueError, TypeError):  # a step that cannot name its output
        names = None
    return model[-1], names


def top_features(
    model: Any,
    feature_names: Sequence[str] | None,
    X: Any,
    y: npt.ArrayLike | None,
    *,
    n: int = TOP_FEATURES,
    random_state: int = 0,
) -> dict[str, Any] | None:
    """The ``n`` most important features of a fitted model or pipeline.

    A linear model (one with ``coef_``) is ranked by the absolute value of its coefficients,
    sign kept, named by the pipeline's ``get_feature_names_out()`` (so one-hot columns show
    one by one; behind a scaler, coefficients are per standard deviation and comparable).
    Any other model is ranked by permutation importance on ``X`` and ``y`` (the held-out
    rows, as given to the pipeline), as the fall in ROC AUC when a column is shuffled: what a
    credit score is judged by. None when that cannot be measured (one class only).
    """
    estimator, prepared_names = _final_step(model)
    coefficients = getattr(estimator, "coef_", None)
    # A binary classifier's coefficients are one row; several rows (one per class) have no
    # single ranking, so such a model is measured like any other.
    if coefficients is not None and np.ndim(coefficients) == 2 and len(coefficients) == 1:
        weights = np.asarray(coefficients, dtype=np.float64)[0]
        names = _names(prepared_names or feature_names, X, len(weights))
        order = np.argsort(-np.abs(weights), kind="stable")[:n]
        return {
            "method": "coefficient",
            "features": [{"name": names[i], "coefficient": float(weights[i])} for i in order],
        }
    if X is None or y is None:
        raise ValueError("permutation importance needs the held-out rows and outcomes")
    outcomes = np.asarray(y).ravel()
    if len(np.unique(outcomes)) < 2:
        return None
    result = permutation_importance(
        model,
        X,
        outcomes,
        scoring="roc_auc",
        n_repeats=PERMUTATION_REPEATS,
        random_state=random_state,
    )
    means = np.asarray(result.importances_mean, dtype=np.float64)
    spread = np.asarray(result.importances_std, dtype=np.float64)
    names = _names(feature_names, X, len(means))
    order = np.argsort(-means, kind="stable")[:n]
    return {
        "method": "permutation",
        "features": [
            {
                "name": names[i],
                "importance": float(means[i]),
                "importance_std": float(spread[i]),
            }
            for i in order
        ],
    }


def _names(feature_names: Sequence[str] | None, X: Any, count: int) -> list[str]:
    """Names for ``count`` columns: those given, else a data frame's, else x0, x1, …"""
    for names in (feature_names, getattr(X, "columns", None)):
        if names is not None and len(names) == count:
            return [str(name) for name in names]
    return [f"x{i}" for i in range(count)]


# The pack ---------------------------------------------------------------------------------


def validation_pack(
    y_true: npt.ArrayLike,
    p_default: npt.ArrayLike,
    *,
    champion_scores: npt.ArrayLike | None = None,
    champion_bins: Mapping[str, Any] | None = None,
    model: Any = None,
    feature_names: Sequence[str] | None = None,
    X: Any = None,
    random_state: int = 0,
) -> dict[str, Any]:
    """Every figure of the pack for one model's held-out rows.

    ``stability`` is the PSI of these scores against the current champion's, as its own pack
    saw them: its ``champion_scores``, or the ``score_bins`` its pack kept (``champion_bins``);
    None without a champion. ``top_features`` is None without a ``model``. ``score_bins``
    keeps this model's score distribution for the packs of the models that follow it.
    """
    y, p = _outcomes(y_true, p_default)
    if champion_bins is None and champion_scores is not None:
        champion_bins = score_bins(champion_scores)
    return {
        "discrimination": discrimination(y, p),
        "gains": gains_table(y, p),
        "calibration": calibration(y, p),
        "stability": None if champion_bins is None else psi_against(champion_bins, p),
        "top_features": (
            None
            if model is None
            else top_features(model, feature_names, X, y, random_state=random_state)
        ),
        "score_bins": score_bins(p),
    }
