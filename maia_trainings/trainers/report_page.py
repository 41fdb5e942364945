"""A validation pack as one self-contained, printable HTML page: tables and inline SVG charts.

The page is made when the training runs, from the pack's figures alone (``validation``), so a
validator can attach it to the model file: no script, no font, no image and no request to any
other host; the four charts (ROC, KS, calibration, gains) are SVG drawn here. Every text that
comes from outside (names, the trainer's facts) is escaped by Jinja's autoescape.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import Environment
from markupsafe import Markup

# The plot area of every chart, in SVG user units, inside its margins.
WIDTH, HEIGHT = 300, 220
LEFT, TOP, RIGHT, BOTTOM = 44, 12, 12, 40
COLOURS = ("#1f5f9f", "#c0392b", "#7f8c8d")


@dataclass(frozen=True)
class Series:
    """One line of a chart: its name and its points, both coordinates in [0, 1]."""

    name: str
    points: Sequence[tuple[float, float]]
    dashed: bool = False


def _x(value: float) -> float:
    return round(LEFT + max(0.0, min(1.0, value)) * WIDTH, 2)


def _y(value: float) -> float:
    return round(TOP + (1 - max(0.0, min(1.0, value))) * HEIGHT, 2)


def chart(
    title: str,
    x_label: str,
    y_label: str,
    series: Sequence[Series],
    *,
    legend_top: bool = False,
) -> Markup:
    """A line chart on [0, 1] x [0, 1] as an inline SVG element; its legend in the right-hand
    corner its lines leave empty: the bottom one (rising curves), or the top (``legend_top``,
    falling ones)."""
    environment = _environment()
    # Safe to mark: every value went through the autoescaping template.
    return Markup(  # noqa: S704
        environment.from_string(_CHART).render(
            title=title,
            x_label=x_label,
            y_label=y_label,
            lines=[
                {
                    "name": line.name,
                    "path": " ".join(f"{_x(x)},{_y(y)}" for x, y in line.points),
                    "colour": COLOURS[index % len(COLOURS)],
                    "dashed": line.dashed,
                }
                for index, line in enumerate(series)
            ],
            ticks=[(_x(t), _y(t), f"{t:.1f}") for t in (0.0, 0.25, 0.5, 0.75, 1.0)],
            width=LEFT + WIDTH + RIGHT,
            height=TOP + HEIGHT + BOTTOM,
            left=LEFT,
            top=TOP,
            right=LEFT + WIDTH,
            bottom=TOP + HEIGHT,
            legend_y=[
                TOP + 14 + index * 12
                if legend_top
                else TOP + HEIGHT - 8 - (len(series) - 1 - index) * 12
                for index in range(len(series))
            ],
        )
    )


_DIAGONAL = Series("chance", [(0.0, 0.0), (1.0, 1.0)], dashed=True)


def _points(rows: Sequence[Mapping[str, Any]] | None, x: str, y: str) -> list[tuple[float, float]]:
    return [
        (float(row[x]), float(row[y]))
        for row in rows or ()
        if row.get(x) is not None and row.get(y) is not None
    ]


def charts(pack: Mapping[str, Any]) -> dict[str, Markup]:
    """The four charts of a pack: ROC, KS, calibration and gains."""
    discrimination = pack.get("discrimination") or {}
    calibration = pack.get("calibration") or {}
    gains = pack.get("gains") or []
    cumulative = [(0.0, 0.0), *_points(gains, "cumulative_rows_share", "cumulative_defaults_share")]
    return {
        "roc": chart(
            "ROC curve",
            "false positive rate",
            "true positive rate",
            [Series("model", _points(discrimination.get("roc"), "fpr", "tpr")), _DIAGONAL],
        ),
        "ks": chart(
            "KS: cumulative shares by score",
            "score (probability of default)",
            "cumulative share",
            legend_top=True,
            series=[
                Series(
                    "bads", _points(discrimination.get("ks_curve"), "threshold", "bad_rate_cum")
                ),
                Series(
                    "goods", _points(discrimination.get("ks_curve"), "threshold", "good_rate_cum")
                ),
            ],
        ),
        "calibration": chart(
            "Calibration by decile",
            "mean predicted probability",
            "observed default rate",
            [
                Series(
                    "deciles",
                    _points(calibration.get("deciles"), "mean_predicted", "observed_rate"),
                ),
                Series("perfect", [(0.0, 0.0), (1.0, 1.0)], dashed=True),
            ],
        ),
        "gains": chart(
            "Cumulative gains",
            "share of loans, riskiest first",
            "share of defaults captured",
            [Series("model", cumulative), _DIAGONAL],
        ),
    }


def render(
    pack: Mapping[str, Any],
    *,
    title: str,
    facts: Mapping[str, Any],
    drawn: Mapping[str, str] | None = None,
) -> str:
    """The page of ``pack``: ``facts`` (training, version, model, data...) on top, then the
    charts and every table of the pack.

    ``drawn`` are the charts drawn from the pack when its training ran (``charts(pack)``'s
    text, stored with it); without them they are drawn now. A pack whose tables are not in
    the reference shape still gets a page: its facts, charts and a pointer to the JSON.
    """
    shown = charts(pack) if drawn is None else _stored(drawn)
    template = _environment().from_string(_PAGE)
    try:
        return template.render(
            title=title, facts=facts, pack=pack, charts=shown, number=_number, style=_STYLE_MARKUP
        )
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError):
        return template.render(
            title=title,
            facts=facts,
            pack={},
            charts=shown,
            number=_number,
            style=_STYLE_MARKUP,
            odd_shape=True,
        )


def _stored(charts: Mapping[str, str]) -> dict[str, Markup]:
    # Safe to mark: the text is what chart() made, through its autoescaping template, when
    # the training ran; it is stored by the service and never taken from a client.
    return {name: Markup(svg) for name, svg in charts.items()}  # noqa: S704


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def _environment() -> Environment:
    return Environment(autoescape=True, keep_trailing_newline=True)


# The page's only style sheet: inline, allowed by its hash in the page's Content-Security-Policy.
STYLE = """\
body { font: 13px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ccc; padding: .2em .6em; text-align: right; }
.record td { text-align: left; word-break: break-all; }
th:first-child, td:first-child { text-align: left; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
@media print { body { margin: 0; max-width: none; } .charts { break-inside: avoid; } }
"""
STYLE_SOURCE = f"'sha256-{base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()}'"
# Safe to mark: a constant of this module.
_STYLE_MARKUP = Markup(STYLE)  # noqa: S704
# What the page may load: its own style sheet, nothing else (its charts are inline SVG).
CONTENT_SECURITY_POLICY = (
    f"default-src 'none'; style-src {STYLE_SOURCE}; frame-ancestors 'none'; base-uri 'none'"
)

_CHART = """\
<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{{ title }}" \
viewBox="0 0 {{ width }} {{ height }}" width="{{ width }}" height="{{ height }}">
<title>{{ title }}</title>
<rect x="{{ left }}" y="{{ top }}" width="{{ right - left }}" height="{{ bottom - top }}" \
fill="#fff" stroke="#999"/>
{% for x, y, label in ticks %}\
<line x1="{{ x }}" y1="{{ bottom }}" x2="{{ x }}" y2="{{ bottom + 4 }}" stroke="#999"/>\
<text x="{{ x }}" y="{{ bottom + 15 }}" font-size="9" text-anchor="middle">{{ label }}</text>\
<line x1="{{ left - 4 }}" y1="{{ y }}" x2="{{ left }}" y2="{{ y }}" stroke="#999"/>\
<text x="{{ left - 6 }}" y="{{ y + 3 }}" font-size="9" text-anchor="end">{{ label }}</text>
{% endfor %}\
{% for line in lines %}\
<polyline fill="none" stroke="{{ line.colour }}" stroke-width="1.6" \
{% if line.dashed %}stroke-dasharray="4 3" {% endif %}points="{{ line.path }}"/>
{% endfor %}\
<text x="{{ (left + right) / 2 }}" y="{{ bottom + 32 }}" font-size="10" \
text-anchor="middle">{{ x_label }}</text>
<text x="12" y="{{ (top + bottom) / 2 }}" font-size="10" text-anchor="middle" \
transform="rotate(-90 12 {{ (top + bottom) / 2 }})">{{ y_label }}</text>
{% for line in lines %}\
<text x="{{ right - 8 }}" y="{{ legend_y[loop.index0] }}" font-size="9" text-anchor="end" \
fill="{{ line.colour }}">{{ line.name }}</text>
{% endfor %}\
</svg>
"""

_PAGE = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>{{ style }}</style>
</head>
<body>
<h1>{{ title }}</h1>
<table class="facts">
{% for name, value in facts.items() %}<tr><th>{{ name }}</th><td>{{ number(value) }}</td></tr>
{% endfor %}</table>
{% if odd_shape %}<p>This pack's tables are not in the reference shape: \
its JSON (<code>Accept: application/json</code>) shows every figure.</p>{% endif %}
{% set d = pack.discrimination or {} %}
<h2>Discrimination</h2>
<table>
<tr><th>AUC</th><td>{{ number(d.auc) }}</td></tr>
<tr><th>Gini</th><td>{{ number(d.gini) }}</td></tr>
<tr><th>KS</th><td>{{ number(d.ks) }} (at score {{ number(d.ks_threshold) }})</td></tr>
<tr><th>Brier score</th><td>{{ number(d.brier) }}</td></tr>
</table>
<div class="charts">
{{ charts.roc }}{{ charts.ks }}{{ charts.calibration }}{{ charts.gains }}
</div>
<h2>Gains and lift by decile (riskiest first)</h2>
<table>
<tr><th>decile</th><th>rows</th><th>defaults</th><th>default rate</th>\
<th>cumulative share of defaults</th><th>lift</th></tr>
{% for row in pack.gains or [] %}<tr><td>{{ row.decile }}</td><td>{{ number(row.rows) }}</td>\
<td>{{ number(row.defaults) }}</td><td>{{ number(row.default_rate) }}</td>\
<td>{{ number(row.cumulative_defaults_share) }}</td><td>{{ number(row.lift, 2) }}</td></tr>
{% endfor %}</table>
{% set c = pack.calibration or {} %}{% set hl = c.hosmer_lemeshow or {} %}
<h2>Calibration by decile</h2>
<table>
<tr><th>decile</th><th>rows</th><th>mean predicted</th><th>observed rate</th></tr>
{% for row in c.deciles or [] %}<tr><td>{{ row.decile }}</td><td>{{ number(row.rows) }}</td>\
<td>{{ number(row.mean_predicted) }}</td><td>{{ number(row.observed_rate) }}</td></tr>
{% endfor %}</table>
<p>Hosmer-Lemeshow: statistic {{ number(hl.statistic) }}, {{ number(hl.df) }} degrees of \
freedom, p-value {{ number(hl.p_value) }}.</p>
<h2>Stability</h2>
{% if pack.stability %}<p>Population stability index against the champion: \
{{ number(pack.stability.psi) }}.</p>
<table>
<tr><th>bin</th><th>champion share</th><th>this model's share</th><th>contribution</th></tr>
{% for row in pack.stability.bins %}<tr><td>{{ row.bin }}</td>\
<td>{{ number(row.expected_share) }}</td><td>{{ number(row.actual_share) }}</td>\
<td>{{ number(row.contribution) }}</td></tr>
{% endfor %}</table>
{% else %}<p>No champion to compare with: no stability index.</p>{% endif %}
<h2>Most important features</h2>
{% if pack.top_features %}<p>By {{ pack.top_features.method }}.</p>
<table>
<tr><th>feature</th><th>{{ pack.top_features.method }}</th></tr>
{% for row in pack.top_features.features %}<tr><td>{{ row.name }}</td>\
<td>{{ number(row.coefficient if row.coefficient is defined else row.importance) }}</td></tr>
{% endfor %}</table>
{% else %}<p>Not computed.</p>{% endif %}
{% set r = pack.reproducibility or {} %}{% set ds = r.dataset or {} %}
<h2>Reproducibility</h2>
{% if r %}<table class="record">
<tr><th>trainer</th><td>{{ r.trainer }}</td></tr>
<tr><th>dataset</th><td>{{ ds.kind }}: {{ ds.name }}</td></tr>
<tr><th>dataset SHA-256</th><td>{{ ds.sha256 }}</td></tr>
<tr><th>rows and columns read</th>\
<td>{{ number(ds.rows) }} rows; {{ ds.columns|join(", ") }}</td></tr>
{% if ds.query %}<tr><th>query</th><td><code>{{ ds.query }}</code></td></tr>{% endif %}
<tr><th>parameters (meta)</th><td><code>{{ r.parameters|tojson }}</code></td></tr>
<tr><th>model</th><td>{{ r.model }}</td></tr>
<tr><th>hyper-parameters</th><td><code>{{ r.hyperparameters|tojson }}</code></td></tr>
<tr><th>seed</th><td>{{ r.seed }}</td></tr>
<tr><th>test part</th><td>{{ r.test_size }} ({{ number(r.test_rows) }} rows)</td></tr>
{% for name, version in (r.versions or {}).items() %}\
<tr><th>{{ name }}</th><td>{{ version }}</td></tr>
{% endfor %}</table>
{% else %}<p>No reproducibility record: the trainer returned none.</p>{% endif %}
</body>
</html>
"""
