"""Code and data versions, so that Dagster can tell when a rerun changed nothing.

`CODE_VERSION` is on every asset: bump it when the code of the pipeline changes what an asset
outputs for the same inputs and settings (a release does; a refactor does not). Deterministic
assets (the cohort tables, `frames`) also report a data version from their content
(`lake.values.content_hash`): rematerializing one cell with the same data leaves everything
downstream fresh instead of "upstream data changed". The generator, synthetic frames,
classifiers and reports keep Dagster's own data version (from code version and inputs): their
bytes can differ between devices even with the same seeds.
"""

import warnings

from dagster import BetaWarning, DataVersion

from cardio_assets.lake.values import content_hash

# Output(data_version=...) is marked beta by Dagster; the warning came once per cohort output and
# frames partition (40 times in a demo's log) and said nothing a user can act on
warnings.filterwarnings("ignore", message="Parameter `data_version`", category=BetaWarning)

CODE_VERSION = "2026.12.4"


def data_version(value) -> DataVersion:
    return DataVersion(content_hash(value))
