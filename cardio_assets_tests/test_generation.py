"""Tests of the generation layer (backbone, ControlNet, sampling, QC) on tiny models.

Everything runs on the CPU at 16 px (8x8 latents) with a handful of steps; the whole file
takes well under a minute and a half on 2 cores.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from cardio_assets.classify.train import Frames
from cardio_assets.generation import (
    CheckpointMismatch,
    DiffusionConfig,
    QCItem,
    QCThresholds,
    Sampler,
    attribute_agreement,
    calibration_rows,
    control_image,
    generate,
    generate_with_qc,
    load_backbone,
    make_check,
    mask_adherence,
    resolve_device,
    resolve_dtype,
    sample_grid,
    sample_seed,
    train_controlnet,
    train_small_backbone,
)
from cardio_assets.generation.control import control_tensor
from cardio_assets.generation.controlnet import controlnet_loss
from cardio_assets.generation.guided_pipeline import guided_at_step
from cardio_assets.generation.toy import paint, toy_dataset, toy_labels

RES = 16


def quiet(_msg: str) -> None:
    pass


def cfg(**changes) -> DiffusionConfig:
    base = dict(
        resolution=RES,
        vae_block_channels=(8, 16),  # narrower than the smoke profile's: these tests check mechanics
        vae_steps=8,
        unet_steps=8,
        controlnet_steps=6,
        batch_size=4,
        checkpoint_every=3,
        log_every_seconds=1000.0,
        sampler_steps=3,
        sample_batch_size=4,
        device="cpu",
        cpu_threads=1,
    )
    base.update(changes)
    return DiffusionConfig.smoke(**base)


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """One intra-op thread: on a CPU shared with busy neighbours, two threads wait on each
    other at every op's barrier (steps measured 15-30x slower); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    images, labels, prompts, keys = toy_dataset(16, RES, seed=0)
    return images, labels, prompts, keys


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory, data):
    images, _, prompts, _ = data
    out = tmp_path_factory.mktemp("backbone")
    record = train_small_backbone(images, prompts, cfg(), out, log=quiet)
    assert record["trained_here"] is True
    return out


@pytest.fixture(scope="module")
def controlnet_dir(tmp_path_factory, backbone_dir, data):
    images, labels, prompts, _ = data
    out = tmp_path_factory.mktemp("controlnet")
    train_controlnet(backbone_dir, images, labels, prompts, cfg(), out, log=quiet)
    return out


# ---------------------------------------------------------------------------- basics
def test_device_and_dtype_on_cpu():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16") == torch.bfloat16
    assert not torch.cuda.is_initialized()  # importing the package touched no GPU


def test_presets_and_roundtrip():
    paper = DiffusionConfig.paper("/models/sd21-base")
    assert (paper.resolution, paper.lr, paper.batch_size, paper.grad_accumulation) == (512, 1e-5, 1, 2)
    assert (paper.sampler, paper.sampler_steps, paper.guidance_scale) == ("ddim", 20, 4.0)
    demo = DiffusionConfig.demo()
    assert demo.resolution == 64 and demo.downsampling == 4
    assert DiffusionConfig.from_dict(json.loads(demo.to_json())) == demo
    with pytest.raises(ValueError):
        DiffusionConfig.smoke(controlnet_cond_channels=(8, 16, 32))  # 4x conditioning for 2x latents


def test_onehot_control_gives_each_structure_and_phase_its_channel():
    from cardio_assets.generation.control import control_channels, control_tensor

    labels = np.zeros((1, 3, 2, 2), np.uint8)
    labels[0, 0] = [[0, 1], [2, 3]]  # ED
    labels[0, 1] = [[1, 1], [2, 0]]  # ES
    labels[0, 2] = labels[0, 0]
    onehot = control_tensor(labels, 2, "onehot")
    assert onehot.shape == (1, control_channels("onehot"), 2, 2) == (1, 6, 2, 2)
    expected = [labels[0, phase] == k for phase in (0, 1) for k in (1, 2, 3)]  # ED LV/MYO/RV, ES LV/MYO/RV
    np.testing.assert_array_equal(onehot[0].numpy(), np.stack(expected).astype(np.float32))
    assert control_tensor(labels, 2, "grey").shape == (1, 3, 2, 2)
    with pytest.raises(ValueError, match="control encoding"):
        control_tensor(labels, 2, "rgb")


