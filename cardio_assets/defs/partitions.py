"""The partitions: the 36 subgroup cells (`cardio_assets.cohort.cells`) and the six classifier
training strategies (`cardio_assets.classify.strategies`)."""

from dagster import StaticPartitionsDefinition

from cardio_assets.classify.strategies import STRATEGY_NAMES
from cardio_assets.cohort.cells import CELL_KEYS

cell_partitions = StaticPartitionsDefinition(list(CELL_KEYS))
strategy_partitions = StaticPartitionsDefinition(list(STRATEGY_NAMES))
