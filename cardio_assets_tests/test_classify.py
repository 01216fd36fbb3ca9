"""The HF classifier: training, best-epoch restore, strategies, determinism, sampling, weights."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from cardio_assets.classify import schemes as schemes_module
from cardio_assets.classify.config import ClassifierConfig
from cardio_assets.classify.model import PretrainedWeightsError, build_resnet18
from cardio_assets.classify.schemes import mixed_batches
from cardio_assets.classify.strategies import (
    PREDICTION_COLUMNS,
    STRATEGY_NAMES,
    ImageSet,
    balanced_synthetic_rows,
    run_strategies,
    run_strategy,
)
from cardio_assets.classify.train import (
    Frames,
    balanced_accuracy_at,
    choose_threshold,
    predict,
    texture_jitter,
    train_classifier,
    undersample_healthy,
)
from cardio_assets.cohort.cells import ALL_CELLS

SIZE = 16
CONFIG = ClassifierConfig.smoke().with_(image_size=32, batch_size=16, epochs=2, lr=1e-3, torch_threads=1)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(rng: np.random.Generator, hf: bool) -> np.ndarray:
    """An easy task: HF frames hold a bright square, healthy ones do not."""
    img = rng.random((3, SIZE, SIZE)).astype(np.float32) * 0.3
    if hf:
        img[:, 4:10, 4:10] += 0.6
    return np.clip(img, 0.0, 1.0)


def _easy(n: int, hf_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < hf_share).astype(np.int64)
    labels[:2] = [0, 1]
    return np.stack([_image(rng, bool(y)) for y in labels]), labels


def _cohort(seed: int = 0, n_train: int = 24, n_val: int = 20, n_test: int = 24, per_train: int = 2,
            hf_share: float = 0.3):
    """A tiny real cohort in the index format the classifier receives (memmap-free)."""
    rng = np.random.default_rng(seed)
    rows, imgs = [], []
    pid = 0
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test), ("heldout", 36)):
        for i in range(n):
            if split == "heldout":
                cell = ALL_CELLS[i]
            else:
                hf = i < 2 or rng.random() < hf_share
                pool = [c for c in ALL_CELLS if (c.diagnosis == "hf") == hf]
                cell = pool[int(rng.integers(len(pool)))]
            for _ in range(per_train if split == "train" else 1):
                imgs.append(_image(rng, cell.diagnosis == "hf"))
                rows.append(dict(patient_id=f"r{pid:03d}", split=split, cell=cell.key, sex=cell.sex,
                                 age_band=cell.age_band, bmi_band=cell.bmi_band, diagnosis=cell.diagnosis,
                                 prompt="", synthetic=False))
            pid += 1
    return ImageSet(np.stack(imgs), pd.DataFrame(rows))


def _synthetic(per_cell: int = 2, seed: int = 1):
    rng = np.random.default_rng(seed)
    rows, imgs = [], []
    for cell in ALL_CELLS:
        for j in range(per_cell):
            imgs.append(_image(rng, cell.diagnosis == "hf"))
            rows.append(dict(patient_id=f"s-{cell.key}-{j}", split="train", cell=cell.key, sex=cell.sex,
                             age_band=cell.age_band, bmi_band=cell.bmi_band, diagnosis=cell.diagnosis,
                             prompt="", synthetic=True))
    return ImageSet(np.stack(imgs), pd.DataFrame(rows))


def _quiet(_msg: str) -> None:
    pass


def test_training_on_an_easy_task_beats_chance():
    x, y = _easy(64, 0.4, seed=0)
    vx, vy = _easy(24, 0.4, seed=1)
    tx, ty = _easy(40, 0.4, seed=2)
    model, history = train_classifier((x, y), (vx, vy, None), CONFIG, seed=0, log=_quiet)
    scores = predict(model, tx)
    threshold = choose_threshold(predict(model, vx), vy)
    assert balanced_accuracy_at(scores, ty, threshold) > 0.8
    assert history["best_epoch"] in range(CONFIG.epochs)
    assert history["model_description"].startswith("random initialisation")


def test_best_epoch_weights_are_restored():
    """Epoch 3 trains only on flipped labels, which ruins the model; the epoch-2-or-earlier
    weights must come back, and the returned model must score exactly as that epoch did."""
    x, y = _easy(48, 0.5, seed=3)
    images = np.concatenate([x, x])
    labels = np.concatenate([y, 1 - y])  # positions 48.. carry wrong labels
    vx, vy = _easy(24, 0.5, seed=4)
    epoch = {"n": 0}

    def batches(rng):
        epoch["n"] += 1
        if epoch["n"] <= 2:
            order = rng.permutation(48)
            return [order[i:i + 16] for i in range(0, 48, 16)]
        return [48 + rng.choice(48, 16, replace=False) for _ in range(12)]

    config = CONFIG.with_(epochs=3)
    model, history = train_classifier((images, labels), (vx, vy, None), config, seed=0, log=_quiet,
                                      epoch_batches=batches)
    best = history["best_epoch"]
    assert best < 2, history["val_balanced_accuracy"]
    assert history["val_balanced_accuracy"][2] < history["val_balanced_accuracy"][best]
    val_scores = predict(model, vx)
    restored = balanced_accuracy_at(val_scores, vy, choose_threshold(val_scores, vy))
    assert restored == pytest.approx(history["val_balanced_accuracy"][best])
    eps = 1e-7
    loss = -np.mean(vy * np.log(val_scores + eps) + (1 - vy) * np.log(1 - val_scores + eps))
    assert loss == pytest.approx(history["val_loss"][best], rel=1e-5)


def test_init_state_is_where_training_starts():
    x, y = _easy(32, 0.5, seed=5)
    vx, vy = _easy(16, 0.5, seed=6)
    start, _ = train_classifier((x, y), (vx, vy, None), CONFIG.with_(epochs=1), seed=1, log=_quiet)
    init_state = {k: v.clone() for k, v in start.state_dict().items()}
    # lr 0: Adam leaves the weights as they were, so they must equal the given state
    frozen, history = train_classifier((x, y), (vx, vy, None), CONFIG.with_(epochs=1, lr=0.0), seed=2,
                                       init_state=init_state, log=_quiet, init_description="pretrained here")
    for name, param in frozen.named_parameters():
        assert torch.equal(param.detach(), init_state[name]), name
    assert history["model_description"] == "pretrained here"


def test_synthetic_pretraining_is_the_start_of_real_fine_tuning(monkeypatch):
    calls = []
    real_train = schemes_module.train_classifier

    def recording(train, val, config, seed, init_state=None, log=print, **kwargs):
        model, history = real_train(train, val, config, seed, init_state=init_state, log=log, **kwargs)
        calls.append({"n": len(train[1]), "init_state": init_state, "model": model,
                      "state": {k: v.clone() for k, v in model.state_dict().items()}, "kwargs": kwargs})
        return model, history

    monkeypatch.setattr(schemes_module, "train_classifier", recording)
    real, synthetic = _cohort(), _synthetic(per_cell=2)
    config = CONFIG.with_(epochs=1, synthetic_per_cell=1)
    predictions = run_strategy("synth_pretrain_real_finetune", real, synthetic, config, seed=0, log=_quiet)
    assert len(calls) == 2
    pretrain, finetune = calls
    assert pretrain["init_state"] is None and pretrain["n"] == 72  # 2 x 1 synthetic per cell
    assert finetune["init_state"] is not None
    for name, tensor in pretrain["state"].items():
        assert torch.equal(finetune["init_state"][name], tensor), name
    assert finetune["kwargs"]["lr"] == config.finetune_lr
    assert "synthetic pretraining" in predictions.attrs["run"]["model_description"]


def count_trainings(monkeypatch) -> list[int]:
    """From here on, each classifier training appends its training-set size to the returned list."""
    trainings = []
    real_train = schemes_module.train_classifier

    def counting(train, *args, **kwargs):
        trainings.append(len(train[1]))
        return real_train(train, *args, **kwargs)

    monkeypatch.setattr(schemes_module, "train_classifier", counting)
    return trainings


def test_the_sweep_pretrains_on_synthetic_once_per_seed_with_the_same_result(monkeypatch):
    real, synthetic = _cohort(), _synthetic(per_cell=2)
    config = CONFIG.with_(epochs=1, synthetic_per_cell=1)
    alone = run_strategy("synth_pretrain_real_finetune", real, synthetic, config, seed=0, log=_quiet)

    trainings = count_trainings(monkeypatch)
    names = ["synth_only", "synth_pretrain_real_finetune"]
    predictions, runs, _ = run_strategies(names, real, synthetic, config, seeds=[0, 1], log=_quiet)
    # per seed: synth_only's training and the fine-tuning; the pretraining is synth_only's model
    n_real = int(runs.loc[runs["strategy"] == "synth_pretrain_real_finetune", "n_train_real"].iloc[0])
    assert trainings == [72, n_real, 72, n_real]
    swept = predictions[(predictions["strategy"] == "synth_pretrain_real_finetune") & (predictions["seed"] == 0)]
    assert np.array_equal(swept["score"].to_numpy(), alone["score"].to_numpy())


def test_a_sweep_reuses_stored_runs_and_redoes_only_what_changed(monkeypatch, tmp_path):
    real, synthetic = _cohort(), _synthetic(per_cell=2)
    config = CONFIG.with_(epochs=1, synthetic_per_cell=1)
    names = ["real", "synth_only"]
    first, first_runs, first_patients = run_strategies(names, real, synthetic, config, seeds=[0], log=_quiet, store=tmp_path)
    assert sorted(p.name.split("-")[0] for p in tmp_path.iterdir()) == ["real", "synth_only"]

    trainings = count_trainings(monkeypatch)
    # the same data and settings: nothing trains, and the result is the stored one
    again, again_runs, again_patients = run_strategies(names, real, synthetic, config, seeds=[0], log=_quiet, store=tmp_path)
    assert trainings == []
    pd.testing.assert_frame_equal(again, first)
    assert again_runs["threshold"].tolist() == first_runs["threshold"].tolist()
    assert not first_runs["reused_stored_run"].any() and again_runs["reused_stored_run"].all()
    pd.testing.assert_frame_equal(again_patients, first_patients)  # kept for the leakage check

    # other synthetic images: real is reused, synth_only trains again and replaces its stored run
    changed = _synthetic(per_cell=2, seed=7)
    run_strategies(names, real, changed, config, seeds=[0], log=_quiet, store=tmp_path)
    assert trainings == [72]
    assert len(list(tmp_path.glob("synth_only-seed0-*"))) == 1
    # a setting that changes training redoes both; one that does not (threads) reuses them
    trainings.clear()
    run_strategies(names, real, changed, config.with_(torch_threads=1), seeds=[0], log=_quiet, store=tmp_path)
    assert trainings == []
    run_strategies(names, real, changed, config.with_(lr=config.lr / 2), seeds=[0], log=_quiet, store=tmp_path)
    assert len(trainings) == 2


def test_the_finetune_strategy_in_its_own_step_starts_from_the_stored_synth_only_model(monkeypatch, tmp_path):
    """Strategies run as separate steps (the classifier_strategy_runs partitions): the fine-tuning
    strategy finds synth_only's model in the run store and gives what one sweep of both gives."""
    real, synthetic = _cohort(), _synthetic(per_cell=2)
    config = CONFIG.with_(epochs=1, synthetic_per_cell=1)
    together, _, _ = run_strategies(["synth_only", "synth_pretrain_real_finetune"], real, synthetic, config, seeds=[0], log=_quiet)
    run_strategies(["synth_only"], real, synthetic, config, seeds=[0], log=_quiet, store=tmp_path)

    trainings = count_trainings(monkeypatch)
    apart, runs, _ = run_strategies(["synth_pretrain_real_finetune"], real, synthetic, config, seeds=[0], log=_quiet, store=tmp_path)
    assert len(trainings) == 1 and trainings[0] == runs["n_train_real"].item()  # the fine-tuning only
    finetuned = together[together["strategy"] == "synth_pretrain_real_finetune"].reset_index(drop=True)
    np.testing.assert_allclose(apart["score"].to_numpy(), finetuned["score"].to_numpy(), rtol=1e-5, atol=1e-6)
    assert runs["stored_run"].item().startswith("synth_pretrain_real_finetune-seed0-")