def test_the_paper_profile_without_a_local_backbone_fails_at_once_naming_the_variable(monkeypatch, capsys):
    from cardio_assets import run

    with pytest.raises(ValueError, match="CARDIO_SD_BACKBONE_DIR"):
        DiffusionConfig.paper().require_backbone_source("")
    DiffusionConfig.paper().require_backbone_source("/models/sd21")  # a folder given: fine
    DiffusionConfig.demo().require_backbone_source("")  # trains its own
    with pytest.raises(ValueError, match="CARDIO_SD_BACKBONE_DIR"):
        train_small_backbone(np.zeros((1, 3, 8, 8), np.float32), ["x"], DiffusionConfig.paper(), "/nonexistent")
    monkeypatch.setenv("CARDIO_PROFILE", "paper")
    monkeypatch.delenv("CARDIO_SD_BACKBONE_DIR", raising=False)
    assert run.main([]) == 2
    assert "CARDIO_SD_BACKBONE_DIR" in capsys.readouterr().out


def test_control_image_convention():
    labels = np.array([[[[0, 1], [2, 3]]] * 3], dtype=np.uint8)
    assert torch.equal(control_image(labels)[0, 0], torch.tensor([[0.0, 0.25], [0.5, 0.75]]))


def test_tokenizer_keeps_prompt_words_whole(backbone_dir):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(backbone_dir, subfolder="tokenizer")
    tokens = tok.tokenize("Female, age in 60s, overweight BMI, heart failure")
    assert tokens == ["female</w>", ",</w>", "age</w>", "in</w>", "6</w>", "0</w>", "s</w>", ",</w>",
                      "overweight</w>", "bmi</w>", ",</w>", "heart</w>", "failure</w>"]
    assert tok.model_max_length == cfg().text_max_length


# ---------------------------------------------------------------------------- backbone
def test_backbone_folder_loads_like_stable_diffusion(backbone_dir):
    from diffusers import StableDiffusionPipeline

    record = json.loads((backbone_dir / "training_record.json").read_text())
    assert record["trained_here"] and record["steps"] == {"vae": 8, "unet": 8}
    assert record["loss_curve"]["unet"] and record["seed"] == 0
    pipe = StableDiffusionPipeline.from_pretrained(backbone_dir, local_files_only=True)
    assert pipe.safety_checker is None
    bb = load_backbone(backbone_dir, device="cpu")
    assert bb.trained_here and bb.resolution == RES
    assert not any(p.requires_grad for m in (bb.vae, bb.unet, bb.text_encoder) for p in m.parameters())
    assert bb.vae.config.scaling_factor != 0.18215  # measured on the training latents


# ---------------------------------------------------------------------------- ControlNet
def test_controlnet_loss_falls_on_fixed_batch(backbone_dir, data):
    from diffusers import ControlNetModel

    from cardio_assets.generation.backbone import encode_prompts
    from cardio_assets.generation.control import control_tensor, to_model_space

    images, labels, prompts, _ = data
    torch.manual_seed(0)
    bb = load_backbone(backbone_dir, device="cpu")
    net = ControlNetModel.from_unet(bb.unet, conditioning_embedding_out_channels=cfg().controlnet_cond_channels)
    x = to_model_space(images[:4], RES)
    with torch.no_grad():
        latents = bb.vae.encode(x).latent_dist.mean * bb.vae.config.scaling_factor
        hidden = encode_prompts(bb.tokenizer, bb.text_encoder, prompts[:4], torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(latents.shape, generator=g)
    t = torch.tensor([100, 300, 500, 700])
    cond = control_tensor(labels[:4], RES)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(50):
        loss = controlnet_loss(bb, net, latents, noise, t, hidden, cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
    assert all(p.grad is None for p in bb.unet.parameters())  # backbone frozen


def test_controlnet_saves_record_and_pipeline_generates(backbone_dir, controlnet_dir, data):
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    record = json.loads((controlnet_dir / "training_record.json").read_text())
    assert record["steps"] == 6 and record["backbone_trained_here"] is True
    assert record["backbone_folder"] == str(backbone_dir) and len(record["loss_curve"]) == 6
    net = ControlNetModel.from_pretrained(controlnet_dir / "controlnet", local_files_only=True)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        backbone_dir, controlnet=net, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False, local_files_only=True,
    )
    pipe.set_progress_bar_config(disable=True)
    _, labels, prompts, _ = data
    out = pipe(prompts[0], image=control_tensor(labels[:1], RES, cfg().control_encoding), num_inference_steps=2, height=RES, width=RES,
               guidance_scale=4.0, output_type="np").images
    assert out.shape == (1, RES, RES, 3) and np.isfinite(out).all()


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "diffusion_pytorch_model.safetensors"))


