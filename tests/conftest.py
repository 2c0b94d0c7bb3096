"""Shared fixtures: a tiny phantom dataset and a tiny model configuration, written in tmp folders."""

import importlib.util
import locale
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vol25d.data.phantom import write_phantom_dataset

TINY_MODEL = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1, "directions": 8, "views": 2}


def load_script(path: Path, name: str):
    """Import the script at ``path`` (an experiment, not a package module) as the module ``name``; it is
    registered in ``sys.modules`` first, where dataclasses and ``from name import …`` look it up."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _keep_the_locale():
    """GDCM's DICOM writer (SimpleITK) sets LC_CTYPE to "C" for the whole process; later tests would then read
    and decode text as ASCII. Every test ends with the locale it started with."""
    saved = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, saved)


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


@pytest.fixture(scope="session")
def run(phantoms, tiny_config, tmp_path_factory) -> Path:
    """A run folder with path 1 (2 epochs) and path 2 (1 epoch) trained on the phantoms by the CLI."""
    out = tmp_path_factory.mktemp("run")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for args in (["--path", 1, "--config", tiny_config, "--epochs", 2],
                 ["--path", 2, "--init", out / "path1.pt", "--epochs", 1]):
        subprocess.run([sys.executable, "-m", "vol25d", "-q", "train", "--data", str(phantoms), "--out", str(out),
                        "--device", "cpu", *map(str, args)], check=True, capture_output=True, env=env)
    return out


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


def fake_triton(**overrides):
    """A stand-in for vol25d.ops.triton_kernels: the reference kernels, counting their calls (``.calls``),
    with ``overrides`` (kernel name → function) in their place."""
    from types import SimpleNamespace

    from vol25d.ops import backend, reference

    calls = {name: 0 for name in backend.KERNELS}

    def counted(name):
        def kernel(*args, **kwargs):
            calls[name] += 1
            return (overrides.get(name) or getattr(reference, name))(*args, **kwargs)
        return kernel

    return SimpleNamespace(__name__="fake_triton", calls=calls, **{name: counted(name) for name in backend.KERNELS})


def raise_no_kernel_image(*args, **kwargs):
    """A kernel that fails as a CUDA kernel built for another GPU does."""
    raise RuntimeError("CUDA error: no kernel image is available for execution on the device")


@pytest.fixture
def cuda_like(monkeypatch):
    """``use(module)``: from then on vol25d.ops.backend's ``auto`` treats CPU tensors as it treats CUDA ones and
    finds ``module`` (e.g. :func:`fake_triton`) as its Triton kernels (``None``: Triton does not import). Every
    check and fallback is forgotten before and after the test."""
    from vol25d.ops import backend

    monkeypatch.delenv("VOL25D_OPS_BACKEND", raising=False)
    backend.forget()

    def use(module, why="ModuleNotFoundError: No module named 'triton'"):
        monkeypatch.setattr(backend, "_triton_device", lambda device: True)
        monkeypatch.setattr(backend, "_candidate", lambda: (module, None if module is not None else why))
        return module

    yield use
    backend.forget()