def test_run_strategy_predictions_are_real_test_and_heldout_patients():
    real, synthetic = _cohort(), _synthetic(per_cell=2)
    config = CONFIG.with_(epochs=1, synthetic_per_cell=1, alpha_grid=(0.5,))
    predictions = run_strategy("real_synth_mix_alpha", real, synthetic, config, seed=0, log=_quiet)
    assert tuple(predictions.columns) == PREDICTION_COLUMNS
    assert set(predictions["evaluation_set"]) == {"test", "heldout"}
    expected = set(real.index.loc[real.index["split"].isin(["test", "heldout"]), "patient_id"])
    assert set(predictions["patient_id"]) == expected  # no synthetic image is ever evaluated
    assert not predictions.duplicated(["evaluation_set", "patient_id"]).any()
    assert predictions.attrs["run"]["alpha"] == 0.5
    assert ((predictions["score"] >= predictions["threshold"]).astype(int) == predictions["prediction"]).all()


def test_a_fixed_seed_gives_the_same_model():
    x, y = _easy(32, 0.5, seed=7)
    vx, vy = _easy(16, 0.5, seed=8)
    config = CONFIG.with_(epochs=1)
    a, _ = train_classifier((x, y), (vx, vy, None), config, seed=11, log=_quiet)
    b, _ = train_classifier((x, y), (vx, vy, None), config, seed=11, log=_quiet)
    c, _ = train_classifier((x, y), (vx, vy, None), config, seed=12, log=_quiet)
    assert np.array_equal(predict(a, vx), predict(b, vx))
    assert not np.array_equal(predict(a, vx), predict(c, vx))


