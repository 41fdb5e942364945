"""The scoring trainer's rows: read from a CSV file, a datasource query or the demo book.

They are read in chunks into a compact frame; the outcome column becomes 0/1. Each read also
says where its rows came from, for the validation pack's reproducibility record: the SHA-256
of the CSV file's bytes, or, for a query's result and the demo book, of the rows as read,
written as CSV (pandas' ``to_csv``, header once, no index) before any conversion.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy
from pandas.api.types import union_categoricals

from ..paths import resolve_inside
from . import portfolio

DEMO_ROWS = 20_000
CHUNK_ROWS = 100_000
# Text outcomes that mean "defaulted", for telling the positive class of a two-valued target.
POSITIVE_WORDS = frozenset({"bad", "yes", "y", "true", "t", "default", "defaulted", "1"})


def _compact(chunk: pd.DataFrame) -> pd.DataFrame:
    """Numbers as floats, text as categories: a million rows stay small.

    Numbers stay 64-bit, as the saved pipeline will get them from raw rows: a narrower type
    here would move values across a tree's split points and make the reported figures
    differ from what the artifact computes.
    """
    for column in chunk.columns:
        series = chunk[column]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            chunk[column] = series.astype(np.float64)
        else:
            chunk[column] = series.astype("category")
    return chunk


def _concat(chunks: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """Join compacted chunks; text categories are united instead of falling back to objects."""
    chunks = list(chunks)
    if not chunks or not sum(len(chunk) for chunk in chunks):
        raise ValueError("the dataset has no rows")
    if len(chunks) == 1:
        return chunks[0]
    columns = {}
    for column in chunks[0].columns:
        parts = [chunk[column] for chunk in chunks]
        if any(isinstance(part.dtype, pd.CategoricalDtype) for part in parts):
            # Text in some chunk makes the column text (a chunk of blanks reads as numbers).
            parts = [_as_category(part) for part in parts]
            columns[column] = pd.Series(union_categoricals(parts, ignore_order=True))
        else:
            columns[column] = pd.concat(parts, ignore_index=True)
    return pd.DataFrame(columns)


def _as_category(part: pd.Series) -> pd.Series:
    """``part`` as categories of plain text, whatever a chunk's reader made of it."""
    if not isinstance(part.dtype, pd.CategoricalDtype):
        part = part.astype(object).where(part.notna(), None).astype("category")
    labels = pd.Index([str(label) for label in part.cat.categories], dtype=object)
    return part.cat.rename_categories(labels) if len(labels) else part.cat.set_categories(labels)


def _read_only(connection: sqlalchemy.Connection) -> None:
    """Make the datasource connection refuse writes, where its database can."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        connection.exec_driver_sql("PRAGMA query_only = ON")
    elif dialect == "postgresql":
        connection.exec_driver_sql("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    elif dialect in ("mysql", "mariadb"):
        connection.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")


@dataclass
class Dataset:
    """Rows read for a training, what they are called in its log, and where they came from."""

    frame: pd.DataFrame
    source: str
    # kind ("csv", "query", "demo"), name, sha256, rows, columns, and the query or the seed.
    provenance: dict[str, Any] = field(default_factory=dict)


class _RowDigest:
    """The SHA-256 of chunks of rows as CSV text, as they pass on their way to the frame."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.header = True

    def passing(self, chunks: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for chunk in chunks:
            self.hash.update(chunk.to_csv(index=False, header=self.header).encode())
            self.header = False
            yield chunk


def load_dataset(params: Mapping[str, Any], settings: Mapping[str, Any]) -> Dataset:
    """The training data, a description of where it came from, and its provenance."""
    dataset = params.get("dataset")
    if dataset is None:
        rows = int(settings.get("DEMO_ROWS") or DEMO_ROWS)
        seed = int(params.get("seed", 42))
        digest = _RowDigest()
        frame = _concat(_compact(b) for b in digest.passing(portfolio.blocks(rows, seed)))
        return _loaded(
            frame,
            f"the demo portfolio (seed {seed})",
            kind="demo",
            name="demo portfolio",
            sha256=digest.hash.hexdigest(),
            seed=seed,
        )
    if isinstance(dataset, str):
        path = resolve_inside(Path(settings["DATASETS_DIR"]), dataset)
        with path.open("rb") as file:
            sha256 = hashlib.file_digest(file, "sha256").hexdigest()
        reader = pd.read_csv(path, chunksize=CHUNK_ROWS)
        frame = _concat(_compact(chunk) for chunk in reader)
        return _loaded(frame, f"the CSV file {dataset}", kind="csv", name=dataset, sha256=sha256)
    url = settings["DATASOURCES"][dataset["datasource"]]
    engine = sqlalchemy.create_engine(url)
    digest = _RowDigest()
    try:
        with engine.connect() as connection:
            _read_only(connection)
            chunks = pd.read_sql_query(
                sqlalchemy.text(dataset["query"]), connection, chunksize=CHUNK_ROWS
            )
            frame = _concat(_compact(chunk) for chunk in digest.passing(chunks))
    finally:
        engine.dispose()
    return _loaded(
        frame,
        f"the datasource {dataset['datasource']}",
        kind="query",
        name=dataset["datasource"],
        sha256=digest.hash.hexdigest(),
        query=dataset["query"],
    )


def _loaded(frame: pd.DataFrame, source: str, **provenance: Any) -> Dataset:
    provenance.update(rows=len(frame), columns=[str(column) for column in frame.columns])
    return Dataset(frame, source, provenance)


def encode_target(values: pd.Series, positive: Any = None) -> tuple[np.ndarray, str]:
    """The outcome as 0/1 (1 = default) and the value that was taken to mean default."""
    if pd.api.types.is_numeric_dtype(values):
        numbers = values.to_numpy(dtype=np.float64)
        distinct = sorted(set(np.unique(numbers).tolist()))
        shown = [f"{v:g}" for v in distinct]
        if positive is not None:
            try:
                chosen: Any = float(positive)
            except ValueError:
                chosen = None
        else:
            chosen = 1.0 if distinct == [0.0, 1.0] else None
        labels: Any = numbers
    else:
        labels = values.astype(str).to_numpy()
        distinct = shown = sorted(set(labels.tolist()))
        if positive is not None:
            chosen = str(positive)
        else:
            words = [v for v in distinct if v.strip().lower() in POSITIVE_WORDS]
            chosen = words[0] if len(words) == 1 else None
    if len(distinct) != 2:
        raise ValueError(
            f"the target must have two values, it has {len(distinct)}: {', '.join(shown[:10])}"
        )
    if chosen is None and positive is None:
        raise ValueError(
            f"the target's values are {' and '.join(shown)}; name the one that means default "
            "with `positive`"
        )
    if chosen not in distinct:
        raise ValueError(f"positive={positive!r} is not a value of the target ({', '.join(shown)})")
    return (labels == chosen).astype(np.int8), f"{chosen:g}" if isinstance(
        chosen, float
    ) else chosen
