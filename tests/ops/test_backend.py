"""vol25d.ops.backend: the choice of kernels, the self-check of the Triton kernels and the fallback to the
reference kernels, driven on the CPU through the same ``auto`` path a CUDA tensor takes (the "is this a
Triton device" predicate and the Triton module replaced by fakes)."""

from __future__ import annotations

import logging
import math

import pytest
import torch

import vol25d.ops as ops
from vol25d.errors import InputError
from vol25d.ops import backend, cpu_kernels, reference

from conftest import fake_triton, raise_no_kernel_image


def _pipeline(seed: int = 0) -> list[torch.Tensor]:
    """Every public operator forward and backward (the explained back-projection and the MIP's gradients):
    the outputs and the gradients."""
    generator = torch.Generator().manual_seed(seed)
    angles = torch.tensor([0.0, math.pi / 2, 1.1])
    volume = torch.randn(1, 1, 4, 12, 10, generator=generator).requires_grad_()
    views = ops.mip(volume, angles)
    projected = ops.project(volume, angles)
    probabilities = torch.sigmoid(torch.randn(1, 2, 3, 4, views.shape[-1], generator=generator)).requires_grad_()
    margin, softness = torch.tensor([0.1, 0.2], requires_grad=True), torch.tensor([0.3, 0.5], requires_grad=True)
    explained = ops.backproject_explained(probabilities, views.detach(), volume.detach(), angles, margin, softness)
    back = ops.backproject(views, angles, (12, 10))
    (back.square().mean() + projected.mean() + explained.mean()).backward()
    return [views, projected, explained, back, volume.grad, probabilities.grad, margin.grad, softness.grad]


def _reference_pipeline(monkeypatch) -> list[torch.Tensor]:
    with monkeypatch.context() as patch:
        patch.setenv("VOL25D_OPS_BACKEND", "reference")
        return _pipeline()


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == backend.__name__ and r.levelno == logging.WARNING]


def _assert_same(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a.detach(), e.detach(), rtol=1e-6, atol=1e-6)


def test_auto_keeps_a_kernel_that_passes_its_self_check(cuda_like, monkeypatch, caplog):
    expected = _reference_pipeline(monkeypatch)
    fake = cuda_like(fake_triton())
    _assert_same(_pipeline(), expected)
    assert all(fake.calls[name] > 1 for name in backend.KERNELS), fake.calls  # checked once, then run
    assert backend.describe("cpu") == "triton" and _warnings(caplog) == []
    assert backend.kernels_for(torch.zeros(1)).__name__ == "fake_triton"


def test_a_kernel_without_an_image_for_the_gpu_falls_back_to_the_reference_with_one_warning(cuda_like, monkeypatch,
                                                                                         caplog):
    expected = _reference_pipeline(monkeypatch)
    fake = cuda_like(fake_triton(mip_backward=raise_no_kernel_image))
    _assert_same(_pipeline(), expected)
    _assert_same(_pipeline(), expected)  # and again: no second check, no second warning
    [warning] = _warnings(caplog)
    assert "mip_backward (float32): RuntimeError: CUDA error: no kernel image" in warning and "cpu" in warning
    assert backend.describe("cpu").startswith("reference (fallback: mip_backward (float32): RuntimeError: CUDA error")
    assert backend.kernels_for(torch.zeros(1)) is reference
    assert fake.calls["mip_backward"] == 1  # only the self-check's call reached the failing kernel


def test_a_kernel_that_returns_wrong_values_falls_back_to_the_reference(cuda_like, monkeypatch, caplog):
    def wrong_project(volume, angles, detector):
        return reference.project(volume, angles, detector) * 1.01

    expected = _reference_pipeline(monkeypatch)
    fake = cuda_like(fake_triton(project=wrong_project))
    _assert_same(_pipeline(), expected)
    [warning] = _warnings(caplog)
    assert "project (float32): KernelMismatch: differs from the reference by 0.01" in warning
    assert backend.describe("cpu").startswith("reference (fallback: project (float32): KernelMismatch")
    assert fake.calls["project"] == 1


def test_a_wrong_mip_argmax_is_caught_by_the_self_check(cuda_like):
    def shifted(volume, angles, detector, keep_argmax):
        views, argmax = reference.mip(volume, angles, detector, keep_argmax)
        return views, None if argmax is None else argmax.clamp(min=0) // 2

    cuda_like(fake_triton(mip=shifted))
    assert backend.resolve("cpu").startswith("reference (fallback: mip (float32): KernelMismatch: the winning sample")


def test_a_kernel_that_fails_only_on_a_real_input_falls_back_mid_run(cuda_like, monkeypatch, caplog):
    def small_only(views, angles, height, width):
        if height > 9:  # the self-check's plane is 9 × 7
            raise RuntimeError("out of resources: shared memory")
        return reference.backproject(views, angles, height, width)

    expected = _reference_pipeline(monkeypatch)
    cuda_like(fake_triton(backproject=small_only))
    _assert_same(_pipeline(), expected)
    [warning] = _warnings(caplog)
    assert "backproject (float32): RuntimeError: out of resources" in warning