def test_bf16_autocast_trains_in_fp32_weights_gives_fp32_outputs_and_is_reproducible():
    x, y = _easy(64, 0.4, seed=0)
    vx, vy = _easy(24, 0.4, seed=1)
    tx, ty = _easy(40, 0.4, seed=2)
    config = CONFIG.with_(dtype="bfloat16")
    model, history = train_classifier((x, y), (vx, vy, None), config, seed=0, log=_quiet)
    again, _ = train_classifier((x, y), (vx, vy, None), config, seed=0, log=_quiet)
    assert history["compute_dtype"] == "bfloat16" and model.compute_dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert model(torch.from_numpy(tx[:4])).dtype == torch.float32
    assert model.features(torch.from_numpy(tx[:4])).dtype == torch.float32
    scores = predict(model, tx)
    assert balanced_accuracy_at(scores, ty, choose_threshold(predict(model, vx), vy)) > 0.8
    assert np.array_equal(scores, predict(again, tx))
    # the same weights without autocast: bf16 changes the scores by rounding, not by meaning
    model.compute_dtype = torch.float32
    assert 0 < np.abs(predict(model, tx) - scores).max() < 0.05


def test_auto_dtype_is_bf16_only_where_the_cpu_has_bf16_units_and_stored_runs_tell_them_apart(monkeypatch):
    from cardio_assets.classify import run_store

    auto = ClassifierConfig.smoke().with_(device="cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert auto.compute_dtype() == torch.bfloat16
    assert run_store.run_key("real", 0, auto, "r", None) == run_store.run_key("real", 0, auto.with_(dtype="bfloat16"), "r", None)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert auto.compute_dtype() == torch.float32
    assert run_store.run_key("real", 0, auto, "r", None) != run_store.run_key("real", 0, auto.with_(dtype="bfloat16"), "r", None)
    assert auto.with_(dtype="bfloat16").compute_dtype() == torch.bfloat16
    assert auto.with_(dtype="float16").compute_dtype() == torch.float32  # no fp16 training without a gradient scaler


def test_undersampling_reaches_the_hf_fraction_at_patient_level():
    rows = []
    for p in range(40):
        rows += [{"patient_id": f"hf{p}", "diagnosis": "hf"}] * 9
    for p in range(400):
        rows += [{"patient_id": f"ok{p}", "diagnosis": "healthy"}] * 9
    index = pd.DataFrame(rows)
    kept = undersample_healthy(index, 0.25, seed=0)
    per_patient = kept.groupby("patient_id")["diagnosis"].first()
    assert (per_patient == "hf").sum() == 40
    assert (per_patient == "healthy").sum() == 120
    assert (per_patient == "hf").mean() == pytest.approx(0.25)
    assert (kept.groupby("patient_id").size() == 9).all()  # whole patients, never single images
    assert kept.index.equals(undersample_healthy(index, 0.25, seed=0).index)
    assert not kept.index.equals(undersample_healthy(index, 0.25, seed=1).index)
    # already rarer healthy: nothing dropped
    assert len(undersample_healthy(index, 0.05, seed=0)) == len(index)


def test_balanced_synthetic_sets_are_equal_per_cell_and_nested():
    synthetic = _synthetic(per_cell=5).index
    one, notes_one = balanced_synthetic_rows(synthetic, 2, seed=3)
    two, notes_two = balanced_synthetic_rows(synthetic, 4, seed=3)
    assert set(notes_one["per_cell"].values()) == {2} and set(notes_two["per_cell"].values()) == {4}
    assert set(one) <= set(two)
    _, short = balanced_synthetic_rows(synthetic, 6, seed=3)
    assert len(short["short_cells"]) == 36


def test_mixed_batches_hold_alpha_real():
    cells = np.array([c.key for c in ALL_CELLS])
    labels = np.array([int(c.diagnosis == "hf") for c in ALL_CELLS])
    make = mixed_batches(n_real=64, synthetic_labels=labels, synthetic_cells=cells, alpha=0.25, batch_size=16,
                         hf_fraction=0.25)
    batches = make(np.random.default_rng(0))
    assert len(batches) == 4
    for b in batches:
        assert (b < 64).sum() == 4 and (b >= 64).sum() == 12
    synth = np.concatenate([b[b >= 64] - 64 for _ in range(30) for b in make(np.random.default_rng(_))])
    assert labels[synth].mean() == pytest.approx(0.25, abs=0.05)  # label prevalence kept


def test_choose_threshold_maximises_balanced_accuracy():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.9])
    labels = np.array([0, 0, 0, 1, 1, 1])
    t = choose_threshold(scores, labels)
    assert 0.3 < t < 0.4
    assert balanced_accuracy_at(scores, labels, t) == 1.0
    assert choose_threshold(scores, np.zeros(6)) == 0.5


