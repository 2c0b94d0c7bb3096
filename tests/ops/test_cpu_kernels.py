"""vol25d.ops.cpu_kernels against the reference kernels (the oracle): values, argmax, ties and gradients on
even, odd and non-square planes, several batches, angles at and off the axes, narrow and wide detectors."""

from __future__ import annotations

import math

import pytest
import torch

from vol25d.geometry import default_detector, ray_samples
from vol25d.ops import backend, backproject, backproject_explained, cpu_kernels, mip, project, reference

SHAPES = [(2, 3, 8, 8), (1, 2, 7, 9), (2, 2, 9, 6), (1, 4, 13, 5), (3, 1, 10, 11)]  # (N, D, H, W)
IDS = ["x".join(map(str, s)) for s in SHAPES]


def _angles(count: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    extra = (torch.rand(count - 3, generator=generator, dtype=torch.float64) * 4 - 2) * math.pi  # also < 0, > π
    return torch.cat([torch.tensor([0.0, math.pi / 2, math.pi / 4], dtype=torch.float64), extra]).to(dtype)


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    scale = float(expected.double().abs().max().clamp_min(1e-30))
    return float((actual.double() - expected.double()).abs().max()) / scale


def _detectors(height: int, width: int) -> list[int]:
    return [default_detector(height, width), 5, default_detector(height, width) + 12]  # default, narrow, wide


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_mip_matches_the_reference(shape):
    n, depth, height, width = shape
    volume = torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)), dtype=torch.float64)
    angles = _angles(7, seed=height * width, dtype=torch.float64)
    for detector in _detectors(height, width):
        expected, expected_argmax = reference.mip(volume, angles, detector, True)
        actual, argmax = cpu_kernels.mip(volume, angles, detector, True)
        assert actual.shape == expected.shape and actual.dtype == expected.dtype
        assert _relative(actual, expected) < 1e-10
        assert torch.equal(argmax, expected_argmax)  # random values: no ties
        values, none = cpu_kernels.mip(volume, angles, detector, False)
        assert none is None and torch.equal(values, actual)
        # float32: the reference's grid_sample rounds its coordinates to float32 (about 1e-6 voxel).
        single, _ = cpu_kernels.mip(volume.float(), angles.float(), detector, False)
        reference_single, _ = reference.mip(volume.float(), angles.float(), detector, False)
        assert single.dtype == torch.float32
        assert _relative(single, reference_single) < 1e-4


def test_mip_of_a_low_precision_volume_is_computed_in_float32():
    volume = torch.randn(1, 2, 9, 9).to(torch.bfloat16)
    angles = _angles(4, seed=1)
    actual, _ = cpu_kernels.mip(volume, angles, 13, False)
    expected, _ = reference.mip(volume, angles, 13, False)
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected.float(), rtol=1e-2, atol=1e-2)


def test_mip_rays_that_miss_hold_the_minimum_and_argmax_minus_one():
    volume = torch.rand(2, 2, 6, 6, dtype=torch.float64) + 1
    angles = torch.tensor([0.0, 0.7], dtype=torch.float64)
    views, argmax = cpu_kernels.mip(volume, angles, 20, True)
    expected, expected_argmax = reference.mip(volume, angles, 20, True)
    torch.testing.assert_close(views, expected)
    assert torch.equal(argmax, expected_argmax)
    assert torch.all(argmax[:, 0, :, 0] == -1)
    assert torch.all(views[0, 0, :, 0] == volume[0].min()) and torch.all(views[1, 0, :, 0] == volume[1].min())


def test_mip_ties_go_to_the_first_sample_along_the_ray():
    # θ = 0 with detector = H: ray h samples row h at w = 0, 1, … exactly (weights 1), so equal voxels tie.
    volume = torch.zeros(1, 1, 3, 5, dtype=torch.float64)
    volume[0, 0, 1] = torch.tensor([0.0, 5.0, 5.0, 1.0, 5.0], dtype=torch.float64)
    volume[0, 0, 2] = 2.0  # a constant row: every sample ties
    views, argmax = cpu_kernels.mip(volume, torch.zeros(1, dtype=torch.float64), 3, True)
    assert views[0, 0, 0].tolist() == [0.0, 5.0, 2.0]
    j0 = int(ray_samples(torch.zeros(1, dtype=torch.float64), 3, 5, 3)[1][0, 0].abs().argmin())  # w = 0
    assert argmax[0, 0, 0].tolist() == [j0, j0 + 1, j0]
    # Through the public op the gradient goes to that first voxel.
    x = volume[None].clone().requires_grad_(True)
    mip(x, torch.zeros(1, dtype=torch.float64), detector=3).sum().backward()
    expected = torch.zeros_like(volume)
    expected[0, 0, 0, 0] = expected[0, 0, 1, 1] = expected[0, 0, 2, 0] = 1.0
    torch.testing.assert_close(x.grad[0], expected)


