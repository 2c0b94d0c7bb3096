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
    loss = capacity.path1_step(ModelConfig(**TINY_MODEL), (10, 12, 12), torch.device("cpu"), amp=False)
    assert math.isfinite(loss) and loss > 0


def test_on_the_cpu_the_cap_is_the_default_and_logged_when_it_applies(caplog):
    config = ModelConfig(**TINY_MODEL)
    with caplog.at_level(logging.INFO, logger="vol25d.capacity"):
        assert capacity.plan_voxel_cap(config, (32, 32, 32), torch.device("cpu"), False) == DEFAULT_MAX_VOXELS
        assert not caplog.records
        assert capacity.plan_voxel_cap(config, (150, 512, 512), torch.device("cpu"), False) == DEFAULT_MAX_VOXELS
    assert "--max-voxels 0" in caplog.text


def test_the_cuda_branch_budgets_free_memory_less_path_2s_cache(monkeypatch, caplog):
    """plan_voxel_cap's CUDA branch with the allocator's readings replaced: the step itself runs on the CPU."""
    config = ModelConfig(**TINY_MODEL)
    free = 10 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a test GPU")
    steps = []

    def fake_peak(model_config, shape, device, amp, checkpoint_views):
        assert checkpoint_views == 2  # measured as training will run it
        steps.append(capacity.path1_step(model_config, shape, torch.device("cpu"), False, checkpoint_views))
        return 1e4 * math.prod(shape)

    monkeypatch.setattr(capacity, "step_peak_bytes", fake_peak)
    with caplog.at_level(logging.INFO, logger="vol25d.capacity"):
        cap = capacity.plan_voxel_cap(config, (12, 16, 16), torch.device("cuda"), True, cached_cases=3,
                                      checkpoint_views=2)
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
    monkeypatch.setattr(capacity, "step_peak_bytes", lambda model_config, shape, device, amp, views: 1e3 * math.prod(shape))
    monkeypatch.setattr(capacity, "available_ram_bytes", lambda: 1e9)
    with caplog.at_level(logging.INFO, logger="vol25d.capacity"):
        cap = capacity.plan_voxel_cap(config, (100, 200, 200), torch.device("cuda"), True, held_cases=274)
    assert cap == int(0.8 * 1e9 / (274 * 5)) and "host memory" in caplog.text
