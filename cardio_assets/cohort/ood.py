"""Out-of-distribution hold-out: whole vendors or sites that no model ever trains on.

A policy is written ``column=value[,value...]`` (``vendor=D``, ``site=site-4``; M&Ms-1: ``vendor=C``
leaves vendor C, GE, out). Its patients are split apart before anything else: study patients
become ``ood_test`` (the held-out scanner at its own prevalence), balanced held-out patients
``ood_heldout``. Training, validation and the in-distribution test come from the rest, so the
generator, the attribute predictors and every classifier only see the remaining scanners.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

OOD_COLUMNS = ("vendor", "site")
OOD_SPLITS = {"study": "ood_test", "heldout": "ood_heldout"}


@dataclass(frozen=True)
class OodPolicy:
    column: str  # "vendor" | "site"
    values: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "OodPolicy | None":
        """``vendor=D`` -> OodPolicy("vendor", ("D",)); "" or "none" -> None."""
        text = (text or "").strip()
        if text.lower() in ("", "none", "off"):
            return None
        column, sep, values = text.partition("=")
        column = column.strip().lower()
        names = tuple(v.strip() for v in values.split(",") if v.strip())
        if not sep or column not in OOD_COLUMNS or not names:
            raise ValueError(f"out-of-distribution hold-out {text!r}: write column=value[,value], "
                             f"column one of {OOD_COLUMNS}, e.g. vendor=D or site=site-4")
        return cls(column, names)

    def __str__(self) -> str:
        return f"{self.column}={','.join(self.values)}"

    def held_out(self, cohort: pd.DataFrame) -> pd.Series:
        """Boolean per cohort row: the patient was scanned on a held-out vendor or site."""
        if self.column not in cohort:
            raise ValueError(f"out-of-distribution hold-out {self}: the cohort has no {self.column!r} column")
        values = cohort[self.column].astype("string").str.strip()
        held = values.isin(self.values).fillna(False).astype(bool)
        if not held.any():
            seen = sorted(values.dropna().unique().tolist())
            raise ValueError(f"out-of-distribution hold-out {self}: no patient has that {self.column}; "
                             f"the cohort's values are {seen}")
        if held.all():
            raise ValueError(f"out-of-distribution hold-out {self}: every patient has it, none would be left to train on")
        return held