@pytest.fixture
def on_backend(monkeypatch):
    def use(name: str):
        monkeypatch.setenv("VOL25D_OPS_BACKEND", name)

    return use


def test_the_cpu_kernels_serve_cpu_tensors(on_backend):
    on_backend("auto")
    assert backend.kernels_for(torch.zeros(1)) is cpu_kernels
    on_backend("reference")
    assert backend.kernels_for(torch.zeros(1)) is reference
    on_backend("cpu")
    assert backend.kernels_for(torch.zeros(1)) is cpu_kernels


def _gradients(on_backend, name, function, *inputs):
    on_backend(name)
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    out = function(*leaves)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype)
    grads = torch.autograd.grad((out * weights).sum(), [t for t in leaves if t.requires_grad])
    return out.detach(), grads


@pytest.mark.parametrize("shape", SHAPES[:3], ids=IDS[:3])
def test_mip_gradient_matches_the_reference(on_backend, shape):
    n, depth, height, width = shape
    volume = torch.randn(n, 1, depth, height, width, dtype=torch.float64, requires_grad=True)
    angles = _angles(5, seed=3, dtype=torch.float64)
    for detector in _detectors(height, width):
        def function(v):
            return mip(v, angles, detector)

        expected, expected_grad = _gradients(on_backend, "reference", function, volume)
        actual, actual_grad = _gradients(on_backend, "cpu", function, volume)
        torch.testing.assert_close(actual, expected)
        torch.testing.assert_close(actual_grad[0], expected_grad[0])


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_project_and_backproject_match_the_reference(shape):
    n, depth, height, width = shape
    generator = torch.Generator().manual_seed(sum(shape) + 1)
    angles = _angles(6, seed=width)
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        volume = torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)
        for detector in _detectors(height, width):
            views = torch.randn(n, angles.numel(), depth, detector, generator=generator, dtype=torch.float64).to(dtype)
            projected = cpu_kernels.project(volume, angles.to(dtype), detector)
            assert projected.dtype == dtype
            assert _relative(projected, reference.project(volume, angles.to(dtype), detector)) < tolerance
            rebuilt = cpu_kernels.backproject(views, angles.to(dtype), height, width)
            assert rebuilt.dtype == dtype
            assert _relative(rebuilt, reference.backproject(views, angles.to(dtype), height, width)) < tolerance


def test_backproject_is_the_transpose_of_project():
    volume = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    angles = _angles(5, seed=9, dtype=torch.float64)
    views = torch.randn(2, 5, 3, 12, dtype=torch.float64)
    left = (cpu_kernels.project(volume, angles, 12) * views).sum()
    right = (volume * cpu_kernels.backproject(views, angles, 9, 7)).sum()
    assert float(left) == pytest.approx(float(right), rel=1e-12)


def _explained_case(images: int, classes: int, shape, dtype=torch.float64, seed=0):
    depth, height, width = shape
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(images, depth, height, width, generator=generator, dtype=dtype)
    angles = _angles(5, seed=seed + 2, dtype=dtype)
    detector = default_detector(height, width)
    image_views = reference.mip(image, angles, detector, False)[0]
    views = torch.rand(images * classes, angles.numel(), depth, detector, generator=generator, dtype=dtype)
    margin = torch.linspace(-0.05, 0.2, classes, dtype=dtype)
    softness = torch.linspace(0.2, 0.6, classes, dtype=dtype)
    return views, image_views, image, angles, margin, softness


@pytest.mark.parametrize("images,classes,shape", [(1, 1, (3, 8, 8)), (2, 2, (2, 7, 9)), (1, 3, (2, 9, 6))])
def test_explained_matches_the_reference(images, classes, shape):
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        case = [t.to(dtype) for t in _explained_case(images, classes, shape)]
        actual = cpu_kernels.backproject_explained(*case, *shape[1:])
        assert actual.dtype == dtype
        assert _relative(actual, reference.backproject_explained(*case, *shape[1:])) < tolerance


