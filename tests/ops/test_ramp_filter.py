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


@pytest.mark.parametrize("taps,detector", [(1, 7), (5, 9), (17, 12), (33, 20)])
def test_shifted_sum_and_conv1d_agree_values_and_gradients(taps, detector):
    from vol25d.ops.ramp_filter import _filter_by_conv, _filter_by_shifts

    generator = torch.Generator().manual_seed(taps)
    views = torch.randn(2, 2, 3, 4, detector, generator=generator, dtype=torch.float64, requires_grad=True)
    kernel = torch.randn(2, taps, generator=generator, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, 2, 3, 4, detector, generator=generator, dtype=torch.float64)
    results = []
    for function in (_filter_by_conv, _filter_by_shifts):
        out = function(views, kernel)
        results.append((out, *torch.autograd.grad((out * weights).sum(), (views, kernel))))
    for shifted, conv in zip(results[1], results[0]):
        torch.testing.assert_close(shifted, conv)