def test_kill_and_resume_matches_uninterrupted_run(tmp_path, backbone_dir, data):
    images, labels, prompts, _ = data
    c = cfg(controlnet_steps=8, checkpoint_every=2, log_every_seconds=0.0)
    ref = train_controlnet(backbone_dir, images, labels, prompts, c, tmp_path / "ref", log=quiet)
    assert ref["resumed_from_step"] is None

    class Killed(Exception):
        pass

    def killer(msg: str) -> None:
        if msg.startswith("controlnet step 5/"):
            raise Killed(msg)

    run = tmp_path / "run"
    with pytest.raises(Killed):
        train_controlnet(backbone_dir, images, labels, prompts, c.replace(controlnet_steps=6), run, log=killer)
    assert (run / "checkpoint" / "COMPLETE").read_text() == "4"
    assert not (run / "controlnet").exists()
    rec6 = train_controlnet(backbone_dir, images, labels, prompts, c.replace(controlnet_steps=6), run, log=quiet)
    assert rec6["resumed_from_step"] == 4 and rec6["steps_this_call"] == 2
    rec8 = train_controlnet(backbone_dir, images, labels, prompts, c, run, log=quiet)
    assert rec8["resumed_from_step"] == 6 and rec8["steps"] == 8

    a, b = _weights(tmp_path / "ref" / "controlnet"), _weights(run / "controlnet")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ref["loss_curve"] == rec8["loss_curve"]
    sa = torch.load(tmp_path / "ref" / "checkpoint" / "state.pt", weights_only=True)
    sb = torch.load(run / "checkpoint" / "state.pt", weights_only=True)
    assert sa["step"] == sb["step"] == 8
    for k, st in sa["optimizer"]["state"].items():
        for name, v in st.items():
            assert torch.equal(v, sb["optimizer"]["state"][k][name]), (k, name)
    assert sa["lr_scheduler"] == sb["lr_scheduler"]

    # a changed training configuration never silently continues an old checkpoint
    with pytest.raises(CheckpointMismatch):
        train_controlnet(backbone_dir, images, labels, prompts, c.replace(lr=c.lr * 2), run, log=quiet, resume="require")


def test_training_reads_memory_mapped_rows_a_batch_at_a_time_with_the_same_result(tmp_path, backbone_dir, data):
    """The assets pass lazy views of the lake's memory-mapped frames (two parts, out of file
    order, as several cells give); training must match the same rows held in memory."""
    images, labels, prompts, _ = data
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "controls.npy", labels)
    order = np.r_[8:16, 0:8]
    parts = lambda name: Frames([(np.load(tmp_path / name, mmap_mode="r"), order[8:]), (np.load(tmp_path / name, mmap_mode="r"), order[:8])])
    lazy_images, lazy_controls = parts("images.npy"), parts("controls.npy")
    prompts_in_order = [prompts[i] for i in np.r_[order[8:], order[:8]]]
    in_memory = np.r_[order[8:], order[:8]]

    c = cfg(controlnet_steps=3, checkpoint_every=0)
    a = train_controlnet(backbone_dir, images[in_memory], labels[in_memory], prompts_in_order, c, tmp_path / "a", log=quiet)
    b = train_controlnet(backbone_dir, lazy_images, lazy_controls, prompts_in_order, c, tmp_path / "b", log=quiet)
    assert a["loss_curve"] == b["loss_curve"]
    wa, wb = _weights(tmp_path / "a" / "controlnet"), _weights(tmp_path / "b" / "controlnet")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

    small = cfg(vae_steps=3, unet_steps=3)
    ra = train_small_backbone(images[in_memory], prompts_in_order, small, tmp_path / "backbone_a", log=quiet)
    rb = train_small_backbone(lazy_images, prompts_in_order, small, tmp_path / "backbone_b", log=quiet)
    assert ra["loss_curve"] == rb["loss_curve"], (ra["loss_curve"], rb["loss_curve"])

    # a spawned training process gets the files' names, not their contents
    assert len(pickle.dumps(lazy_images)) < 2_000 < images.nbytes
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(lazy_images)).take(np.arange(16)), images[in_memory])


