"""vol25d.capacity: the voxel cap planned from a device's memory, and its use in planning."""

import logging
import math

import pytest
import torch

from conftest import TINY_MODEL
from vol25d import capacity
from vol25d.data.dataset import load_dataset, split_cases
from vol25d.data.prepare import prepare_cases
from vol25d.data.preprocess import DEFAULT_MAX_VOXELS, PreprocessConfig
from vol25d.geometry import default_detector
from vol25d.errors import InputError
from vol25d.model import ModelConfig
from vol25d.train import TrainConfig
from vol25d.train.paths import path1_probe

NOT_RUN = lambda shape: 1 / 0  # noqa: E731 — a step the CPU's cap never measures


def linear_memory(per_voxel=100.0, fixed=1e6):
    measured = []

    def measure(shape):
        measured.append(tuple(shape))
        return fixed + per_voxel * math.prod(shape)

    return measure, measured


def test_a_step_that_fits_keeps_the_planned_shape_and_scales_the_cap():
    measure, measured = linear_memory()
    cap, peak, shape = capacity.fit_voxel_cap(measure, (100, 200, 200), budget_bytes=2e9)
    assert measured == [(100, 200, 200)] and shape == (100, 200, 200)
    assert peak == pytest.approx(1e6 + 100 * 4e6)
    assert cap == int(4e6 * 2e9 / peak) and cap > 4e6


def test_a_step_that_does_not_fit_is_measured_again_coarser_until_it_fits():
    measure, measured = linear_memory()
    cap, peak, shape = capacity.fit_voxel_cap(measure, (100, 200, 200), budget_bytes=1e8)
    assert len(measured) >= 2 and peak <= 1e8
    assert math.prod(shape) < 4e6 and shape[1] == shape[2]
    assert math.prod(shape) <= cap < 4e6


def test_out_of_memory_counts_as_not_fitting():
    sizes = iter([math.inf, 5e7])
    cap, peak, shape = capacity.fit_voxel_cap(lambda s: next(sizes), (64, 64, 64), budget_bytes=1e8)
    assert peak == 5e7 and math.prod(shape) < 64**3


def test_nothing_fits_is_a_memory_error():
    with pytest.raises(MemoryError, match="does not fit"):
        capacity.fit_voxel_cap(lambda s: math.inf, (16, 16, 16), budget_bytes=1e3)


def test_the_measured_step_runs_on_the_cpu():
    loss = path1_probe(ModelConfig(**TINY_MODEL), TrainConfig(amp=False), (10, 12, 12), torch.device("cpu"), amp=False)
    assert math.isfinite(loss) and loss > 0


@pytest.mark.parametrize("augmenting", [True, False])
def test_the_measured_step_is_path_1s_own_with_the_runs_settings(monkeypatch, augmenting):
    """The step measured is path 1's (vol25d.train.paths.path1) with the run's TrainConfig: it augments when the
    run does, checkpoints U's activations in chunks of the run's checkpoint_views, and leaves torch's RNG as it was."""
    import vol25d.model
    import vol25d.train.paths as paths

    augmented, chunks = [], []
    real_augment, real_checkpoint = paths.augment, vol25d.model.checkpoint
    monkeypatch.setattr(paths, "augment", lambda *a, **k: augmented.append(1) or real_augment(*a, **k))
    monkeypatch.setattr(vol25d.model, "checkpoint", lambda *a, **k: chunks.append(1) or real_checkpoint(*a, **k))
    config = TrainConfig(amp=False, checkpoint_views=1, augment={"enabled": augmenting})
    state = torch.get_rng_state()
    loss = path1_probe(ModelConfig(**TINY_MODEL), config, (10, 12, 12), torch.device("cpu"), amp=False)
    assert math.isfinite(loss)
    assert bool(augmented) == augmenting
    assert len(chunks) == TINY_MODEL["views"]  # one recomputed chunk per view: checkpoint_views=1
    assert torch.equal(torch.get_rng_state(), state)


def test_capacity_loads_without_the_training_stack():
    """capacity takes the step it measures as an argument, so it does not import vol25d.train (no import cycle)."""
    import subprocess
    import sys

    code = "import sys, vol25d.capacity; print('vol25d.train' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_on_the_cpu_the_cap_is_the_default_and_logged_when_it_applies(caplog):
    config = ModelConfig(**TINY_MODEL)
    with caplog.at_level(logging.INFO, logger="vol25d.capacity"):
        assert capacity.plan_voxel_cap(config, (32, 32, 32), torch.device("cpu"), NOT_RUN) == DEFAULT_MAX_VOXELS
        assert not caplog.records
        assert capacity.plan_voxel_cap(config, (150, 512, 512), torch.device("cpu"), NOT_RUN) == DEFAULT_MAX_VOXELS
    assert "--max-voxels 0" in caplog.text


