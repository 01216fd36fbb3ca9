"""The pipeline's settings, one typed resource editable in the UI's launchpad."""


import json
import os
from pathlib import Path

from dagster import ConfigurableResource, EnvVar
from pydantic import Field, field_validator

from cardio_assets.cohort.ood import OodPolicy
from cardio_assets.lake import mirror
from cardio_assets.profiles import Profile, get_profile

SOURCES = ("phantom", "ukbb", "mms", "acdc")

# Each setting's environment variable (README, "Configuration"); an unset one leaves the field's default.
STRING_VARS = {
    "profile": "CARDIO_PROFILE",
    "data_lake": "CARDIO_DATA_LAKE",
    "lake_cache": "CARDIO_LAKE_CACHE",
    "lake_storage_options": "CARDIO_LAKE_STORAGE_OPTIONS",
    "source": "CARDIO_SOURCE",
    "source_root": "CARDIO_SOURCE_ROOT",
    "metadata_csv": "CARDIO_METADATA_CSV",
    "diagnosis_map": "CARDIO_DIAGNOSIS_MAP",
    "sd_backbone_dir": "CARDIO_SD_BACKBONE_DIR",
    "resnet_weights": "CARDIO_RESNET_WEIGHTS",
    "inception_weights": "CARDIO_INCEPTION_WEIGHTS",
    "ood_holdout": "CARDIO_OOD_HOLDOUT",
}
INT_VARS = {"seed": "CARDIO_SEED", "workers": "CARDIO_WORKERS"}
UKBB_INSTANCE_FALLBACK_VAR = "CARDIO_UKBB_INSTANCE_FALLBACK"


def is_url(location: str) -> bool:
    """An object-storage (fsspec) URL rather than a local folder."""
    return "://" in str(location) and not str(location).startswith("file://")


def ukbb_instance_fallback_from_env() -> bool:
    return os.getenv(UKBB_INSTANCE_FALLBACK_VAR, "0").strip().lower() in ("1", "true", "yes", "on")