def test_frames_read_only_the_rows_asked(tmp_path):
    data = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float16, shape=(10, 3, 4, 4))
    data[:] = np.arange(10, dtype=np.float16)[:, None, None, None]
    data.flush()
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    frames = Frames([(mm, np.array([7, 2])), (mm, np.array([5]))])
    assert frames.take([2, 0, 1])[:, 0, 0, 0].tolist() == [5.0, 7.0, 2.0]
    assert frames.subset([1, 2]).take([0, 1])[:, 0, 0, 0].tolist() == [2.0, 5.0]


def test_image_sets_concatenate_lazily(tmp_path):
    a = np.lib.format.open_memmap(tmp_path / "a.npy", mode="w+", dtype=np.float16, shape=(2, 3, 4, 4))
    b = np.lib.format.open_memmap(tmp_path / "b.npy", mode="w+", dtype=np.float16, shape=(3, 3, 4, 4))
    a[:], b[:] = 0.25, 0.75
    a.flush(), b.flush()
    sets = [ImageSet(np.load(tmp_path / f"{n}.npy", mmap_mode="r"), pd.DataFrame({"patient_id": [f"{n}{i}" for i in range(k)]}))
            for n, k in (("a", 2), ("b", 3))]
    both = ImageSet.concat(sets)
    assert len(both) == 5 and list(both.index["patient_id"]) == ["a0", "a1", "b0", "b1", "b2"]
    assert both.frames().take([1, 2])[:, 0, 0, 0].tolist() == [0.25, 0.75]
    assert isinstance(both.frames().arrays[0], np.memmap)


