import pytest

from cardio_assets.cohort.cells import ALL_CELLS, CELL_KEYS, Cell, age_band, bmi_band, cell_key_or_none, prompt


@pytest.mark.parametrize("age, band", [(45, "lt60"), (59.9, "lt60"), (60, "60to70"), (69.99, "60to70"), (70, "ge70"), (81, "ge70")])
def test_age_band_edges_fall_in_the_upper_band(age, band):
    assert age_band(age) == band


@pytest.mark.parametrize("bmi, band", [(17.0, "normal"), (24.9, "normal"), (25, "overweight"), (29.99, "overweight"), (30, "obese")])
def test_bmi_band_edges_fall_in_the_upper_band(bmi, band):
    assert bmi_band(bmi) == band


def test_there_are_36_distinct_cells_and_keys_round_trip():
    assert len(ALL_CELLS) == 36 == len(set(CELL_KEYS))
    for cell in ALL_CELLS:
        assert Cell.parse(cell.key) == cell


def test_bad_keys_and_values_are_rejected():
    with pytest.raises(ValueError):
        Cell.parse("male-ge70-obese")
    with pytest.raises(ValueError):
        Cell("other", "lt60", "normal", "hf")
    with pytest.raises(ValueError):
        age_band(float("nan"))


def test_missing_attribute_gives_no_cell():
    assert cell_key_or_none(None, 65, 27, "hf") is None
    assert cell_key_or_none("male", None, 27, "hf") is None
    assert cell_key_or_none("male", 65, 27, None) is None
    assert cell_key_or_none("male", 65, 30, "hf") == "male-60to70-obese-hf"


def test_prompt_matches_the_paper():
    assert prompt("male", 74.2, 23.0, "hf") == "Male, age in 70s, normal BMI, heart failure"
    assert prompt("female", 59.9, 30.0, "healthy") == "Female, age in 50s, obese BMI, healthy"
