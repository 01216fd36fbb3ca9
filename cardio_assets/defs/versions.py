"""Code and data versions, so that Dagster can tell when a rerun changed nothing.

`CODE_VERSION` is on every asset: bump it when the code of the pipeline changes what an asset
outputs for the same inputs and settings (a release does; a refactor does not). Deterministic
assets (the cohort tables, `frames`) also report a data version from their content
(`lake.values.content_hash`): rematerializing one cell with the same data leaves everything
downstream fresh instead of "upstream data changed". The generator, synthetic frames,
classifiers and reports keep Dagster's own data version (from code version and inputs): their
bytes can differ between devices even with the same seeds.
"""

from dagster import DataVersion

from cardio_assets.lake.values import content_hash

CODE_VERSION = "2026.11.1"


def data_version(value) -> DataVersion:
    return DataVersion(content_hash(value))