# ---------------------------------------------------------------------------- sampling
def test_generation_is_deterministic_and_batch_independent(backbone_dir, controlnet_dir, data):
    _, labels, prompts, _ = data
    c = cfg()
    sampler = Sampler(backbone_dir, controlnet_dir / "controlnet", c, device="cpu")
    seeds = [11, 22, 33]
    a = sampler.generate(labels[:3], prompts[:3], seeds, log=None)
    b = sampler.generate(labels[:3], prompts[:3], seeds, log=None)
    assert a.shape == (3, 3, RES, RES) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0
    assert np.array_equal(a, b)
    alone = sampler.generate(labels[1:2], prompts[1:2], seeds[1:2], log=None)
    np.testing.assert_allclose(alone[0], a[1], atol=1e-5)
    other = sampler.generate(labels[1:2], prompts[1:2], [23], log=None)
    assert not np.allclose(other[0], a[1])
    # the one-call convenience builds the same pipeline
    c2 = generate(backbone_dir, controlnet_dir / "controlnet", labels[:1], prompts[:1], [11], c, log=quiet)
    np.testing.assert_allclose(c2[0], a[0], atol=1e-5)
    # and a plain diffusers pipeline (no conditioning-embedding cache, ordinary memory layout
    # where the Sampler runs channels-last) gives the same image
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline

    from cardio_assets.generation.sampling import make_scheduler

    net = ControlNetModel.from_pretrained(controlnet_dir / "controlnet")
    pipe = StableDiffusionControlNetPipeline.from_pretrained(
        backbone_dir, controlnet=net, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.scheduler = make_scheduler(c.sampler, pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    plain = pipe(prompts[:1], image=control_tensor(labels[:1], RES, cfg().control_encoding), num_inference_steps=c.sampler_steps, height=RES,
                 width=RES, guidance_scale=c.guidance_scale, generator=[torch.Generator().manual_seed(11)],
                 output_type="np").images
    np.testing.assert_allclose(plain[0].transpose(2, 0, 1), a[0], atol=1e-5)


def test_sample_seed_is_stable():
    s = sample_seed("male-ge70-normal-hf", 3, 0)
    assert s == sample_seed("male-ge70-normal-hf", 3, 0)
    assert 0 <= s < 2**63
    assert len({sample_seed("male-ge70-normal-hf", 3, k) for k in range(3)}) == 3
    assert sample_seed("male-ge70-normal-hf", 3, 0, base_seed=1) != s
    assert s == 2822997532478149577  # fixed forever: seeds are provenance


# ---------------------------------------------------------------------------- QC
@pytest.fixture
def mask():
    return toy_labels(32, np.random.default_rng(3))


def painted(labels, blood=0.9, myo=0.3, bg=0.0):
    img = np.full(labels.shape, bg, np.float32)
    img[(labels == 1) | (labels == 3)] = blood
    img[labels == 2] = myo
    return img


def test_qc_accepts_image_painted_from_its_mask(mask):
    r = mask_adherence(painted(mask), mask)
    assert r["passed"], r["failures"]
    assert r["score"] > 0.95
    realistic = paint(mask, np.random.default_rng(0))
    assert mask_adherence(realistic, mask)["passed"]


def test_qc_rejects_blank_noise_and_wrong_mask(mask):
    for blank in (np.zeros_like(mask, np.float32), np.full(mask.shape, 0.5, np.float32)):
        r = mask_adherence(blank, mask)
        assert not r["passed"] and any("not brighter" in f for f in r["failures"])
    noise = np.random.default_rng(0).uniform(0, 1, mask.shape).astype(np.float32)
    assert not mask_adherence(noise, mask)["passed"]
    inverted = painted(mask, blood=0.3, myo=0.9)
    assert not mask_adherence(inverted, mask)["passed"]
    shifted = painted(np.roll(mask, 8, axis=2))
    r = mask_adherence(shifted, mask)
    assert not r["passed"]


def test_attribute_agreement_checks_the_prompted_class_against_its_floor():
    expected = {"sex": "male", "age_band": "ge70", "bmi_band": "normal"}
    probabilities = {"sex": {"male": 0.30, "female": 0.70}, "age_band": {"ge70": 0.01}, "bmi_band": {"normal": 0.35, "obese": 0.5}}
    # age band has no floor (an untrusted predictor): never checked, however unlike its prompt
    floors = {"sex": {"male": 0.40, "female": 0.40}, "bmi_band": {"normal": 0.30}}
    assert attribute_agreement(probabilities, expected, floors) == ["sex: p(male) below the real frames' floor (0.300 < 0.400)"]
    # not the top class (obese 0.5 > normal 0.35), but above the floor real normal-BMI frames reach: passes
    assert attribute_agreement(probabilities, {"bmi_band": "normal"}, floors) == []
    assert attribute_agreement({}, expected, {"sex": {"male": 0.4}}) == ["sex: no prediction (expected 'male')"]
    assert attribute_agreement(probabilities, {"bmi_band": "overweight"}, floors) == []  # no floor for that class


def test_qc_thresholds_are_calibrated_on_the_prompted_bmi_band():
    import pandas as pd

    index = pd.DataFrame({"bmi_band": ["normal"] * 300 + ["obese"] * 150 + ["overweight"] * 20})
    rows, described = calibration_rows(index, "obese", n=100, seed=0)
    assert len(rows) == 100 and set(index["bmi_band"].iloc[rows]) == {"obese"}
    assert list(rows) == sorted(rows) and np.array_equal(rows, calibration_rows(index, "obese", n=100, seed=0)[0])
    assert "BMI band obese (100 of 150)" in described
    rows, _ = calibration_rows(index, "normal", n=500, seed=0)
    assert len(rows) == 300  # capped by what the band holds
    # too few frames of the band for a 2% quantile: every band, and the description says so
    rows, described = calibration_rows(index, "overweight", n=100, seed=0)
    assert len(rows) == 100 and len(set(index["bmi_band"].iloc[rows])) > 1
    assert "every BMI band" in described and "overweight has 20 < 100" in described


def test_generate_with_qc_retries_then_drops(mask):
    items = [QCItem("female-lt60-normal-hf", i, "Female, age in 50s, normal BMI, heart failure", mask) for i in range(3)]
    calls = []

    def fn(controls, prompts, seeds):
        calls.append(list(seeds))
        if len(calls) == 1:  # attempt 1: item 0 good, others blank
            return np.stack([painted(controls[0])] + [np.zeros(controls[0].shape, np.float32)] * (len(seeds) - 1))
        if len(calls) == 2:  # attempt 2: item 1 good, item 2 blank
            return np.stack([painted(controls[0]), np.zeros(controls[0].shape, np.float32)])
        return np.zeros(controls.shape, np.float32)  # attempt 3: still blank

    accepted, rejected = generate_with_qc(fn, make_check(QCThresholds()), items, max_attempts=3, log=quiet)
    assert [len(c) for c in calls] == [3, 2, 1]  # batched across the pending items
    assert calls[0][0] == sample_seed(items[0].cell, 0, 0)
    assert calls[1][0] == sample_seed(items[1].cell, 1, 1)
    assert [r["index"] for r in accepted] == [0, 1] and [r["attempts"] for r in accepted] == [1, 2]
    assert accepted[1]["seed"] == sample_seed(items[1].cell, 1, 1) and accepted[0]["image"].shape == mask.shape
    (drop,) = rejected
    assert drop["index"] == 2 and drop["attempts"] == 3 and len(drop["seeds"]) == 3
    assert drop["failure_modes"] and all(f.startswith("mask: ") for f in drop["failure_modes"])
    assert any("not brighter than myocardium" in f for f in drop["failure_modes"])

    # attribute predictors: an image whose prompted class stays under its floor fails every attempt
    check = make_check(probabilities=lambda imgs: [{"sex": {"male": 0.9, "female": 0.1}}] * len(imgs), floors={"sex": {"female": 0.2}})
    items[0].expected["sex"] = "female"
    acc, rej = generate_with_qc(lambda c, p, s: np.stack([painted(x) for x in c]), check, items[:1], log=quiet)
    assert not acc and rej[0]["failure_modes"] == ["attribute: sex: p(female) below the real frames' floor"]


def test_sample_grid_writes_png(tmp_path, data):
    from PIL import Image

    images, labels, prompts, _ = data
    path = sample_grid(images[:5], prompts[:5], tmp_path / "grid.png", masks=labels[:5])
    assert Image.open(path).size[0] > 100


def test_cell_balanced_weights_favour_rare_cells_up_to_the_cap():
    from cardio_assets.generation.balance import cell_balanced_weights, draw_rows

    cells = ["big"] * 100 + ["mid"] * 20 + ["rare"] * 2
    w = cell_balanced_weights(cells, cap=10.0)
    assert np.isclose(w.sum(), 1.0)
    per_cell = {c: w[np.asarray(cells) == c].sum() for c in ("big", "mid", "rare")}
    assert np.isclose(per_cell["big"], per_cell["mid"])  # inverse to size: each cell drawn alike
    assert np.isclose(w[-1] / w[0], 10.0)  # the rare cell's images hit the cap, 10x a big cell's image
    assert np.allclose(cell_balanced_weights(cells, cap=1.0), 1 / len(cells))  # cap 1: uniform
    with pytest.raises(ValueError):
        cell_balanced_weights(cells, cap=0.5)
    g = torch.Generator().manual_seed(0)
    rows = draw_rows(len(cells), 20000, g, torch.from_numpy(w)).numpy()
    assert abs((rows >= 120).mean() - w[120:].sum()) < 0.01  # draws follow the weights


def test_latent_moments_spill_to_memory_mapped_files_with_the_same_values(tmp_path):
    """Above the memory cap the backbone's latent moments live in memory-mapped files (a cohort larger
    than RAM trains), with exactly the values the in-memory tensors hold."""
    from diffusers import AutoencoderKL

    from cardio_assets.generation.backbone_training import encode_latent_moments

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2).eval()
    images = np.random.default_rng(0).random((10, 3, 16, 16)).astype(np.float32)
    cpu = torch.device("cpu")
    in_ram = encode_latent_moments(vae, images, 16, 4, cpu, torch.float32)  # batches of 4, 4 and 2
    spilled = encode_latent_moments(vae, images, 16, 4, cpu, torch.float32, max_in_memory_bytes=0, spill_dir=tmp_path)
    for a, b in zip(in_ram, spilled):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    np.testing.assert_array_equal(np.load(tmp_path / "latent_std.npy"), in_ram[1].numpy())
    assert encode_latent_moments(vae, images, 16, 4, cpu, torch.float32, max_in_memory_bytes=10**9)[0].shape == in_ram[0].shape
    with pytest.raises(ValueError, match="no spill_dir"):
        encode_latent_moments(vae, images, 16, 4, cpu, torch.float32, max_in_memory_bytes=0)


def test_vae_loss_can_weigh_the_es_frame_as_much_as_the_ed_frame_the_image_holds_twice():
    from cardio_assets.generation.backbone_training import vae_reconstruction_loss

    x = torch.zeros(2, 3, 8, 8)
    es_error, ed_error = x.clone(), x.clone()
    es_error[:, 1] = 0.1  # the ES frame off by 0.1
    ed_error[:, [0, 2]] = 0.1  # the ED frame off by 0.1, in both channels that hold it
    plain = (1.0, 1.0, 1.0)
    assert torch.allclose(vae_reconstruction_loss(es_error, x, plain), torch.nn.functional.mse_loss(es_error, x))
    assert vae_reconstruction_loss(ed_error, x, plain) > 1.9 * vae_reconstruction_loss(es_error, x, plain)
    balanced = DiffusionConfig.demo().vae_channel_weights
    assert torch.allclose(vae_reconstruction_loss(ed_error, x, balanced), vae_reconstruction_loss(es_error, x, balanced))
    with pytest.raises(ValueError, match="vae_channel_weights"):
        cfg(vae_channel_weights=(1.0, 1.0))


def test_min_snr_weighting_keeps_noisy_timesteps_and_down_weights_nearly_clean_ones():
    from diffusers.training_utils import compute_snr

    from cardio_assets.generation.backbone import diffusion_loss, make_noise_scheduler

    sched = make_noise_scheduler(cfg())
    target = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    pred = target + 1.0  # squared error 1 everywhere
    noisy, clean = torch.tensor([990]), torch.tensor([5])
    assert compute_snr(sched, noisy).item() < 5.0 < compute_snr(sched, clean).item()
    for t in (noisy, clean):  # no gamma: the plain MSE
        assert diffusion_loss(sched, pred, target, t).item() == pytest.approx(1.0)
    assert diffusion_loss(sched, pred, target, noisy, snr_gamma=5.0).item() == pytest.approx(1.0)
    assert diffusion_loss(sched, pred, target, clean, snr_gamma=5.0).item() == pytest.approx(
        5.0 / compute_snr(sched, clean).item(), rel=1e-5)


def test_heart_loss_weight_counts_errors_under_the_mask_more():
    from cardio_assets.generation.backbone import diffusion_loss, make_noise_scheduler
    from cardio_assets.generation.controlnet import heart_weights

    sched, t = make_noise_scheduler(cfg()), torch.tensor([500])
    labels = np.zeros((1, 3, 32, 32), dtype=np.uint8)
    labels[0, :, 12:20, 12:20] = 1  # a heart of 8 x 8 pixels: latent pixels 3-4 at 8 x 8 latents
    for encoding in ("grey", "onehot"):
        cond = control_tensor(labels, 32, encoding)
        w = heart_weights(cond, (8, 8), 3.0)
        assert w.shape == (1, 1, 8, 8)
        assert (w[0, 0, 2:6, 2:6] == 3.0).all() and w.sum().item() == 16 * 3 + 48  # dilated by one latent pixel
    target = torch.zeros(1, 4, 8, 8)
    on_heart, off_heart = target.clone(), target.clone()
    on_heart[..., 3, 3], off_heart[..., 0, 0] = 1.0, 1.0  # the same error, on and off the heart
    assert diffusion_loss(sched, on_heart, target, t).item() == diffusion_loss(sched, off_heart, target, t).item()
    assert diffusion_loss(sched, on_heart, target, t, pixel_weights=w).item() == pytest.approx(
        3 * diffusion_loss(sched, off_heart, target, t, pixel_weights=w).item())
    # weights of one are the plain MSE
    assert diffusion_loss(sched, on_heart, target, t, pixel_weights=torch.ones(1, 1, 8, 8)).item() == pytest.approx(
        diffusion_loss(sched, on_heart, target, t).item())


def test_controlnet_scale_weighs_the_masks_pull_on_the_image(backbone_dir, controlnet_dir, data):
    _, labels, prompts, _ = data
    assert not np.array_equal(labels[0], labels[1])

    def mask_effect(scale: float) -> float:
        """How much two different masks change an image of the same prompt and seed."""
        sampler = Sampler(backbone_dir, controlnet_dir / "controlnet", cfg(controlnet_scale=scale), device="cpu")
        a, b = sampler.generate(labels[:2], [prompts[0]] * 2, [7, 7], log=None)
        return float(np.abs(a - b).max())

    # the fixture's ControlNet has trained 6 steps, so its (zero-initialised) residuals are small
    off, default, strong = mask_effect(0.0), mask_effect(1.0), mask_effect(100.0)
    assert off < 1e-6 < default and strong > 5 * default


def test_guidance_interval_guides_only_the_steps_inside_it(backbone_dir, controlnet_dir, data):
    _, labels, prompts, _ = data

    def image(**changes) -> np.ndarray:
        sampler = Sampler(backbone_dir, controlnet_dir / "controlnet", cfg(**changes), device="cpu")
        return sampler.generate(labels[:1], prompts[:1], [5], log=None)[0]

    # 3 steps at fractions 0, 1/3, 2/3 of the trajectory
    assert [guided_at_step(i, 3, (0.5, 1.0)) for i in range(3)] == [False, False, True]
    unguided, guided = image(guidance_scale=1.0), image(guidance_scale=4.0)
    assert np.abs(guided - unguided).max() > 1e-3
    # an interval that holds no step is the conditional prediction alone: no guidance at all
    np.testing.assert_allclose(image(guidance_scale=4.0, guidance_interval=(0.9, 1.0)), unguided, atol=1e-5)
    # the last step alone guided: neither of the two; the whole trajectory: plain guidance
    last_only = image(guidance_scale=4.0, guidance_interval=(0.5, 1.0))
    assert np.abs(last_only - unguided).max() > 1e-4 and np.abs(last_only - guided).max() > 1e-4
    np.testing.assert_array_equal(image(guidance_scale=4.0, guidance_interval=(0.0, 1.0)), guided)
    with pytest.raises(ValueError, match="guidance_interval"):
        cfg(guidance_interval=(0.6, 0.4))
    # the reports say how their synthetic frames were sampled
    assert "guidance 4 on the steps from 25% to 100% of the trajectory" in cfg(guidance_scale=4.0, guidance_interval=(0.25, 1.0)).sampling_summary()
    assert "guidance 4 on every step" in DiffusionConfig.paper("/models/sd21-base").sampling_summary()


# ---------------------------------------------------------------------------- weight average
def _checkpoint_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "checkpoint" / "model.safetensors"))


