import math

import pytest
import torch

from vol25d.ops import filter_views, ramp_filter


def test_taps_are_the_scaled_ram_lak_kernel():
    kernel = ramp_filter(4, dtype=torch.float64)
    expected = torch.tensor([-1 / (9 * math.pi), 0, -1 / math.pi, math.pi / 4, -1 / math.pi, 0, -1 / (9 * math.pi)])
    torch.testing.assert_close(kernel, expected.double())


def test_response_to_a_constant_tends_to_zero():
    # The ramp has no DC response: the kernel's sum tends to 0 as it lengthens.
    assert abs(ramp_filter(2001, dtype=torch.float64).sum()) < 1e-3


def test_filter_views_is_a_convolution_along_the_detector():
    views = torch.zeros(1, 2, 1, 1, 9, dtype=torch.float64)
    views[..., 4] = 1.0
    kernel = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    out = filter_views(views, kernel)
    torch.testing.assert_close(out[0, 0, 0, 0, 3:6], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(out[0, 1], views[0, 1])


def test_bad_arguments():
    with pytest.raises(ValueError, match="detector size"):
        ramp_filter(0)
    with pytest.raises(ValueError, match="K odd"):
        filter_views(torch.rand(1, 1, 1, 1, 9), torch.rand(4))
