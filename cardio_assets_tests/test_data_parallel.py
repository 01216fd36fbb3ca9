"""Data-parallel ControlNet training on the CPU: two gloo processes against one process.

The smoke profile's diffusion settings at the generator tests' size (test_generation.cfg). Two
processes share each global batch, so they must follow the one-process loss curve and end at
the same weights, up to float summation order; and either must continue the other's checkpoint.
"""

import numpy as np
import pytest
import torch

from cardio_assets.generation import train_controlnet, train_controlnet_data_parallel, train_small_backbone
from cardio_assets.generation.data_parallel import ProcessGroup
from cardio_assets.generation.toy import toy_dataset
from cardio_assets_tests.test_generation import RES, cfg, quiet

# float32 sums in another order: the losses agree to about 1e-6
RTOL, ATOL = 1e-4, 1e-5
# and so do nearly all weights; but where a gradient is near zero the order can flip its sign, and
# Adam, which divides by the gradient's own scale, turns the flip into a step of up to lr. So a few
# weights in ten thousand differ by up to ~lr x steps / 200 (measured: 1e-4 of the weights by more
# than 1e-5, the largest by 2.6e-5 at lr 1e-3, 6 steps). A real fault (a share missing from the
# all-reduce, a wrong share weight) moves most weights by ~lr per step.
MAX_FLIPPED_SHARE, FLIP = 1e-3, 1e-5


@pytest.fixture(scope="module")
def data():
    return toy_dataset(16, RES, seed=1)


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory, data):
    images, _, prompts, _ = data
    out = tmp_path_factory.mktemp("backbone")
    train_small_backbone(images, prompts, cfg(), out, log=quiet)
    return out


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(next(folder.glob("*.safetensors")))


def _assert_same_training(a: dict, b: dict, folder_a, folder_b, lr: float, steps: int):
    curve_a, curve_b = np.array(a["loss_curve"]), np.array(b["loss_curve"])
    assert curve_a.shape == curve_b.shape
    np.testing.assert_allclose(curve_b, curve_a, rtol=RTOL, atol=ATOL)
    wa, wb = _weights(folder_a), _weights(folder_b)
    assert wa.keys() == wb.keys()
    differences = torch.cat([(wb[key] - wa[key]).abs().flatten() for key in wa])
    assert float((differences > FLIP).float().mean()) < MAX_FLIPPED_SHARE
    assert float(differences.max()) < lr * steps / 20


def test_shares_cover_the_global_batch_once():
    for world, batch in [(2, 4), (2, 5), (3, 7), (4, 4)]:
        shares = [ProcessGroup(rank, world).share(batch) for rank in range(world)]
        rows = [i for s in shares for i in range(batch)[s]]
        assert rows == list(range(batch))
        assert max(s.stop - s.start for s in shares) - min(s.stop - s.start for s in shares) <= 1
    with pytest.raises(ValueError, match="batch size 2 is smaller than the 3"):
        ProcessGroup(0, 3).share(2)


def test_two_processes_follow_one_process_and_resume_its_checkpoint(tmp_path, backbone_dir, data):
    images, labels, prompts, cells = data
    # an odd batch (shares of 3 and 2) with gradient accumulation, balanced over cells as the asset trains
    config = cfg(controlnet_steps=6, checkpoint_every=3, batch_size=5, grad_accumulation=2)
    one = train_controlnet(backbone_dir, images, labels, prompts, config, tmp_path / "one", log=quiet, cells=cells)
    two = train_controlnet_data_parallel(2, backbone_dir, images, labels, prompts, config, tmp_path / "two", log=quiet, cells=cells)
    assert one["data_parallel_processes"] == 1 and two["data_parallel_processes"] == 2
    assert two["steps"] == 6 and two["resumed_from_step"] is None
    _assert_same_training(one, two, tmp_path / "one" / "controlnet", tmp_path / "two" / "controlnet", config.lr, 6)

    # a one-process checkpoint (step 3) continued by two processes ends where one process does
    half = config.replace(controlnet_steps=3)
    train_controlnet(backbone_dir, images, labels, prompts, half, tmp_path / "resumed", log=quiet, cells=cells)
    resumed = train_controlnet_data_parallel(2, backbone_dir, images, labels, prompts, config, tmp_path / "resumed",
                                             log=quiet, cells=cells)
    assert resumed["resumed_from_step"] == 3 and resumed["steps_this_call"] == 3
    _assert_same_training(one, resumed, tmp_path / "one" / "controlnet", tmp_path / "resumed" / "controlnet", config.lr, 6)