def test_controlnet_saves_the_average_of_its_weights_and_resumes_it_exactly(tmp_path, backbone_dir, data):
    images, labels, prompts, _ = data
    # power 1: the decay at step 2 is 1 - 1/2, so after two steps the average is (w1 + w2) / 2
    c = cfg(controlnet_steps=1, checkpoint_every=1, ema_power=1.0, ema_max_decay=0.99)
    train_controlnet(backbone_dir, images, labels, prompts, c, tmp_path / "one", log=quiet)
    train_controlnet(backbone_dir, images, labels, prompts, c.replace(controlnet_steps=2), tmp_path / "two", log=quiet)
    w1, w2 = _checkpoint_weights(tmp_path / "one"), _checkpoint_weights(tmp_path / "two")  # raw weights
    saved_one, saved_two = _weights(tmp_path / "one" / "controlnet"), _weights(tmp_path / "two" / "controlnet")
    assert all(torch.equal(saved_one[k], w1[k]) for k in w1)  # decay 0 at the first step
    moved = [k for k in w1 if not torch.equal(w1[k], w2[k])]
    assert moved, "a training step changed no weight"
    for k in w1:
        torch.testing.assert_close(saved_two[k], (w1[k] + w2[k]) / 2, rtol=1e-5, atol=1e-6)

    # killed after step 4 of 6 and resumed: the average continues from the checkpoint's
    c6 = c.replace(controlnet_steps=6, checkpoint_every=2, ema_power=0.75)
    train_controlnet(backbone_dir, images, labels, prompts, c6, tmp_path / "ref", log=quiet)
    train_controlnet(backbone_dir, images, labels, prompts, c6.replace(controlnet_steps=4), tmp_path / "run", log=quiet)
    rec = train_controlnet(backbone_dir, images, labels, prompts, c6, tmp_path / "run", log=quiet)
    assert rec["resumed_from_step"] == 4
    a, b = _weights(tmp_path / "ref" / "controlnet"), _weights(tmp_path / "run" / "controlnet")
    assert all(torch.equal(a[k], b[k]) for k in a)
    raw = _checkpoint_weights(tmp_path / "ref")
    assert any(not torch.equal(a[k], raw[k]) for k in a)  # what is saved is not the last step's weights