def test_missing_or_mismatched_local_weights_give_a_clear_error(tmp_path):
    missing = tmp_path / "resnet18-imagenet.pth"
    with pytest.raises(PretrainedWeightsError, match="resnet18-imagenet.pth"):
        build_resnet18(2, str(missing))
    wrong = tmp_path / "not-a-resnet.pth"
    torch.save(torch.nn.Linear(3, 2).state_dict(), wrong)
    with pytest.raises(PretrainedWeightsError, match="not-a-resnet.pth"):
        build_resnet18(2, str(wrong))
    good = tmp_path / "resnet18.pth"
    import torchvision

    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), good)
    model, description = build_resnet18(2, str(good))
    assert description == f"ImageNet weights from {good}"
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    assert model.fc.out_features == 2


def test_config_presets():
    assert ClassifierConfig.paper().image_size == 224 and ClassifierConfig.paper().n_seeds == 8
    assert ClassifierConfig.paper().batch_size == 64 and ClassifierConfig.paper().epochs == 10
    assert ClassifierConfig.demo().image_size == 64
    assert ClassifierConfig.for_profile("smoke") == ClassifierConfig.smoke()
    assert set(STRATEGY_NAMES) == {"real", "real_plus_synth_1x", "real_plus_synth_2x", "synth_only",
                                   "synth_pretrain_real_finetune", "real_synth_mix_alpha"}


