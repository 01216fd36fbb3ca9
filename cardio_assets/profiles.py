"""Profiles: one code path, several sizes.

- `smoke`: seconds to a few minutes on 2 CPU cores; the tests use it.
- `demo` (the default): the whole graph on the phantom cohort in minutes on a laptop CPU.
- `paper`: the main paper's settings (crop 120 px, 224 px frames, SD 2.1-base at 512 px
  from local weights, 8 classifier runs), for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

from cardio_assets.classify.config import ClassifierConfig
from cardio_assets.frames.preprocess import FrameSpec
from cardio_assets.generation.config import DiffusionConfig
from cardio_assets.phantom.config import PhantomConfig


@dataclass(frozen=True)
class Profile:
    name: str
    phantom: PhantomConfig
    frames: FrameSpec
    # cells with fewer training patients than this get a warning: the generator will
    # have to borrow masks for them from a neighbouring cell
    min_train_patients_per_cell: int
    diffusion: DiffusionConfig
    classifier: ClassifierConfig
    # synthetic images made per cell; the classifier strategies use N (+2000) and 2N (+4000)
    synthetic_per_cell: int
    # attribute predictors (QC's attribute checks, FID features): all nine training frames of a
    # patient with a one-cycle schedule reach 81-89% of the demo phantom's ceiling of every parameter, the
    # central frame alone at a constant rate 46-73% (benchmarks/attribute_predictors.py); 93-99% of the
    # ceiling of what the frames show (`phantom/in_frame.py`); six epochs overfit (sex 0.73 -> 0.69)
    attribute_epochs: int = 3
    attribute_all_frames: bool = True
    attribute_schedule: str = "onecycle"
    attribute_lr: float = 2e-3
    # largest blur sigma (pixels) of the predictors' texture augmentation (`classify.train.texture_jitter`):
    # without it a blur of half a pixel moved the demo predictors' p(female) of real female frames by
    # -0.10 to -0.12, which the synthetic frames' smoothness then read as a male lean; 0.6 halves that
    # or better at the same accuracy (two seeds, benchmarks/attribute_predictors.py). 0: off
    attribute_texture_blur: float = 0.6
    # FID/KID: images per compared group and repeats (paper: 500 images)
    fid_images: int = 500
    fid_repeats: int = 3
    # intra-prompt diversity: masks x seeds generated for MS-SSIM
    diversity_masks: int = 8
    diversity_seeds: int = 4
    # the phantom's scanner that no model trains on: the out-of-distribution test (`cohort.ood`)
    phantom_ood_holdout: str = "vendor=D"
    max_quarantine_share: float = 0.05
    min_qc_pass_rate: float = 0.5


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        phantom=PhantomConfig(n_patients=72, heldout_per_cell=1, hf_prevalence=0.3, matrix=64, n_slices=5, n_frames=20),
        frames=FrameSpec(crop_px=56, size=32),
        min_train_patients_per_cell=1,
        diffusion=DiffusionConfig.smoke(),
        classifier=ClassifierConfig.smoke(),
        synthetic_per_cell=2 * ClassifierConfig.smoke().synthetic_per_cell,
        attribute_epochs=1,  # seconds: the tests check the mechanics, not the accuracy
        attribute_all_frames=False,
        attribute_schedule="constant",
        attribute_lr=1e-3,
        fid_images=8,
        fid_repeats=2,
        diversity_masks=2,
        diversity_seeds=2,
    ),
    "demo": Profile(
        name="demo",
        # difficulty 0.9: the real-only classifier lands near the paper's 0.74 (measured with
        # benchmarks/calibrate_difficulty.py: 0.5 -> 0.955, 0.8 -> 0.896, 0.9 -> 0.784, 0.95 -> 0.625)
        # held-out: 32 per cell, 8 on each of the 4 scanners; the 24 on the training scanners give a rare group
        # of 12 cells (age < 60, normal BMI) 288 patients, half HF: a balanced accuracy near 0.7 then has a 95%
        # CI of about +-0.05 (+-0.11 with 6 per cell), and the paired differences between strategies on the
        # same patients are tighter still; the held-out scanner's 8 per cell are its balanced OOD cohort
        phantom=PhantomConfig(n_patients=1500, heldout_per_cell=32, hf_prevalence=0.08, difficulty=0.9),
        frames=FrameSpec(crop_px=64, size=64),
        min_train_patients_per_cell=3,
        diffusion=DiffusionConfig.demo(),
        classifier=ClassifierConfig.demo(),
        synthetic_per_cell=2 * ClassifierConfig.demo().synthetic_per_cell,
        fid_images=200,
    ),
    "paper": Profile(
        name="paper",
        phantom=PhantomConfig(n_patients=25480, heldout_per_cell=20, hf_prevalence=0.0108, difficulty=0.9, matrix=128, n_slices=10, n_frames=50),
        frames=FrameSpec(crop_px=120, size=224),
        min_train_patients_per_cell=5,
        diffusion=DiffusionConfig.paper(),
        classifier=ClassifierConfig.paper(),
        synthetic_per_cell=2 * ClassifierConfig.paper().synthetic_per_cell,
        attribute_epochs=10,
        attribute_texture_blur=2.1,  # the demo's 0.6 pixel at 64 px, at 224 px
    ),
}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
