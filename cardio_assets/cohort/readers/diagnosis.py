"""Which public-dataset diagnoses count as heart failure, healthy, or neither.

The study label is the one of the main paper: heart failure (HF) is a clinical diagnosis
(UK Biobank: ICD-10 ``I50*``), contrasted with everyone else. M&Ms-1 and ACDC instead
label each patient with a cardiomyopathy *group*, so a mapping is needed. It is
configuration: pass ``diagnosis_map`` to the reader to change it. An override is merged
on top of the defaults below, key by key, so ``{"HCM": "hf"}`` changes one group and
leaves the others; map a group to ``None`` to leave it out. Keys are matched
case-insensitively ("Other" == "OTHER").

Defaults and why
----------------

``"healthy"``
    NOR (both datasets): normal cardiac anatomy and function.

``"hf"``
    DCM (both): dilated LV with systolic dysfunction; ACDC defines it as LV
    EF < 40% with an enlarged LV (EDV > 100 mL/m^2). It is the textbook HF with reduced
    EF phenotype, the dominant kind among the paper's I50 patients.

    MINF (ACDC only): systolic heart failure after myocardial infarction; ACDC defines
    it as LV EF < 40% with abnormal regional contraction. Same EF criterion as DCM.

``None`` (left out: neither healthy nor HF)
    HCM (both): hypertrophy with preserved or high EF. Some patients have HF with
    preserved EF, most do not; the label is ambiguous, and calling them healthy would
    put grossly abnormal hearts in the control class.

    HHD (M&Ms: hypertensive heart disease), ARV (M&Ms: arrhythmogenic RV
    cardiomyopathy), RV (ACDC: abnormal right ventricle, RV EDV > 110 mL/m^2 or RV
    EF < 40%), LV (M&Ms: LV non-compaction), Other (M&Ms): diseased hearts with no HF
    diagnosis recorded; neither class fits.

    AHS (M&Ms: athlete's heart syndrome): physiological remodelling in healthy people,
    but not representative of the general-population controls of the study. A user who
    wants more controls can map it to ``"healthy"``.

An entry whose group maps to ``None`` (or whose group is unknown or missing) is still
returned by the reader with ``diagnosis=None`` and
``extra["excluded_reason"] = "pathology X not mapped to HF or healthy"``: it is not
quarantined, and the cohort step decides (it may still serve, e.g., for generator
training or out-of-distribution checks).
"""

from __future__ import annotations

from collections.abc import Mapping

DIAGNOSES_ALLOWED: frozenset[str | None] = frozenset({"hf", "healthy", None})

# M&Ms-1 "Pathology" column -> study diagnosis.
MMS_DIAGNOSIS_DEFAULT: dict[str, str | None] = {
    "NOR": "healthy",
    "DCM": "hf",
    "HCM": None,
    "ARV": None,
    "HHD": None,
    "AHS": None,
    "LV": None,
    "OTHER": None,
}

# ACDC Info.cfg "Group" -> study diagnosis.
ACDC_DIAGNOSIS_DEFAULT: dict[str, str | None] = {
    "NOR": "healthy",
    "DCM": "hf",
    "MINF": "hf",
    "HCM": None,
    "RV": None,
}


def resolve_diagnosis_map(
    default: Mapping[str, str | None], override: Mapping[str, str | None] | None = None
) -> dict[str, str | None]:
    """The defaults with `override` merged on top; keys upper-cased; values checked."""
    merged = {str(k).strip().upper(): v for k, v in default.items()}
    for key, value in (override or {}).items():
        if value not in DIAGNOSES_ALLOWED:
            raise ValueError(
                f"diagnosis map: {key!r} -> {value!r}; a group maps to 'hf', 'healthy' or None"
            )
        merged[str(key).strip().upper()] = value
    return merged


def map_diagnosis(
    code: str | None, mapping: Mapping[str, str | None]
) -> tuple[str | None, str | None]:
    """``(diagnosis, excluded_reason)`` of a pathology/group code under a resolved mapping.

    `excluded_reason` is None when the code maps to "hf" or "healthy".
    """
    if code is None or not str(code).strip():
        return None, "no pathology recorded"
    text = str(code).strip()
    diagnosis = mapping.get(text.upper())
    if diagnosis is None:
        return None, f"pathology {text} not mapped to HF or healthy"
    return diagnosis, None
