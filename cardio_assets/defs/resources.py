"""The pipeline's settings, one typed resource editable in the UI's launchpad."""


import json
import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from cardio_assets.profiles import Profile, get_profile

SOURCES = ("phantom", "ukbb", "mms", "acdc")


class PipelineSettings(ConfigurableResource):
    """Where the cohort comes from, how big a run is, where outputs go.

    Defaults come from environment variables (see README) so that `dagster dev`, the
    demo command and the tests share one mechanism.
    """

    profile: str = Field(default="demo", description="smoke | demo | paper")
    data_lake: str = Field(default="data_lake", description="folder that holds every output")
    source: str = Field(default="phantom", description="phantom | ukbb | mms | acdc")
    source_root: str = Field(default="", description="the cohort's folder (not used for phantom)")
    metadata_csv: str = Field(default="", description="UK Biobank or M&Ms metadata CSV (not for ACDC)")
    diagnosis_map: str = Field(default="", description='JSON override of pathology -> "hf"/"healthy"/null (M&Ms, ACDC)')
    seed: int = Field(default=0, description="seed of every random choice in the run")
    workers: int = Field(default=0, description="worker processes for I/O-heavy steps; 0 = one per core")
    ukbb_instance_fallback: bool = Field(default=False, description="UK Biobank: where age or BMI is blank at the imaging visit (instance 2), take another visit's value (recorded per patient); off: blank, no cell")
    sd_backbone_dir: str = Field(default="", description="local Stable Diffusion 2.1-base folder (diffusers layout); empty: train the profile's small backbone")
    resnet_weights: str = Field(default="", description="local ImageNet ResNet-18 state_dict file; empty: random initialisation")
    inception_weights: str = Field(default="", description="local FID InceptionV3 weights file (torch-fidelity); empty: a feature extractor trained on real frames")

    @classmethod
    def from_env(cls) -> "PipelineSettings":
        return cls(
            profile=os.getenv("CARDIO_PROFILE", "demo"),
            data_lake=os.path.abspath(os.getenv("CARDIO_DATA_LAKE", "data_lake")),
            source=os.getenv("CARDIO_SOURCE", "phantom"),
            source_root=os.getenv("CARDIO_SOURCE_ROOT", ""),
            metadata_csv=os.getenv("CARDIO_METADATA_CSV", ""),
            diagnosis_map=os.getenv("CARDIO_DIAGNOSIS_MAP", ""),
            seed=int(os.getenv("CARDIO_SEED", "0")),
            workers=int(os.getenv("CARDIO_WORKERS", "0")),
            ukbb_instance_fallback=os.getenv("CARDIO_UKBB_INSTANCE_FALLBACK", "0").strip().lower() in ("1", "true", "yes", "on"),
            sd_backbone_dir=os.getenv("CARDIO_SD_BACKBONE_DIR", ""),
            resnet_weights=os.getenv("CARDIO_RESNET_WEIGHTS", ""),
            inception_weights=os.getenv("CARDIO_INCEPTION_WEIGHTS", ""),
        )

    def get_profile(self) -> Profile:
        return get_profile(self.profile)

    def models_dir(self) -> Path:
        """Model folders (save_pretrained layouts, checkpoints) live beside the asset values."""
        return Path(self.data_lake) / "models"

    def reports_dir(self) -> Path:
        return Path(self.data_lake) / "reports"

    def n_workers(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    def diagnosis_overrides(self) -> dict | None:
        return json.loads(self.diagnosis_map) if self.diagnosis_map else None