def test_explained_of_low_precision_views_computes_in_float32():
    views, image_views, image, angles, margin, softness = _explained_case(1, 2, (2, 8, 8), dtype=torch.float32)
    views = views.to(torch.bfloat16)
    actual = cpu_kernels.backproject_explained(views, image_views, image, angles, margin, softness, 8, 8)
    expected = reference.backproject_explained(views, image_views, image, angles, margin, softness, 8, 8)
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected.float(), rtol=1e-2, atol=1e-2)


def test_explained_gradients_match_the_reference(on_backend):
    views, image_views, image, angles, margin, softness = _explained_case(2, 2, (2, 7, 9), seed=4)
    views = views.reshape(2, 2, *views.shape[1:]).requires_grad_(True)
    margin.requires_grad_(True)
    softness.requires_grad_(True)

    def function(v, m, s):
        return backproject_explained(v, image_views[:, None], image[:, None], angles, m, s)

    expected, expected_grads = _gradients(on_backend, "reference", function, views, margin, softness)
    actual, actual_grads = _gradients(on_backend, "cpu", function, views, margin, softness)
    torch.testing.assert_close(actual, expected)
    for a, e in zip(actual_grads, expected_grads):
        torch.testing.assert_close(a, e)


def test_project_and_backproject_gradients_match_the_reference(on_backend):
    volume = torch.randn(1, 2, 3, 9, 8, dtype=torch.float64, requires_grad=True)
    views = torch.randn(1, 2, 4, 3, 13, dtype=torch.float64, requires_grad=True)
    angles = _angles(4, seed=6, dtype=torch.float64)
    cases = ((lambda v: project(v, angles, 13), volume), (lambda v: backproject(v, angles, (9, 8)), views))
    for function, tensor in cases:
        expected, expected_grad = _gradients(on_backend, "reference", function, tensor)
        actual, actual_grad = _gradients(on_backend, "cpu", function, tensor)
        torch.testing.assert_close(actual, expected)
        torch.testing.assert_close(actual_grad[0], expected_grad[0])


def test_the_plan_cache_stays_within_its_bound(monkeypatch):
    cache = cpu_kernels._PlanCache(200_000)
    monkeypatch.setattr(cpu_kernels, "_PLANS", cache)
    volume = torch.randn(1, 2, 16, 16)
    angles = torch.linspace(0, 3, 40)
    expected = reference.mip(volume, angles, 23, False)[0]
    torch.testing.assert_close(cpu_kernels.mip(volume, angles, 23, False)[0], expected, rtol=1e-4, atol=1e-4)
    assert 0 < cache.used <= 200_000
    assert cache.used == sum(cache._bytes(v) for v in cache.items.values())
    # A second call, partly from the cache, gives the same numbers.
    torch.testing.assert_close(cpu_kernels.mip(volume, angles, 23, False)[0], expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("want", [(True, True, True), (True, False, False), (False, True, True), (False, False, True)])
def test_explained_backward_computes_only_the_gradients_asked_for(on_backend, want):
    views, image_views, image, angles, margin, softness = _explained_case(1, 2, (3, 8, 9), seed=7)
    views = views.reshape(1, 2, *views.shape[1:])
    inputs = [views.requires_grad_(want[0]), margin.requires_grad_(want[1]), softness.requires_grad_(want[2])]

    def function(v, m, s):
        return backproject_explained(v, image_views[:, None], image[:, None], angles, m, s)

    _, expected = _gradients(on_backend, "reference", function, *inputs)
    _, actual = _gradients(on_backend, "cpu", function, *inputs)
    assert len(actual) == sum(want)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


def test_explained_gradients_in_float32_match_float64(on_backend):
    on_backend("cpu")
    views, image_views, image, angles, margin, softness = _explained_case(1, 1, (2, 9, 8), seed=8)
    grads = []
    for dtype in (torch.float64, torch.float32):
        leaves = [t.to(dtype).requires_grad_(True) for t in (views.reshape(1, 1, *views.shape[1:]), margin, softness)]
        out = backproject_explained(leaves[0], image_views[:, None].to(dtype), image[:, None].to(dtype),
                                    angles.to(dtype), leaves[1], leaves[2])
        grads.append(torch.autograd.grad((out * out.detach()).sum(), leaves))
    for a, e in zip(grads[1], grads[0]):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), e, rtol=1e-4, atol=1e-4)
