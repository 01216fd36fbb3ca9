"""The phantom's scanners and sites: where each patient was scanned, and what that does to the image.

Real multi-site cardiac MRI differs by vendor (M&Ms-1 was built to show it): blood-to-myocardium
and fat contrast, noise level, coil bias, in-plane resolution, slice thickness, edge sharpness.
Each :class:`Scanner` here is one such appearance, named by a vendor letter as M&Ms-1 codes its
vendors (A-D; the appearances are simulated, not any real vendor's). The anatomy of a patient
does not depend on the scanner: the same heart scanned on two scanners has the same geometry in
mm (its voxel masks differ only by the resolution).

Sites are where patients come from. Each site has its own scanner mix and its own patients: the
site of a study patient is drawn with odds that depend on age and BMI (`Site.age_log_odds_per_decade`,
`Site.bmi_log_odds_per_5`), so one site is older and one more obese, and vendor is confounded
with the subgroups as in real multi-site data. The balanced held-out cohort has every vendor in
every cell (see `heldout_vendor`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scanner:
    vendor: str
    description: str
    # tissue signal multipliers against the reference (vendor A) contrast
    contrast: tuple[tuple[str, float], ...]
    noise_sigma: tuple[float, float]  # reference units, uniform per patient
    bias_amplitude: float  # each coil-bias coefficient uniform in +-this
    spacing_mm: tuple[float, float]  # in-plane, uniform per patient
    slice_mm: tuple[float, ...]  # slice thickness, one of these
    edge_width_voxels: float  # partial-volume / blur width of tissue edges, in voxels

    def contrast_of(self, tissue: str) -> float:
        return dict(self.contrast).get(tissue, 1.0)


SCANNERS: dict[str, Scanner] = {s.vendor: s for s in (
    Scanner("A", "reference bSSFP: bright blood, dark myocardium, moderate noise",
            (), (3.0, 5.0), 0.08, (1.70, 1.90), (8.0, 10.0), 0.30),
    Scanner("B", "high resolution, low noise, brighter myocardium and liver",
            (("myo", 1.20), ("liver", 1.15), ("fat", 0.92)), (2.0, 3.5), 0.05, (1.55, 1.75), (8.0,), 0.25),
    Scanner("C", "coarser, noisier, darker fat, strong coil bias",
            (("blood", 0.92), ("fat", 0.80), ("muscle", 1.10)), (4.0, 6.0), 0.12, (1.85, 2.05), (10.0,), 0.40),
    Scanner("D", "low blood-myocardium contrast, bright lungs, blurred edges, high noise",
            (("blood", 0.85), ("myo", 1.35), ("lung", 2.5), ("fat", 1.10)), (5.0, 7.0), 0.15, (1.90, 2.10), (8.0, 10.0), 0.45),
)}
VENDORS = tuple(SCANNERS)


@dataclass(frozen=True)
class Site:
    name: str
    vendor_mix: tuple[tuple[str, float], ...]  # vendor, share of the site's scans
    log_odds: float  # baseline log-odds of a study patient coming from this site
    age_log_odds_per_decade: float = 0.0  # > 0: an older site
    bmi_log_odds_per_5: float = 0.0  # > 0: a site with more obese patients


SITES: tuple[Site, ...] = (
    Site("site-1", (("A", 0.75), ("C", 0.25)), 0.6, age_log_odds_per_decade=0.8),  # the older site
    Site("site-2", (("B", 0.70), ("D", 0.30)), 0.0, bmi_log_odds_per_5=0.9),  # the obese site
    Site("site-3", (("A", 0.50), ("B", 0.50)), 0.4),
    Site("site-4", (("C", 0.60), ("D", 0.40)), -0.6, age_log_odds_per_decade=-0.6),  # a younger site
)


def site_probabilities(age: np.ndarray, bmi: np.ndarray) -> np.ndarray:
    """(n, sites) probability of each site for people of these ages and BMIs (multinomial logit)."""
    age, bmi = np.asarray(age, float), np.asarray(bmi, float)
    logits = np.stack([s.log_odds + s.age_log_odds_per_decade * (age - 64.0) / 10.0
                       + s.bmi_log_odds_per_5 * (bmi - 26.5) / 5.0 for s in SITES], axis=1)
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def draw_sites_and_vendors(age: np.ndarray, bmi: np.ndarray, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Site and vendor of each study patient: the site by its demographic odds, then a vendor from its mix."""
    p = site_probabilities(age, bmi)
    cumulative = p.cumsum(axis=1)
    which = (rng.random((len(p), 1)) > cumulative).sum(axis=1)
    sites, vendors = [], []
    for i in np.minimum(which, len(SITES) - 1):
        site = SITES[int(i)]
        names, shares = zip(*site.vendor_mix)
        sites.append(site.name)
        vendors.append(str(rng.choice(names, p=np.asarray(shares) / sum(shares))))
    return sites, vendors


def heldout_vendor(cell_index: int, i: int) -> str:
    """Vendor of the i-th held-out patient of a cell: every vendor in turn, started one further
    for each cell, so every vendor has the same number of patients per cell (and, with one
    patient per cell, the same number of cells)."""
    return VENDORS[(cell_index + i) % len(VENDORS)]


def heldout_site(vendor: str, rng: np.random.Generator) -> str:
    """A site that runs this vendor's scanner, in proportion to how many of its scans that is."""
    names = [s.name for s in SITES]
    weights = np.array([dict(s.vendor_mix).get(vendor, 0.0) for s in SITES])
    return str(rng.choice(names, p=weights / weights.sum()))


def acquisition(scanner: Scanner, tissue_signal: dict[str, float], rng: np.random.Generator) -> dict:
    """The acquisition fields of `PatientParams` for one scanner: resolution, noise, bias, gain and the
    tissue signals the scanner's contrast makes of the patient's own (reference-contrast) signals."""
    bias = rng.uniform(-scanner.bias_amplitude, scanner.bias_amplitude, size=6)
    signals = {f"{tissue}_signal": round(value * scanner.contrast_of(tissue), 2)
               for tissue, value in tissue_signal.items()}
    return {
        "vendor": scanner.vendor,
        "spacing_mm": round(float(rng.uniform(*scanner.spacing_mm)), 4),
        "slice_mm": float(rng.choice(scanner.slice_mm)),
        "gain": round(float(rng.uniform(0.9, 1.1)), 4),
        "noise_sigma": round(float(rng.uniform(*scanner.noise_sigma)), 3),
        "edge_width_voxels": scanner.edge_width_voxels,
        **{f"bias_{k}": round(float(b), 4) for k, b in zip(("u", "v", "uv", "uu", "vv", "z"), bias)},
        **signals,
    }


def expected_contrast(vendor: str, tissue: str, other: str, reference: dict[str, tuple[float, float]]) -> float:
    """Mean signal ratio tissue / other on a scanner, from the reference means (`anatomy.TISSUE`)."""
    s = SCANNERS[vendor]
    return (reference[tissue][0] * s.contrast_of(tissue)) / (reference[other][0] * s.contrast_of(other))
