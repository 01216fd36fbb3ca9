"""Tables shown in the UI: Dagster table metadata with a schema, built from the report tables."""

import numpy as np
import pandas as pd

from cardio_assets.defs.metadata import table_metadata


def test_a_frame_becomes_a_typed_table_with_blanks_for_missing_values():
    frame = pd.DataFrame({"group": ["Overall", "Female"], "n": [10, 4], "ba": [0.75, np.nan], "ok": [True, False]})
    value = table_metadata(frame.set_index("group"), index=True, descriptions={"ba": "balanced accuracy"})
    columns = {c.name: c for c in value.schema.columns}
    assert [c.name for c in value.schema.columns] == ["group", "n", "ba", "ok"]
    assert (columns["group"].type, columns["n"].type, columns["ba"].type, columns["ok"].type) == ("string", "int", "float", "bool")
    assert columns["ba"].description == "balanced accuracy"
    rows = [r.data for r in value.records]
    assert rows == [{"group": "Overall", "n": 10, "ba": 0.75, "ok": True}, {"group": "Female", "n": 4, "ba": None, "ok": False}]
    assert all(type(v) in (str, int, float, bool, type(None)) for r in rows for v in r.values())  # no numpy scalars


def test_an_empty_frame_keeps_its_columns():
    value = table_metadata(pd.DataFrame({"patient_id": pd.Series(dtype=str), "reason": pd.Series(dtype=str)}))
    assert [c.name for c in value.schema.columns] == ["patient_id", "reason"]
    assert value.records == []