def test_each_dtype_is_checked_on_its_first_call(cuda_like, caplog):
    def bad_in_bf16(volume, angles, detector):
        out = reference.project(volume, angles, detector)
        return out * 2 if volume.dtype == torch.bfloat16 else out

    cuda_like(fake_triton(project=bad_in_bf16))
    volume, angles = torch.rand(1, 1, 3, 8, 8), torch.tensor([0.3])
    ops.project(volume, angles)
    assert backend.describe("cpu") == "triton"
    out = ops.project(volume.bfloat16(), angles)
    torch.testing.assert_close(out, reference.project(volume[0].bfloat16(), angles, out.shape[-1])[None])
    assert backend.describe("cpu").startswith("reference (fallback: project (bfloat16): KernelMismatch")
    assert len(_warnings(caplog)) == 1


def test_resolve_checks_every_kernel_at_once(cuda_like, caplog):
    fake = cuda_like(fake_triton())
    assert backend.resolve("cpu") == "triton"
    assert all(fake.calls[name] == 1 for name in backend.KERNELS), fake.calls
    backend.resolve("cpu")
    assert all(fake.calls[name] == 1 for name in backend.KERNELS)  # checked once per process
    assert _warnings(caplog) == []


def test_auto_without_triton_runs_the_reference_and_says_why(cuda_like):
    cuda_like(None)
    assert backend.kernels_for(torch.zeros(1)) is reference
    assert backend.resolve("cpu") == "reference (Triton does not import: ModuleNotFoundError: No module named 'triton')"


def test_auto_on_a_cpu_tensor_is_the_cpu_kernels_without_a_check(monkeypatch):
    monkeypatch.delenv("VOL25D_OPS_BACKEND", raising=False)
    assert backend.kernels_for(torch.zeros(1)) is cpu_kernels
    assert backend.resolve("cpu") == "cpu" and backend.here() == "cpu on cpu"


@pytest.mark.parametrize("choice, kernels, described", [("cpu", cpu_kernels, "cpu (forced)"),
                                                         ("reference", reference, "reference (forced)")])
def test_cpu_and_reference_forced_on_a_cpu_tensor(monkeypatch, choice, kernels, described):
    monkeypatch.setenv("VOL25D_OPS_BACKEND", choice)
    assert backend.kernels_for(torch.zeros(1)) is kernels and backend.describe("cpu") == described


@pytest.mark.parametrize("choice", ["auto", "cpu"])
def test_a_tensor_neither_on_the_cpu_nor_on_cuda_gets_the_reference_kernels(monkeypatch, choice):
    monkeypatch.setenv("VOL25D_OPS_BACKEND", choice)  # the CPU kernels are for CPU tensors only
    assert backend.kernels_for(torch.zeros(1, device="meta")) is reference and backend.describe("meta") == "reference"


def test_reference_forced_never_touches_triton(cuda_like, monkeypatch):
    fake = cuda_like(fake_triton())
    monkeypatch.setenv("VOL25D_OPS_BACKEND", "reference")
    ops.project(torch.rand(1, 1, 2, 6, 6), torch.tensor([0.0]))
    assert backend.resolve("cpu") == "reference (forced)" and sum(fake.calls.values()) == 0


def test_triton_forced_and_failing_is_one_sentence(cuda_like, monkeypatch):
    cuda_like(fake_triton(mip=raise_no_kernel_image))
    monkeypatch.setenv("VOL25D_OPS_BACKEND", "triton")
    with pytest.raises(InputError, match=r"^the Triton kernel mip \(float32\): RuntimeError: CUDA error: no kernel "
                                         r"image .*; use --ops-backend auto .* or reference") as raised:
        ops.mip(torch.rand(1, 1, 2, 6, 6), torch.tensor([0.0]))
    assert "\n" not in str(raised.value)
    assert backend.describe("cpu") == "triton (forced)"  # forced: no fallback, the failure is the user's to see


def test_triton_forced_runs_the_kernels_unchecked(cuda_like, monkeypatch, caplog):
    def wrong_project(volume, angles, detector):
        return reference.project(volume, angles, detector) * 2

    fake = cuda_like(fake_triton(project=wrong_project))
    monkeypatch.setenv("VOL25D_OPS_BACKEND", "triton")
    assert backend.resolve("cpu") == "triton (forced)" and sum(fake.calls.values()) == 0
    volume, angles = torch.rand(1, 1, 2, 6, 6), torch.tensor([0.0])
    torch.testing.assert_close(ops.project(volume, angles, 10), 2 * reference.project(volume[0], angles, 10)[None])
    assert fake.calls["project"] == 1 and _warnings(caplog) == []


def test_triton_forced_but_not_importable_is_one_sentence(cuda_like, monkeypatch):
    cuda_like(None)
    monkeypatch.setenv("VOL25D_OPS_BACKEND", "triton")
    with pytest.raises(InputError, match=r"asked for .* but do not import \(ModuleNotFoundError: No module named "
                                         r"'triton'\); install triton, or use --ops-backend auto or reference"):
        ops.project(torch.rand(1, 1, 2, 6, 6), torch.tensor([0.0]))
    assert backend.describe("cpu").startswith("unavailable: ")


def test_a_bad_backend_name_is_one_sentence(monkeypatch):
    monkeypatch.setenv("VOL25D_OPS_BACKEND", "cuda")
    with pytest.raises(InputError, match=r"VOL25D_OPS_BACKEND='cuda' is not a kernel backend; set it .* to auto, "
                                         r"triton, cpu, reference"):
        ops.project(torch.rand(1, 1, 2, 6, 6), torch.tensor([0.0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kernel", backend.KERNELS)
def test_the_reference_passes_its_own_self_check(kernel, dtype):
    backend.self_check(reference, kernel, "cpu", dtype)
