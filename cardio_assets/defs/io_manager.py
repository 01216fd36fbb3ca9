"""The IO manager: Dagster stores every asset value in the data lake (`cardio_assets.lake`)."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableIOManagerFactory, InputContext, OutputContext, UPathIOManager
from upath import UPath

from cardio_assets.lake.values import read_value, write_value


class LakeStore(UPathIOManager):
    """Dagster's UPath IO manager with our folder-per-value formats.

    The atomic swap uses local renames; on object storage (an s3:// base) the same
    formats are written but without the rename guarantee.
    """

    extension = ""

    def dump_to_path(self, context: OutputContext, obj, path: UPath) -> None:
        write_value(Path(str(path)), obj)

    def load_from_path(self, context: InputContext, path: UPath):
        return read_value(Path(str(path)))


class LakeIOManager(ConfigurableIOManagerFactory):
    """Stores every asset under `base_dir/<asset>/<partition>/`."""

    base_dir: str

    def create_io_manager(self, context) -> LakeStore:
        return LakeStore(base_path=UPath(self.base_dir))
