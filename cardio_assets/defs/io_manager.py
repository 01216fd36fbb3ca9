"""The IO manager: Dagster stores every asset value in the data lake (`cardio_assets.lake`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from dagster import InputContext, OutputContext, UPathIOManager, io_manager
from upath import UPath

from cardio_assets.lake.mirror import fetched
from cardio_assets.lake.values import FrameSet, read_value, write_value


class LakeStore(UPathIOManager):
    """Dagster's UPath IO manager with our folder-per-value formats.

    Values live in the settings' local lake folder; for a lake on object storage that folder is
    the working copy (`lake.mirror`): a written value is published by the atomic write, a value
    about to be loaded is first fetched where the store holds a newer one.
    """

    extension = ""

    def dump_to_path(self, context: OutputContext, obj, path: UPath) -> None:
        write_value(Path(str(path)), obj)

    def get_metadata(self, context: OutputContext, obj) -> dict:
        # beside Dagster's own "path": how much is stored, on every asset's page
        if isinstance(obj, pd.DataFrame):
            return {"rows": len(obj)}
        if isinstance(obj, FrameSet):
            return {"images": len(obj), "image_shape": str(tuple(obj.images.shape[1:]))}
        return {}

    def load_from_path(self, context: InputContext, path: UPath):
        return read_value(fetched(Path(str(path))))


@io_manager(
    required_resource_keys={"settings"},
    description="Stores every asset value under <data lake>/<asset>/<partition>/, the data lake of the `settings` resource.",
)
def lake_io_manager(init_context) -> LakeStore:
    # Read from the settings resource as resolved for this run, so an environment variable or a
    # launchpad override of `data_lake` moves the asset values together with models and reports.
    return LakeStore(base_path=UPath(init_context.resources.settings.lake_dir()))
