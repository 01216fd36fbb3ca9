"""The realism report: Markdown (Table 1 shape, KID beside FID, diversity) and CSVs, written atomically.

`write_realism_report(realism, out_dir, diversity)` takes the tables of
`realism.realism_table` and `realism.diversity_table`, writes its files and returns
{name: path}.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from cardio_assets.lake.atomic import atomic_write_text
from cardio_assets.metrics.realism import REAL_REAL, REAL_SYNTHETIC, TABLE1_ATTRIBUTES, sanity_holds
from cardio_assets.metrics.report_format import format_mean_std, markdown_table, write_csv

REALISM_SECTIONS = ("Feature extractor", "Table 1: FID (KID) per subgroup", "Diversity")


def table1(realism: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1 shape: per attribute, rows real-real / real-synthetic, a column per
    comparison (A - A, A - B, B - B) with `FID mean (std)`, and KID beside it."""
    rows = []
    for title, _, _, _ in TABLE1_ATTRIBUTES:
        a = realism[realism["attribute"] == title]
        if not len(a):
            continue
        comparisons = list(dict.fromkeys(a["comparison"]))
        for kind in (REAL_REAL, REAL_SYNTHETIC):
            k = a[a["kind"] == kind]
            if not len(k):
                continue
            row = {"attribute": title, "kind": kind}
            for c in comparisons:
                hit = k[k["comparison"] == c]
                h = hit.iloc[0] if len(hit) else None
                row[f"{c} FID"] = (f"{h['fid_mean']:.2f} ({h['fid_std']:.2f})"
                                   if h is not None and np.isfinite(h["fid_mean"]) else "n/a")
                row[f"{c} KID"] = (f"{h['kid_mean']:.4f} ({h['kid_std']:.4f})"
                                   if h is not None and np.isfinite(h["kid_mean"]) else "n/a")
            rows.append(row)
    return pd.DataFrame(rows)