def test_the_cuda_branch_budgets_free_memory_less_path_2s_cache(monkeypatch, caplog):
    """plan_voxel_cap's CUDA branch with the allocator's readings replaced: the step itself runs on the CPU."""
    config = ModelConfig(**TINY_MODEL)
    free = 10 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a test GPU")
    steps = []

    def fake_peak(step, shape, device):
        assert device.type == "cuda"
        steps.append(step(shape))  # the step planning was given, on the shape it measures
        return 1e4 * math.prod(shape)

    def step(shape):
        return path1_probe(config, TrainConfig(amp=False, checkpoint_views=2), shape, torch.device("cpu"), False)

    monkeypatch.setattr(capacity, "step_peak_bytes", fake_peak)
    with caplog.at_level(logging.INFO, logger="vol25d.capacity"):
        cap = capacity.plan_voxel_cap(config, (12, 16, 16), torch.device("cuda"), step, cached_cases=3)
    planes = config.out_channels + (config.reconstruction == "image")  # U's views, and the image's for "image"
    cache = 3 * config.directions * planes * 12 * default_detector(16, 16) * 4  # m views of D × S bins, float32
    assert len(steps) == 1 and math.isfinite(steps[0])
    assert cap == int(12 * 16 * 16 * (0.8 * free - cache) / (1e4 * 12 * 16 * 16))
    assert "full resolution" in caplog.text and "a test GPU" in caplog.text


@pytest.mark.parametrize("bad", [True, 5, -1, 2.5])
def test_max_voxels_must_be_zero_or_a_whole_number_of_at_least_8_cubed(bad):
    with pytest.raises(InputError, match="max_voxels"):
        PreprocessConfig(max_voxels=bad)


def test_planning_asks_for_the_cap_of_the_median_shape(phantoms):
    dataset = load_dataset(phantoms)
    train, val = split_cases(dataset.cases, 0.25, 0)
    asked = []
    _, _, config = prepare_cases(dataset, train, val, voxel_cap=lambda shape: asked.append(shape) or 12**3)
    assert len(asked) == 1 and math.prod(asked[0]) > 12**3
    assert config.max_voxels == 12**3 and math.prod(config.planned_shape) <= 12**3
    # A max_voxels the user fixed wins over the planned cap.
    _, _, fixed = prepare_cases(dataset, train, val, options={"max_voxels": 0}, voxel_cap=lambda shape: 1 / 0)
    assert fixed.max_voxels == 0 and tuple(fixed.planned_shape) == tuple(asked[0])


def test_train_max_voxels_flag_is_saved_and_path_2_refuses_it(phantoms, tiny_config, tmp_path, capsys):
    from vol25d.checkpoint import Checkpoint
    from vol25d.cli import main

    run = tmp_path / "run"
    assert main(["-q", "train", "--path", "1", "--data", str(phantoms), "--out", str(run), "--config",
                 str(tiny_config), "--epochs", "1", "--device", "cpu", "--max-voxels", "0"]) == 0
    assert Checkpoint.load(run / "path1.pt").preprocess["max_voxels"] == 0
    assert main(["-q", "train", "--path", "2", "--data", str(phantoms), "--out", str(run), "--init",
                 str(run / "path1.pt"), "--max-voxels", "4096"]) == 1
    error = capsys.readouterr().err
    assert "drop max_voxels" in error and "--init keeps the preprocessing" in error
    assert not (run / "path2.pt").exists()


def test_host_memory_caps_the_voxels_of_the_cases_training_holds():
    config = ModelConfig(**TINY_MODEL)  # 1 channel (4 bytes a voxel) and 1 class (1 byte)
    assert capacity.ram_voxel_cap(config, held_cases=10, available=5e9) == int(0.8 * 5e9 / (10 * 5))
    assert capacity.ram_voxel_cap(config, held_cases=10, available=None) == 0
    assert capacity.ram_voxel_cap(config, held_cases=0, available=5e9) == 0
    assert capacity.available_ram_bytes() is None or capacity.available_ram_bytes() > 0


def test_on_a_gpu_the_cap_is_also_what_host_memory_holds(monkeypatch, caplog):
    config = ModelConfig(**TINY_MODEL)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (80 * 2**30, 80 * 2**30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a test GPU")
    monkeypatch.setattr(capacity, "step_peak_bytes", lambda step, shape, device: 1e3 * math.prod(shape))
    monkeypatch.setattr(capacity, "available_ram_bytes", lambda: 1e9)
    with caplog.at_level(logging.INFO, logger="vol25d.capacity"):
        cap = capacity.plan_voxel_cap(config, (100, 200, 200), torch.device("cuda"), NOT_RUN, held_cases=274)
    assert cap == int(0.8 * 1e9 / (274 * 5)) and "host memory" in caplog.text


def test_training_plans_its_cap_with_its_own_path_1_step(phantoms, tmp_path, monkeypatch):
    """vol25d.train.train gives planning the step of the run it starts: path 1's, with the run's settings."""
    import vol25d.train.loop as loop
    from vol25d.train import train

    probed, losses = [], []
    real_probe = loop.path1_probe
    monkeypatch.setattr(loop, "path1_probe", lambda model_config, config, *rest: probed.append(config)
                        or real_probe(model_config, config, *rest))

    def plan(model_config, shape, device, step, cached_cases, held_cases):
        losses.append(step((10, 12, 12)))
        return DEFAULT_MAX_VOXELS

    monkeypatch.setattr(loop, "plan_voxel_cap", plan)
    config = TrainConfig(device="cpu", amp=False, epochs=1, steps_per_case=1, checkpoint_views=1, seed=3)
    train(phantoms, tmp_path, config, model_config=ModelConfig(**TINY_MODEL), quiet=True)
    assert len(losses) == 1 and math.isfinite(losses[0])
    assert [(c.path, c.checkpoint_views, c.seed, c.augment) for c in probed] == [(1, 1, 3, config.augment)]