def test_texture_jitter_blurs_about_half_the_images_and_scales_contrast_about_the_mean_reproducibly():
    checkerboard = (np.indices((16, 16)).sum(axis=0) % 2) * 0.5 + 0.25
    x = torch.tensor(np.broadcast_to(checkerboard, (200, 3, 16, 16)).copy(), dtype=torch.float32)
    blurred = texture_jitter(x, torch.Generator().manual_seed(0), max_blur_sigma=1.0, gain=0.0, offset=0.0)
    again = texture_jitter(x, torch.Generator().manual_seed(0), max_blur_sigma=1.0, gain=0.0, offset=0.0)
    assert torch.equal(blurred, again) and blurred.shape == x.shape
    untouched = ((blurred - x).abs() < 1e-4).flatten(1).all(dim=1)
    assert 0.35 < untouched.float().mean() < 0.7  # half are not blurred (and a few get a sigma too small to apply)
    # a blur flattens the checkerboard: every blurred image has less contrast than the original, most far less
    spread = blurred[~untouched].flatten(1).std(dim=1)
    assert (spread < 0.999 * x[0].std()).all() and spread.median() < 0.5 * x[0].std()
    assert blurred.min() >= 0 and blurred.max() <= 1
    # contrast only: each image's mean stays, its spread scales by at most 10% either way
    scaled = texture_jitter(x, torch.Generator().manual_seed(1), max_blur_sigma=0.0, gain=0.1, offset=0.0)
    torch.testing.assert_close(scaled.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)))
    ratio = scaled.flatten(1).std(dim=1) / x.flatten(1).std(dim=1)
    assert ((ratio >= 0.9 - 1e-5) & (ratio <= 1.1 + 1e-5)).all() and ratio.std() > 0.02


def test_attribute_predictor_learns_what_the_images_show_with_either_schedule():
    """Sex drawn as a bright square's size and BMI band as a border's width, the other
    attributes not in the image: with the one-cycle schedule the profiles use, those two heads
    learn them and are trusted for QC, the others stay near chance."""
    from cardio_assets.classify.attributes import ATTRIBUTES, AttributePredictor, train_attribute_predictor
    from cardio_assets.classify.train import Frames

    rng = np.random.default_rng(0)

    def make(n):
        rows, images = [], np.zeros((n, 3, 32, 32), np.float32)
        for i in range(n):
            attrs = {a: values[rng.integers(len(values))] for a, values in ATTRIBUTES.items()}
            half = 10 if attrs["sex"] == "male" else 5
            images[i, :, 16 - half:16 + half, 16 - half:16 + half] = 0.8
            border = {"normal": 1, "overweight": 3, "obese": 5}[attrs["bmi_band"]]
            images[i, :, :border], images[i, :, -border:] = 0.5, 0.5
            images[i] += rng.normal(0, 0.05, (3, 32, 32))
            rows.append(attrs)
        return Frames([(np.clip(images, 0, 1), None)]), pd.DataFrame(rows)

    train_x, train_index = make(384)
    val_x, val_index = make(120)
    predictor = train_attribute_predictor(train_x, train_index, val_x, val_index, image_size=32, epochs=4, seed=0,
                                          schedule="onecycle", lr=2e-3, log=_quiet)
    assert predictor.validation["sex"] > 0.9 and predictor.validation["bmi_band"] > 0.8, predictor.validation
    assert predictor.trusted == {"sex", "bmi_band"}
    assert predictor.validation["age_band"] < 0.6
    # QC floors, calibrated on the validation frames: all but ~2% of each class's frames reach their own
    floors = predictor.qc_floors()
    assert set(floors) == {"sex", "bmi_band"}
    probabilities = predictor.probabilities(val_x.take(np.arange(len(val_x))))
    for attribute, by_class in floors.items():
        reach = [p[attribute][t] >= by_class[t] for p, t in zip(probabilities, val_index[attribute]) if t in by_class]
        assert 0.95 <= np.mean(reach) < 1.0, (attribute, np.mean(reach))
    with tempfile.TemporaryDirectory() as folder:
        predictor.save(Path(folder))
        assert AttributePredictor.load(Path(folder), 32).qc_floors() == floors
        predictor.model.compute_dtype = torch.bfloat16
        predictor.save(Path(folder))
        assert AttributePredictor.load(Path(folder), 32).model.compute_dtype == torch.bfloat16
        meta = json.loads((Path(folder) / "predictor.json").read_text())
        del meta["qc_floors"]  # as an older version saved it
        (Path(folder) / "predictor.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match="no qc_floors"):
            AttributePredictor.load(Path(folder), 32)
    # the constant rate learns the easy one in as many steps (the one-cycle run also learns the border)
    constant = train_attribute_predictor(train_x, train_index, val_x, val_index, image_size=32, epochs=4, seed=0,
                                         schedule="constant", lr=1e-3, log=_quiet)
    assert constant.validation["sex"] > 0.9
    with pytest.raises(ValueError, match="schedule"):
        train_attribute_predictor(train_x, train_index, val_x, val_index, image_size=32, epochs=1, seed=0, schedule="cosine")
