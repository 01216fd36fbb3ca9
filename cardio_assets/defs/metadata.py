"""Metadata the UI shows inline: tables as Dagster tables (sortable), not Markdown behind a link."""

from __future__ import annotations

import numpy as np
import pandas as pd
from dagster import MetadataValue, TableColumn, TableRecord, TableSchema


def _column_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    return "string"


def _cell(value):
    # TableRecord takes str/int/float/bool/None; NaN (and pd.NA, NaT) does not survive the UI's JSON
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    return value if isinstance(value, (str, int, float, bool)) else str(value)


def table_metadata(frame: pd.DataFrame, index: bool = False, descriptions: dict[str, str] | None = None) -> MetadataValue:
    """A DataFrame as `MetadataValue.table` with its schema; `index=True` keeps the index as the first column."""
    if index:
        frame = frame.reset_index()
    frame = frame.rename(columns=str)
    descriptions = descriptions or {}
    schema = TableSchema(columns=[
        TableColumn(name=name, type=_column_type(frame[name]), description=descriptions.get(name)) for name in frame.columns
    ])
    records = [TableRecord({name: _cell(value) for name, value in zip(frame.columns, row)})
               for row in frame.itertuples(index=False, name=None)]
    return MetadataValue.table(records=records, schema=schema)