def test_backbone_average_changes_what_is_saved_not_how_it_trains(tmp_path, data):
    images, _, prompts, _ = data
    small = cfg(vae_steps=3, unet_steps=5)
    plain = train_small_backbone(images, prompts, small, tmp_path / "plain", log=quiet)
    averaged = train_small_backbone(images, prompts, small.replace(ema_power=0.75), tmp_path / "averaged", log=quiet)
    assert plain["loss_curve"] == averaged["loss_curve"]
    from safetensors.torch import load_file

    unet_a = load_file(str(tmp_path / "plain" / "unet" / "diffusion_pytorch_model.safetensors"))
    unet_b = load_file(str(tmp_path / "averaged" / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(unet_a[k], unet_b[k]) for k in unet_a)
    with pytest.raises(ValueError, match="ema_power"):
        cfg(ema_power=0.0)


# ---------------------------------------------------------------------------- learning-rate schedule
def test_cosine_schedule_decays_the_rate_to_zero_and_ties_a_checkpoint_to_its_step_count(tmp_path, backbone_dir, data):
    from cardio_assets.generation.backbone_training import _unet_lr_schedule

    def rates(config):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched, seen = _unet_lr_schedule(opt, config), []
        for _ in range(config.unet_steps):
            seen.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step()
        return seen

    constant, cosine = rates(cfg(unet_steps=40)), rates(cfg(unet_steps=40, lr_schedule="cosine"))
    assert constant[2:] == [1.0] * 38  # two warm-up steps (5%), then the full rate
    assert max(cosine) == 1.0 and cosine[-1] < 0.01 and all(a >= b for a, b in zip(cosine[2:], cosine[3:]))

    images, labels, prompts, _ = data
    c = cfg(controlnet_steps=6, checkpoint_every=3, lr_schedule="cosine", lr_warmup_steps=1)
    train_controlnet(backbone_dir, images, labels, prompts, c, tmp_path / "run", log=quiet)
    state = torch.load(tmp_path / "run" / "checkpoint" / "state.pt", weights_only=True)
    assert state["lr_scheduler"]["_last_lr"][0] < 0.01 * c.lr
    # a longer run would have decayed more slowly: its checkpoint is not continued
    with pytest.raises(CheckpointMismatch, match="controlnet_steps"):
        train_controlnet(backbone_dir, images, labels, prompts, c.replace(controlnet_steps=8), tmp_path / "run", log=quiet, resume="require")
    with pytest.raises(ValueError, match="lr_schedule"):
        cfg(lr_schedule="linear")
