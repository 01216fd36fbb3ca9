"""The heart-failure classifier: config, ResNet-18, training, and the six training strategies.

Plain Python (no Dagster): `run_strategy(name, real, synthetic, config, seed)` trains one
strategy with one seed and returns its test and held-out predictions.
"""

from cardio_assets.classify.config import ClassifierConfig
from cardio_assets.classify.model import PretrainedWeightsError, build_resnet18
from cardio_assets.classify.strategies import (
    PREDICTION_COLUMNS,
    STRATEGIES,
    STRATEGY_NAMES,
    ImageSet,
    build_training_set,
    run_patients,
    run_record,
    run_strategies,
    run_strategy,
)
from cardio_assets.classify.train import choose_threshold, predict, train_classifier, undersample_healthy

__all__ = [
    "ClassifierConfig", "PretrainedWeightsError", "build_resnet18", "PREDICTION_COLUMNS", "STRATEGIES",
    "STRATEGY_NAMES", "ImageSet", "build_training_set", "run_patients", "run_record", "run_strategies", "run_strategy",
    "choose_threshold", "predict", "train_classifier", "undersample_healthy",
]