class PipelineSettings(ConfigurableResource):
    """Where the cohort comes from, how big a run is, where outputs go.

    Values come from environment variables (see README) so that `dagster dev`, the
    demo command and the tests share one mechanism; the launchpad can override each.
    """

    profile: str = Field(default="demo", description="smoke | demo | paper")
    # validate_default: the default folder is made absolute too
    data_lake: str = Field(default="data_lake", validate_default=True,
                           description="folder that holds every output, or an object-storage URL (s3://bucket/prefix, gs://, az://)")
    lake_cache: str = Field(default="", description="lake on object storage: the local working copy (default ~/.cache/cardio-assets/<bucket/prefix>)")
    lake_storage_options: str = Field(default="", description='lake on object storage: fsspec options as JSON, e.g. {"endpoint_url": "http://minio:9000"}')
    source: str = Field(default="phantom", description="phantom | ukbb | mms | acdc")
    source_root: str = Field(default="", description="the cohort's folder (not used for phantom)")
    metadata_csv: str = Field(default="", description="UK Biobank or M&Ms metadata CSV (not for ACDC)")
    diagnosis_map: str = Field(default="", description='JSON override of pathology -> "hf"/"healthy"/null (M&Ms, ACDC)')
    seed: int = Field(default=0, description="seed of every random choice in the run")
    workers: int = Field(default=0, description="worker processes for I/O-heavy steps; 0 = one per core")
    ukbb_instance_fallback: bool = Field(default=False, description="UK Biobank: where age or BMI is blank at the imaging visit (instance 2), take another visit's value (recorded per patient); off: blank, no cell")
    sd_backbone_dir: str = Field(default="", description="local Stable Diffusion 2.1-base folder (diffusers layout); empty: train the profile's small backbone")
    resnet_weights: str = Field(default="", description="local ImageNet ResNet-18 state_dict file; empty: random initialisation")
    ood_holdout: str = Field(default="auto", description="vendors or sites no model trains on, tested out of distribution: column=value[,value] (vendor=D, site=site-4); auto: the profile's for the phantom, none for real data; none: off")
    inception_weights: str = Field(default="", description="local FID InceptionV3 weights file (torch-fidelity); empty: a feature extractor trained on real frames")

    @field_validator("data_lake", mode="before")
    @classmethod
    def _absolute_data_lake(cls, value):
        # An EnvVar is only a name here: Dagster resolves it when a run starts and builds the
        # resource again from the value, which then passes through here and is made absolute.
        if isinstance(value, EnvVar) or is_url(value):
            return value
        return os.path.abspath(value)

    @classmethod
    def from_env(cls) -> "PipelineSettings":
        """The values the environment holds now: for code that reads them before a run (the headless CLI)."""
        strings = {field: os.environ[var] for field, var in STRING_VARS.items() if var in os.environ}
        ints = {field: int(os.environ[var]) for field, var in INT_VARS.items() if var in os.environ}
        return cls(**strings, **ints, ukbb_instance_fallback=ukbb_instance_fallback_from_env())

    @classmethod
    def bound_to_env_vars(cls) -> "PipelineSettings":
        """For the code location: each set variable becomes an EnvVar, which Dagster reads when a run
        starts, so a deployment configures the runs and the launchpad can override any value.

        An unset variable leaves the field's default: an EnvVar has no default, and an unset one
        fails the run. The UK Biobank flag is read here, at load: EnvVar fills str and int fields only.
        """
        strings = {field: EnvVar(var) for field, var in STRING_VARS.items() if var in os.environ}
        ints = {field: EnvVar.int(var) for field, var in INT_VARS.items() if var in os.environ}
        return cls(**strings, **ints, ukbb_instance_fallback=ukbb_instance_fallback_from_env())

    def get_profile(self) -> Profile:
        return get_profile(self.profile)

    def ood_policy(self) -> OodPolicy | None:
        """The out-of-distribution hold-out of this run (`cohort.ood`)."""
        if self.ood_holdout.strip().lower() == "auto":
            return OodPolicy.parse(self.get_profile().phantom_ood_holdout) if self.source == "phantom" else None
        return OodPolicy.parse(self.ood_holdout)

    def lake_dir(self) -> Path:
        """The local folder steps read and write: the lake itself, or the working copy of a lake on
        object storage, which this attaches (`lake.mirror`) so that every write there is published."""
        if not is_url(self.data_lake):
            return Path(self.data_lake)
        cache = Path(self.lake_cache or Path.home() / ".cache" / "cardio-assets" / self.data_lake.split("://", 1)[1])
        options = json.loads(self.lake_storage_options) if self.lake_storage_options else {}
        mirror.attach(cache, self.data_lake, options)
        return cache

    def lake_relative(self, folder: str | Path) -> str:
        """A folder as an asset value stores it: relative to the lake when inside it, so that a lake
        copied or moved elsewhere, or worked on through another machine's local copy, finds its own
        models there and not at the place they were first written (which may still hold an older lake);
        a folder outside the lake (local Stable Diffusion weights) stays as given."""
        path, root = Path(folder).resolve(), self.lake_dir().resolve()
        return path.relative_to(root).as_posix() if path == root or root in path.parents else str(folder)

    def lake_path(self, stored: str | Path) -> Path:
        """The folder an asset value names (`lake_relative`), on this machine: a relative one under the
        lake, an absolute one (outside the lake, or written before values were relative) as it is."""
        path = Path(stored)
        return path if path.is_absolute() else self.lake_dir() / path

    def models_dir(self) -> Path:
        """Model folders (save_pretrained layouts, checkpoints) live beside the asset values."""
        return self.lake_dir() / "models"

    def reports_dir(self) -> Path:
        return self.lake_dir() / "reports"

    def n_workers(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    def diagnosis_overrides(self) -> dict | None:
        return json.loads(self.diagnosis_map) if self.diagnosis_map else None
