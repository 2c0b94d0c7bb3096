"""vol25d/ops/explained.py: the explained back-projection against a per-view composition of the plain
operators, its gradients (gradcheck, an adjoint identity) and its argument checks."""

import math

import pytest
import torch

from vol25d.ops import backproject, backproject_explained, mip
from vol25d.ops.explained import explained_weight


def _case(dtype=torch.float64, classes=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(2, 1, 3, 7, 9, generator=generator, dtype=dtype)
    angles = torch.tensor([0.0, math.pi / 2, 1.1, 2.6], dtype=dtype)
    image_views = mip(image, angles)
    views = torch.rand(2, classes, 4, 3, image_views.shape[-1], generator=generator, dtype=dtype)
    margin = torch.linspace(0.05, 0.2, classes, dtype=dtype)
    softness = torch.linspace(0.3, 0.5, classes, dtype=dtype)
    return views, image_views, image, angles, margin, softness


def test_is_the_sum_over_views_of_the_interpolated_probability_times_its_weight():
    views, image_views, image, angles, margin, softness = _case()
    expected = torch.zeros(2, 2, 3, 7, 9, dtype=torch.float64)
    for k in range(angles.numel()):
        one = angles[k : k + 1]
        p_hat = backproject(views[:, :, k : k + 1], one, (7, 9))
        v_hat = backproject(image_views[:, :, k : k + 1], one, (7, 9))
        expected += p_hat * explained_weight(v_hat - image, margin.view(1, -1, 1, 1, 1), softness.view(1, -1, 1, 1, 1))
    torch.testing.assert_close(backproject_explained(views, image_views, image, angles, margin, softness), expected)


def test_a_voxel_as_bright_as_its_rays_maximum_gets_the_whole_probability():
    # A constant image: every voxel is its rays' maximum, so the weight is 1 and this is the plain back-projection.
    image = torch.full((1, 1, 2, 6, 6), 0.7, dtype=torch.float64)
    angles = torch.tensor([0.0, 0.9], dtype=torch.float64)
    image_views = mip(image, angles)
    views = torch.rand(1, 1, 2, 2, image_views.shape[-1], dtype=torch.float64)
    out = backproject_explained(views, image_views, image, angles, torch.tensor([0.1]), torch.tensor([0.3]))
    torch.testing.assert_close(out, backproject(views, angles, (6, 6)))


def test_a_voxel_much_darker_than_its_ray_gets_almost_nothing():
    image = torch.zeros(1, 1, 1, 5, 5, dtype=torch.float64)
    image[..., 2, 2] = 1.0  # one bright voxel: at θ = 0 it is row 2's maximum
    angles = torch.zeros(1, dtype=torch.float64)
    image_views = mip(image, angles, detector=5)
    views = torch.ones(1, 1, 1, 1, 5, dtype=torch.float64)
    out = backproject_explained(views, image_views, image, angles, torch.tensor([0.0]), torch.tensor([0.05]))[0, 0, 0]
    assert out[2, 2] == pytest.approx(1.0)
    assert float(out[2, 0]) < 1e-6 and float(out[0, 0]) == pytest.approx(1.0)  # other rows: all voxels equal


def test_gradcheck_in_views_margin_and_softness():
    views, image_views, image, angles, margin, softness = _case(classes=2, seed=1)
    views.requires_grad_(True)
    margin.requires_grad_(True)
    softness.requires_grad_(True)

    def function(v, m, s):
        return backproject_explained(v, image_views, image, angles, m, s)

    assert torch.autograd.gradcheck(function, (views, margin, softness), eps=1e-6, atol=1e-6)


def test_the_views_gradient_is_the_weighted_projection_dot_product():
    # <B_w v, y> = <v, B_wᵀ y>: the backward in the views is the transpose of the (linear in v) forward.
    views, image_views, image, angles, margin, softness = _case(seed=2)
    views.requires_grad_(True)
    y = torch.randn(2, 2, 3, 7, 9, dtype=torch.float64)
    out = backproject_explained(views, image_views, image, angles, margin, softness)
    (grad,) = torch.autograd.grad((out * y).sum(), views)
    assert float((out * y).sum().detach()) == pytest.approx(float((views * grad).sum().detach()), rel=1e-10)


def test_float32_matches_float64():
    views, image_views, image, angles, margin, softness = _case()
    expected = backproject_explained(views, image_views, image, angles, margin, softness)
    actual = backproject_explained(views.float(), image_views.float(), image.float(), angles.float(), margin.float(),
                                   softness.float())
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual.double(), expected, rtol=1e-5, atol=1e-5)


def test_mismatched_shapes_name_the_argument():
    views, image_views, image, angles, margin, softness = _case()
    with pytest.raises(ValueError, match=r"image_views must be \(B, 1, p, D, S\)"):
        backproject_explained(views, image_views[:, :, :2], image, angles, margin, softness)
    with pytest.raises(ValueError, match=r"margin must be a \(2,\) tensor"):
        backproject_explained(views, image_views, image, angles, margin[:1], softness)
    with pytest.raises(ValueError, match=r"image must be \(B, 1, D, H, W\)"):
        backproject_explained(views, image_views, image[:, :, :2], angles, margin, softness)
