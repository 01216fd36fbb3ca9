"""Does bf16 autocast change what the HF classifiers learn? fp32 against bf16 on one lake.

    python benchmarks/classifier_dtype.py --lake data_lake [--strategies real,synth_pretrain_real_finetune] [--seeds 2]

Trains the given strategies with the demo profile's classifier settings on the lake's real and
synthetic frames, once with `dtype="float32"` and once with `dtype="bfloat16"`, same seeds, and
prints one JSON line: seconds of each, and per strategy and evaluation set the balanced accuracy
(mean over seeds) of each and the 95% bootstrap CI (patients resampled with replacement, 300 times) of the paired
difference bf16 - fp32. A difference whose CI excludes 0 where the two arms differ only by
rounding says how much a numerically different but equivalent training moves a result: the
patient-level CIs of the fairness report do not include that variation between training runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cardio_assets.classify.config import ClassifierConfig  # noqa: E402
from cardio_assets.classify.strategies import ImageSet, run_strategies  # noqa: E402
from cardio_assets.cohort.cells import CELL_KEYS  # noqa: E402
from cardio_assets.defs.images import gather  # noqa: E402
from cardio_assets.lake.values import read_value  # noqa: E402

DTYPES = ("float32", "bfloat16")


def _per_seed(predictions, weights=None) -> dict[int, float]:
    """Balanced accuracy per seed; `weights`: patient id -> times drawn (a bootstrap sample)."""
    out = {}
    for seed, g in predictions.groupby("seed"):
        w = None if weights is None else g["patient_id"].map(weights).fillna(0).to_numpy()
        out[seed] = balanced_accuracy_score(g["label"], g["prediction"], sample_weight=w)
    return out


def paired_ci(a, b, rng: np.random.Generator, n: int = 300) -> list[float]:
    """95% bootstrap CI of mean-over-seeds balanced accuracy, b - a, patients resampled with replacement."""
    patients = a["patient_id"].unique()
    diffs = []
    for _ in range(n):
        drawn, counts = np.unique(rng.choice(patients, len(patients)), return_counts=True)
        weights = dict(zip(drawn, counts))
        ba_a, ba_b = _per_seed(a, weights), _per_seed(b, weights)
        diffs.append(np.mean([ba_b[s] - ba_a[s] for s in ba_a]))
    return [round(float(np.quantile(diffs, q)), 3) for q in (0.025, 0.975)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lake", type=Path, required=True)
    parser.add_argument("--strategies", default="real,synth_pretrain_real_finetune")
    parser.add_argument("--seeds", type=int, default=ClassifierConfig.demo().n_seeds)
    parser.add_argument("--evaluation-sets", default="test,heldout")
    args = parser.parse_args(argv)
    names = args.strategies.split(",")

    real, _ = gather({k: read_value(args.lake / "frames" / k) for k in CELL_KEYS})
    kept = [s for s in (read_value(args.lake / "synthetic_frames" / k) for k in CELL_KEYS) if len(s)]
    synthetic = ImageSet.concat(kept) if kept else None
    out: dict = {"strategies": names, "seeds": args.seeds}
    predictions = {}
    for dtype in DTYPES:
        start = time.perf_counter()
        predictions[dtype], _, _ = run_strategies(names, real, synthetic, ClassifierConfig.demo().with_(dtype=dtype),
                                                  seeds=range(args.seeds), log=lambda _: None)
        out[f"{dtype}_seconds"] = round(time.perf_counter() - start, 1)
    rng = np.random.default_rng(0)
    for name in names:
        for evaluation_set in args.evaluation_sets.split(","):
            arm = {dtype: p[(p["strategy"] == name) & (p["evaluation_set"] == evaluation_set)] for dtype, p in predictions.items()}
            out[f"{name}/{evaluation_set}"] = {
                "fp32": round(float(np.mean(list(_per_seed(arm["float32"]).values()))), 3),
                "bf16": round(float(np.mean(list(_per_seed(arm["bfloat16"]).values()))), 3),
                "bf16_minus_fp32_ci95": paired_ci(arm["float32"], arm["bfloat16"], rng),
            }
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
