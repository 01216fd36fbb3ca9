"""The one partitions definition: the 36 subgroup cells (keys from `cardio_assets.cohort.cells`)."""

from dagster import StaticPartitionsDefinition

from cardio_assets.cohort.cells import CELL_KEYS

cell_partitions = StaticPartitionsDefinition(list(CELL_KEYS))
