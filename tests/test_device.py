"""Device names and CPU threads: what --device and --threads accept, and what auto picks."""

import pytest
import torch

from vol25d.device import auto_threads, resolve_device, set_threads
from vol25d.errors import InputError


@pytest.mark.parametrize("name", ["gpu", "CUDA", "cuda:x", "tpu", ""])
def test_unknown_device_names_are_refused_by_name(name):
    with pytest.raises(InputError, match=f"device {name!r} is not one vol25d knows; use auto, cpu, cuda"):
        resolve_device(name)


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_says_so(name):
    with pytest.raises(InputError, match="no CUDA GPU is available; use --device cpu"):
        resolve_device(name)


def test_auto_threads_is_one_on_two_cpus_and_torch_default_above(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert auto_threads(1) == 1 and auto_threads(2) == 1
    assert auto_threads(3) is None and auto_threads(64) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's own choice stands
    assert auto_threads(2) is None


def test_set_threads():
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_threads("2") == 2
        for bad in (0, -1, "two", "1.5", 1.5):
            with pytest.raises(InputError, match="--threads must be auto or a whole number ≥ 1"):
                set_threads(bad)
    finally:
        torch.set_num_threads(before)
