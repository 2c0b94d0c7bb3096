"""backproject: the transpose of project, and filtered back-projection with the ramp filter."""

import math

import pytest
import torch

from vol25d.geometry import default_detector, equal_angles
from vol25d.ops import backproject, filter_views, project, ramp_filter


def test_zero_angle_spreads_each_bin_along_its_row():
    views = torch.arange(8, dtype=torch.float64).reshape(1, 1, 1, 1, 8)
    volume = backproject(views, torch.tensor([0.0], dtype=torch.float64), (8, 5))
    torch.testing.assert_close(volume[0, 0, 0], torch.arange(8, dtype=torch.float64)[:, None].expand(8, 5))


def test_is_the_backward_of_project_and_vice_versa():
    torch.manual_seed(1)
    angles = torch.rand(3, dtype=torch.float64) * math.pi
    x = torch.randn(1, 1, 2, 7, 9, dtype=torch.float64, requires_grad=True)
    y = torch.randn(1, 1, 3, 2, default_detector(7, 9), dtype=torch.float64)
    (project(x, angles) * y).sum().backward()
    torch.testing.assert_close(x.grad, backproject(y, angles, (7, 9)))
    v = y.clone().requires_grad_(True)
    w = torch.randn(1, 1, 2, 7, 9, dtype=torch.float64)
    (backproject(v, angles, (7, 9)) * w).sum().backward()
    torch.testing.assert_close(v.grad, project(w, angles))


def test_gradcheck():
    views = torch.randn(1, 2, 3, 2, 9, dtype=torch.float64, requires_grad=True)
    angles = torch.tensor([0.0, 0.7, 2.0], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: backproject(v, angles, (5, 6)), (views,))


def test_shape_must_agree_with_the_views():
    with pytest.raises(ValueError, match="one entry per view"):
        backproject(torch.rand(1, 1, 3, 2, 9), torch.tensor([0.0, 1.0]), (6, 6))
    with pytest.raises(ValueError, match="plane size"):
        backproject(torch.rand(1, 1, 1, 2, 9), torch.tensor([0.0]), (6,))
    with pytest.raises(ValueError, match="5-D"):
        backproject(torch.rand(1, 2, 9), torch.tensor([0.0]), (6, 6))


def _grid(depth, size):
    axes = [torch.arange(n, dtype=torch.float64) - (n - 1) / 2 for n in (depth, size, size)]
    return torch.meshgrid(*axes, indexing="ij")


@pytest.mark.parametrize(
    "name,outer,inner",
    [
        ("cylinder", lambda z, y, x: y**2 + x**2 <= 8**2, lambda z, y, x: y**2 + x**2 <= 7**2),
        ("sphere", lambda z, y, x: z**2 + y**2 + x**2 <= 10**2, lambda z, y, x: z**2 + y**2 + x**2 <= 9**2),
        (
            "ellipsoid",
            lambda z, y, x: (z / 10) ** 2 + (y / 8) ** 2 + (x / 12) ** 2 <= 1,
            lambda z, y, x: (z / 9) ** 2 + (y / 7) ** 2 + (x / 11) ** 2 <= 1,
        ),
    ],
)
def test_filtered_backprojection_rebuilds_objects(name, outer, inner):
    z, y, x = _grid(24, 32)
    volume = outer(z, y, x).double()[None, None]
    mask = inner(z, y, x)
    angles = equal_angles(64, dtype=torch.float64)
    views = project(volume, angles)
    kernel = ramp_filter(views.shape[-1], dtype=torch.float64)
    rebuilt = backproject(filter_views(views, kernel), angles, (32, 32)) / 64
    error = (rebuilt[0, 0] - volume[0, 0])[mask].norm() / volume[0, 0][mask].norm()
    assert error <= 0.05, f"{name}: relative L2 error {error:.3f}"
    # Without the filter even the best constant scale is far off: the filter is doing the work.
    plain = backproject(views, angles, (32, 32))[0, 0][mask]
    scale = (plain * volume[0, 0][mask]).sum() / (plain**2).sum()
    assert (scale * plain - volume[0, 0][mask]).norm() / volume[0, 0][mask].norm() > 0.07
