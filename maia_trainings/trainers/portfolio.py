"""A deterministic synthetic loan book: applicants, loans, payment history and a default outcome.

The outcome ``defaulted`` is drawn from a known logistic relation with noise, so a good model
reaches a ROC AUC of about 0.8 and a poor one visibly less. Some values are missing and some
columns are text categories, as in a real extract. Rows are made in blocks, each from its own
seeded generator, so a portfolio of any size is written with bounded memory and the same
seed always gives the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

BLOCK_ROWS = 100_000
TARGET = "defaulted"
HOME_OWNERSHIP = np.array(["rent", "mortgage", "own"])
PURPOSES = np.array(
    ["debt_consolidation", "car", "home_improvement", "business", "education", "other"]
)
REGIONS = np.array(["north", "south", "east", "west", "central"])


def _block(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    age = rng.integers(21, 76, rows)
    income = np.round(rng.lognormal(10.6, 0.5, rows), 2)
    employment_years = np.round(np.clip(rng.gamma(2.0, 3.0, rows), 0, 45), 1)
    home = rng.choice(HOME_OWNERSHIP, rows, p=[0.45, 0.4, 0.15])
    purpose = rng.choice(PURPOSES, rows, p=[0.35, 0.2, 0.15, 0.1, 0.08, 0.12])
    region = rng.choice(REGIONS, rows)
    amount = np.round(rng.lognormal(9.3, 0.6, rows), -1)
    term = rng.choice([36, 60], rows, p=[0.7, 0.3])
    debt_to_income = np.round(np.clip(rng.normal(0.3, 0.12, rows), 0.0, 1.2), 3)
    utilization = np.round(np.clip(rng.beta(2.0, 3.0, rows) * 1.2, 0.0, 1.2), 3)
    open_accounts = rng.poisson(6, rows)
    # Payment history: a hidden habit drives how late and how fully an applicant pays.
    habit = rng.normal(0.0, 1.0, rows)
    late_12m = rng.poisson(np.exp(-0.3 + 0.8 * habit).clip(0, 12))
    max_days_late = np.where(
        late_12m > 0, np.clip(rng.exponential(12 + 10 * late_12m), 1, 180).round(), 0
    ).astype(int)
    share_paid = np.round(
        np.clip(1.0 - np.abs(rng.normal(0.03 + 0.05 * habit.clip(0), 0.05)), 0, 1), 3
    )
    previous_default = (rng.random(rows) < 0.04 + 0.04 * (habit > 1)).astype(int)
    rate = np.round(0.05 + 0.1 * utilization + 0.03 * (term == 60) + rng.normal(0, 0.02, rows), 4)

    logit = (
        -2.6
        + 4.5 * (debt_to_income - 0.3)
        + 0.5 * late_12m
        + 0.02 * max_days_late
        - 6.0 * (share_paid - 0.95)
        + 1.8 * (utilization - 0.5)
        + 1.3 * previous_default
        - 0.8 * (np.log(income) - 10.6)
        + 0.5 * (term == 60)
        + 0.6 * (purpose == "business")
        - 0.4 * (home == "own")
        - 0.015 * (age - 45)
        + rng.normal(0.0, 0.5, rows)  # what no column explains
    )
    defaulted = (rng.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(int)

    frame = pd.DataFrame(
        {
            "age": age,
            "annual_income": income,
            "employment_years": employment_years,
            "home_ownership": home,
            "purpose": purpose,
            "region": region,
            "loan_amount": amount,
            "term_months": term,
            "interest_rate": rate,
            "debt_to_income": debt_to_income,
            "credit_utilization": utilization,
            "open_accounts": open_accounts,
            "late_payments_12m": late_12m,
            "max_days_late": max_days_late,
            "share_amount_paid": share_paid,
            "previous_default": previous_default,
            TARGET: defaulted,
        }
    )
    # Gaps, as in a real extract: income not declared, employment unknown, no bureau data.
    for column, share in (
        ("annual_income", 0.03),
        ("employment_years", 0.05),
        ("credit_utilization", 0.02),
        ("home_ownership", 0.01),
    ):
        frame.loc[rng.random(rows) < share, column] = np.nan
    return frame


def blocks(rows: int, seed: int = 42) -> Iterator[pd.DataFrame]:
    """The portfolio of ``rows`` loans, in blocks of at most BLOCK_ROWS."""
    for index, start in enumerate(range(0, rows, BLOCK_ROWS)):
        rng = np.random.default_rng([seed, index])
        yield _block(min(BLOCK_ROWS, rows - start), rng)


def generate(rows: int, seed: int = 42) -> pd.DataFrame:
    """The whole portfolio in memory."""
    return pd.concat(list(blocks(rows, seed)), ignore_index=True)


def write_csv(path: Path, rows: int, seed: int = 42) -> None:
    """Write the portfolio as CSV, block by block (bounded memory for any size)."""
    with Path(path).open("w", newline="", encoding="utf-8") as file:
        for index, block in enumerate(blocks(rows, seed)):
            block.to_csv(file, header=index == 0, index=False)
