"""mip: ray-driven maximum intensity projection."""

import math

import pytest
import torch

from vol25d.geometry import default_detector
from vol25d.ops import mip


@pytest.mark.parametrize("height,width", [(8, 8), (7, 9), (9, 6)])
def test_zero_angle_is_max_along_w(height, width):
    x = torch.randn(2, 2, 3, height, width)
    views = mip(x, torch.tensor([0.0]), detector=height)
    torch.testing.assert_close(views[:, :, 0], x.amax(-1))


@pytest.mark.parametrize("size", [8, 9])
def test_right_angle_is_max_along_h_reversed(size):
    x = torch.randn(1, 1, 3, size, size)
    views = mip(x, torch.tensor([math.pi / 2]), detector=size)  # a float32 π/2: the edge samples still count
    torch.testing.assert_close(views[:, :, 0], x.amax(-2).flip(-1))


def test_outside_samples_are_ignored_not_zero():
    x = -1.0 - torch.rand(1, 1, 2, 9, 9)  # all negative, as a z-scored background is
    views = mip(x, torch.rand(5) * math.pi)
    assert views.max() < 0
    assert views.min() >= x.min()


def test_a_ray_that_misses_the_volume_gives_its_minimum():
    x = torch.rand(1, 1, 2, 6, 6) + 1
    views = mip(x, torch.tensor([0.0]), detector=20)  # bins far off the 6-voxel plane
    assert torch.all(views[..., 0] == x.min())
    assert torch.all(views[..., 7:13] > x.min())


def test_a_point_shows_where_geometry_says():
    x = torch.zeros(1, 1, 1, 9, 9, dtype=torch.float64)
    x[0, 0, 0, 2, 6] = 1.0  # h - c = -2, w - c = +2
    angle = math.pi / 4
    views = mip(x, torch.tensor([angle], dtype=torch.float64))
    s = -2 * math.cos(angle) - 2 * math.sin(angle)  # ⟨(h, w) - c, (cos θ, -sin θ)⟩
    detector = default_detector(9, 9)
    peak = int(views[0, 0, 0, 0].argmax())
    assert abs((peak - (detector - 1) / 2) - s) <= 0.5


def test_gradient_goes_to_the_winning_sample():
    x = torch.zeros(1, 1, 1, 5, 5, requires_grad=True)
    with torch.no_grad():
        x[0, 0, 0, 1, 3] = 2.0
    views = mip(x, torch.tensor([0.0]), detector=5)
    views[0, 0, 0, 0, 1].backward()
    expected = torch.zeros(1, 1, 1, 5, 5)
    expected[0, 0, 0, 1, 3] = 1.0
    torch.testing.assert_close(x.grad, expected)


def test_gradcheck():
    torch.manual_seed(3)
    x = torch.randn(1, 2, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    angles = torch.tensor([0.3, 1.1, 2.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: mip(v, angles), (x,), eps=1e-7, atol=1e-5)


def test_no_argmax_is_kept_without_a_gradient():
    saved = []
    x = torch.rand(1, 1, 4, 16, 16)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        mip(x, torch.rand(4))
    assert saved == []


def test_bad_arguments():
    with pytest.raises(ValueError, match="5-D"):
        mip(torch.rand(2, 8, 8), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="detector"):
        mip(torch.rand(1, 1, 2, 8, 8), torch.tensor([0.0]), detector=-3)
    with pytest.raises(ValueError, match="floating-point radians"):
        mip(torch.rand(1, 1, 2, 8, 8), torch.tensor([0, 1]))
