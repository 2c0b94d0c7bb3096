"""project and backproject: an operator and its transpose (the adjoint test comes first)."""

import math

import pytest
import torch

from vol25d.geometry import default_detector
from vol25d.ops import backproject, project

SIZES = [(3, 8, 8), (2, 7, 7), (2, 7, 9), (3, 10, 6)]


@pytest.mark.parametrize("depth,height,width", SIZES)
@pytest.mark.parametrize("detector", [None, 5])
def test_adjoint_identity(depth, height, width, detector):
    torch.manual_seed(height * width)
    x = torch.randn(2, 2, depth, height, width, dtype=torch.float64)
    angles = torch.rand(7, dtype=torch.float64) * 2 * math.pi
    views = project(x, angles, detector)
    y = torch.randn_like(views)
    lhs = (views * y).sum()
    rhs = (x * backproject(y, angles, (height, width))).sum()
    assert abs(lhs - rhs) / abs(lhs) <= 1e-6


def test_shapes_and_default_detector():
    x = torch.rand(2, 3, 4, 9, 6)
    views = project(x, torch.tensor([0.1, 0.2, 0.3]))
    assert views.shape == (2, 3, 3, 4, default_detector(9, 6))


def test_zero_angle_is_sum_along_w():
    x = torch.rand(1, 2, 3, 8, 6, dtype=torch.float64)
    views = project(x, torch.tensor([0.0], dtype=torch.float64), detector=8)
    torch.testing.assert_close(views[:, :, 0], x.sum(-1))


def test_mass_is_preserved_when_the_detector_covers_the_plane():
    x = torch.rand(1, 1, 2, 9, 11, dtype=torch.float64)
    views = project(x, torch.tensor([0.3, 1.2, 2.9], dtype=torch.float64))
    torch.testing.assert_close(views.sum(-1), x.sum((-1, -2)).unsqueeze(2).expand(-1, -1, 3, -1))


def test_voxels_off_a_small_detector_are_dropped():
    x = torch.zeros(1, 1, 1, 9, 9, dtype=torch.float64)
    x[..., 0, 4] = 1.0  # a voxel 4 bins above the centre at θ = 0
    assert project(x, torch.tensor([0.0], dtype=torch.float64), detector=3).sum() == 0
    assert project(x, torch.tensor([0.0], dtype=torch.float64), detector=9).sum() == 1


def test_gradcheck():
    x = torch.randn(1, 2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    angles = torch.tensor([0.2, 1.9], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: project(v, angles), (x,))
    assert torch.autograd.gradgradcheck(lambda v: project(v, angles), (x,))


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: project(torch.rand(4, 8, 8), torch.tensor([0.0])), "5-D"),
        (lambda: project(torch.ones(1, 1, 2, 8, 8, dtype=torch.int64), torch.tensor([0.0])), "floating-point"),
        (lambda: project(torch.rand(1, 1, 2, 8, 8), torch.tensor([])), "non-empty 1-D"),
        (lambda: project(torch.rand(1, 1, 2, 8, 8), torch.zeros(2, 2)), "non-empty 1-D"),
        (lambda: project(torch.rand(1, 1, 2, 8, 8), torch.tensor([0.0]), detector=0), "detector"),
    ],
)
def test_bad_arguments_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()