def write_realism_report(realism: pd.DataFrame, out_dir, diversity: pd.DataFrame | None = None,
                         extractor_description: str | None = None,
                         title: str = "Realism of the synthetic frames",
                         sanity: pd.DataFrame | None = None, extractor_accuracy: pd.DataFrame | None = None,
                         scanner_shift: pd.DataFrame | None = None,
                         memorisation: pd.DataFrame | None = None, sampling: str | None = None,
                         attributes_as_drawn: pd.DataFrame | None = None, sharpness: pd.DataFrame | None = None,
                         qc: pd.DataFrame | None = None, qc_slices: pd.DataFrame | None = None) -> dict[str, Path]:
    """Markdown (Table 1 shape, KID beside FID, diversity) + CSVs in `out_dir`; returns {name: path}.

    sanity: `realism.extractor_sanity`'s table; extractor_accuracy: the attribute predictors'
    validation balanced accuracy per attribute, with the phantom's ceiling where known (the
    extractor is their penultimate layer when no InceptionV3 weights are configured).
    scanner_shift: `realism.scanner_shift_table`, where a vendor or site is held out.
    memorisation: `realism.memorisation_check`, for an extractor trained on the real frames compared.
    sampling: how the synthetic frames were sampled (`DiffusionConfig.sampling_summary`): FID moves with it.
    attributes_as_drawn: `attribute_fidelity.attribute_fidelity`'s table (caricatures and ignored prompt words).
    sharpness: `sharpness.sharpness_table` (smoothness, which the texture-augmented extractor weighs little).
    qc: `qc_summary.qc_by_cell` (kept frames per cell, against the pass rate of the real frames whose masks they drew).
    qc_slices: `qc_summary.qc_by_slice` (the same by the slice the masks came from).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    if extractor_description is None and len(realism):
        extractor_description = "; ".join(sorted(set(realism["extractor"].astype(str))))
    md = [f"# {title}", "", "## Feature extractor", "",
          f"FID and KID were computed with torch-fidelity on features of: **{extractor_description or 'unknown'}**.",
          "Values from a feature extractor other than the standard InceptionV3 compare with each other, not with "
          "published FIDs.", ""]
    if sampling:
        md += [f"Synthetic frames sampled with: {sampling}.", ""]
    md += _extractor_checks(sanity, extractor_accuracy, out, paths, memorisation)
    md += _table1_section(realism, out, paths)
    md += _attributes_section(attributes_as_drawn, out, paths)
    md += _sharpness_section(sharpness, out, paths)
    md += _qc_section(qc, qc_slices, out, paths)
    md += _diversity_section(diversity, out, paths)
    md += _scanner_shift_section(scanner_shift, out, paths)
    paths["report"] = atomic_write_text(out / "realism_report.md", "\n".join(md) + "\n")
    return paths


def _attributes_section(table: pd.DataFrame | None, out: Path, paths: dict[str, Path]) -> list[str]:
    if table is None or not len(table):
        return []
    paths["attributes_as_drawn_csv"] = write_csv(table, out / "attributes_as_drawn.csv")
    shown = table.assign(**{c: table[c].round(3) for c in ("real_mean_p", "synthetic_mean_p", "difference")})
    return ["## Attributes as drawn", "",
            "The attribute predictors' mean probability of each image's own class, on real frames they never trained on "
            "(validation and test splits) and on the kept synthetic frames (their prompted class), compared within "
            "cells: each cell's synthetic mean is weighted by its share of the real frames, over the `cells` of the class "
            "both sides hold, so the synthetic frames' cell mix (mostly rare cells) does not count. Synthetic well above "
            "real: the class drawn as a caricature of itself (guidance over-draws it), which FID sees; well below: the "
            "generator does not follow that word of the prompt. Attributes QC checks against a floor select the kept "
            "frames on this probability, which lifts their synthetic mean a little.", "",
            markdown_table(shown, index=False), ""]


def _sharpness_section(table: pd.DataFrame | None, out: Path, paths: dict[str, Path]) -> list[str]:
    if table is None or not len(table):
        return []
    paths["sharpness_csv"] = write_csv(table, out / "sharpness.csv")
    shown = table.assign(**{c: table[c].round(4) for c in ("real_energy", "synthetic_energy")},
                         synthetic_over_real=table["synthetic_over_real"].round(3))
    return ["## Sharpness", "",
            "High-frequency energy (standard deviation of a frame minus its Gaussian blur of 1 pixel) of the same real "
            "and kept synthetic frames, compared within cells as above. Under 1: the synthetic frames are smoother. The "
            "attribute predictors train with blur and contrast augmentation so that they read anatomy, not sharpness: "
            "where they give the FID features, FID weighs this difference little, so it is shown here.", "",
            markdown_table(shown, index=False), ""]


def _qc_section(table: pd.DataFrame | None, slices: pd.DataFrame | None, out: Path, paths: dict[str, Path]) -> list[str]:
    if table is None or not len(table):
        return []
    by_slice = []
    if slices is not None and len(slices):
        paths["qc_by_slice_csv"] = write_csv(slices, out / "qc_by_slice.csv")
        shown_slices = slices.assign(**{c: slices[c].round(3) for c in slices.columns if "rate" in c})
        by_slice = ["By the slice the masks came from (-1 the basal neighbour of the central slice, 0 the central slice, "
                    "+1 the apical neighbour): where one offset keeps far fewer, the kept synthetic set holds fewer frames "
                    "of that level than the real one.", "", markdown_table(shown_slices, index=False), ""]
    paths["qc_by_cell_csv"] = write_csv(table, out / "qc_by_cell.csv")
    rates = [c for c in table.columns if "rate" in c]
    shown = table.assign(**{c: table[c].round(3) for c in rates})
    kept, requested = int(table["kept"].sum()), int(table["requested"].sum())
    return ["## Quality control per cell", "",
            f"{kept} of {requested} requested synthetic frames kept ({kept / requested:.3f}) within 3 attempts, lowest pass "
            "rate first. Every synthetic frame draws the masks of one real training frame; `source_frames_pass_rate` is the "
            "share of a cell's requests whose real frame passes the same check in its one look, the rate a generator that "
            "draws those masks as the acquisition did would reach per attempt. A cell far below it is the generator's "
            "shortfall; a cell near it is limited by its masks (thresholds are calibrated on the whole BMI band's frames).", "",
            markdown_table(shown, index=False), "", *by_slice]


def _scanner_shift_section(shift: pd.DataFrame | None, out: Path, paths: dict[str, Path]) -> list[str]:
    if shift is None or not len(shift):
        return []
    paths["scanner_shift_csv"] = write_csv(shift, out / "scanner_shift.csv")
    table = shift.assign(FID=[format_mean_std(m, s, 2) for m, s in zip(shift["fid_mean"], shift["fid_std"])],
                         KID=[format_mean_std(m, s, 4) for m, s in zip(shift["kid_mean"], shift["kid_std"])])
    return ["## The held-out scanners", "",
            "FID between the real frames of the scanners the models train on, the real frames of the held-out vendor "
            "or site (out of distribution), and the synthetic frames (mean ± std over repeats, n images a side).", "",
            markdown_table(table[["comparison", "n", "FID", "KID"]], index=False), ""]


def _extractor_checks(sanity: pd.DataFrame | None, accuracy: pd.DataFrame | None, out: Path,
                      paths: dict[str, Path], memorisation: pd.DataFrame | None = None) -> list[str]:
    md = []
    if sanity is not None and len(sanity):
        verdict = "as expected" if sanity_holds(sanity) else "NOT as expected: read Table 1 with care"
        md += [f"Sanity of the extractor (FID against real frames of one half of the patients; {verdict}):", "",
               markdown_table(sanity, index=False), ""]
        paths["extractor_sanity_csv"] = write_csv(sanity, out / "extractor_sanity.csv")
    if memorisation is not None and len(memorisation):
        md += ["Has the extractor memorised the real frames it trained on, which Table 1 compares? (central frames; "
               "the unseen ones are the test split's)", "", markdown_table(memorisation, index=False), ""]
        paths["extractor_memorisation_csv"] = write_csv(memorisation, out / "extractor_memorisation.csv")
    if accuracy is not None and len(accuracy):
        md += ["The extractor's own training task (attribute predictors, validation balanced accuracy; the phantom's "
               "ceiling is what a classifier given each patient's exact image parameters reaches, cross-validated, on the "
               "parameters as the frames show them: the chest wall as far as the crop holds it, sizes in pixels; "
               "`ceiling_all_parameters` counts every parameter whole):", "",
               markdown_table(accuracy, index=False), ""]
    return md


def _table1_section(realism: pd.DataFrame, out: Path, paths: dict[str, Path]) -> list[str]:
    md = ["## Table 1: FID (KID) per subgroup", "",
          "FID mean (std) over repeated draws of n images per side (equal n); real-real rows split a subgroup's "
          "patients into two disjoint halves when a subgroup is compared with itself (the lower bound). "
          "Real-synthetic rows compare the real first group with the synthetic second group, the synthetic images "
          "drawn with the real group's mix of the other attributes (synthetic sets are balanced over the 36 cells, "
          "real ones follow the cohort).", ""]
    if not len(realism):
        return md + ["No comparisons were computed.", ""]
    ns = sorted(set(int(n) for n in realism["n"] if np.isfinite(n)))
    reps = sorted(set(int(r) for r in realism["repeats"]))
    md += [f"n per side: {', '.join(map(str, ns))}; repeats: {', '.join(map(str, reps))}.", ""]
    t1 = table1(realism)
    for attribute, group in t1.groupby("attribute", sort=False):
        md += [f"### {attribute}", "", markdown_table(group.drop(columns="attribute").dropna(axis=1, how="all"),
                                                      index=False), ""]
    paths["table1"] = write_csv(t1, out / "table1.csv")
    paths["realism_csv"] = write_csv(realism, out / "realism_metrics.csv")
    return md


def _diversity_section(diversity: pd.DataFrame | None, out: Path, paths: dict[str, Path]) -> list[str]:
    md = ["## Diversity", ""]
    if diversity is None or not len(diversity) or not diversity["ms_ssim"].notna().any():
        return md + ["No prompt/mask group held two or more synthetic images; diversity not measured.", ""]
    v = diversity["ms_ssim"].dropna()
    md += [f"Mean pairwise MS-SSIM between images generated from the same prompt and mask (lower = more "
           f"diverse): **{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.3f}** over {len(v)} groups "
           f"({int(diversity['n_images'].sum())} images).", ""]
    if "cell" in diversity and diversity["cell"].notna().any():
        per_cell = (diversity.groupby("cell")["ms_ssim"].agg(["count", "mean"])
                    .rename(columns={"count": "groups", "mean": "mean MS-SSIM"}))
        md += [markdown_table(per_cell), ""]
    paths["diversity_csv"] = write_csv(diversity, out / "diversity.csv")
    return md
