"""Shared fixtures: a tiny phantom dataset and a tiny model configuration, written in tmp folders."""

from pathlib import Path

import pytest
import torch
import yaml

from vol25d.data.phantom import write_phantom_dataset

TINY_MODEL = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1, "directions": 8, "views": 2}


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory) -> Path:
    """Four 24³ synthetic MRA phantoms in the MSD layout."""
    return write_phantom_dataset(tmp_path_factory.mktemp("phantoms"), n=4, size=24, seed=0)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory) -> Path:
    """A YAML config with a small U-Net, few directions and light augmentation (CPU-fast)."""
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": TINY_MODEL, "train": {"amp": False, "steps_per_case": 1}}))
    return path


class _CudaAutocastRules(torch.overrides.TorchFunctionMode):
    """Refuses, inside an enabled CPU autocast region, the ops that CUDA autocast refuses ("unsafe to
    autocast"): with ``cuda_autocast`` below, a CPU run meets the CUDA rule that no CPU run would show."""

    REFUSED = ("binary_cross_entropy",)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.REFUSED and torch.is_autocast_enabled("cpu"):
            raise RuntimeError(f"torch.nn.functional.{func.__name__} is unsafe to autocast (CUDA refuses it)")
        return func(*args, **(kwargs or {}))


@pytest.fixture
def cuda_autocast(monkeypatch):
    """Run ``amp=True`` code on the CPU as it runs on CUDA: bf16 autocast on, CUDA's refused ops refused."""
    import vol25d.device

    monkeypatch.setattr(vol25d.device, "AMP_DEVICE_TYPES", ("cuda", "cpu"))
    with _CudaAutocastRules():
        yield
