"""Tests for vol25d.data.augment: shapes and dtypes kept, binary labels, identity when off, image and label together."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vol25d.data.augment import AugmentConfig, augment
from vol25d.errors import InputError


def cube_batch(batch=2, size=16):
    image = torch.full((batch, 1, size, size, size), 0.1)
    label = torch.zeros(batch, 2, size, size, size, dtype=torch.uint8)
    image[:, :, 4:9, 3:8, 9:14] = 1.0  # an off-centre bright box, so rotations and flips move it
    label[:, 0, 4:9, 3:8, 9:14] = 1
    label[:, 1, 10:14, 10:14, 2:6] = 1
    return image, label


def overlap(image, label):
    """Dice of the bright voxels with label channel 0, per sample."""
    bright = image[:, 0] > 0.55
    mask = label[:, 0].bool()
    return 2 * (bright & mask).sum((1, 2, 3)) / (bright.sum((1, 2, 3)) + mask.sum((1, 2, 3)))


def test_shapes_dtypes_and_binary_label():
    image, label = cube_batch()
    out_image, out_label = augment(image, label, AugmentConfig(), generator=torch.Generator().manual_seed(1))
    assert out_image.shape == image.shape and out_image.dtype == torch.float32
    assert out_label.shape == label.shape and out_label.dtype == torch.uint8
    assert set(out_label.unique().tolist()) <= {0, 1}


def test_identity_when_disabled():
    image, label = cube_batch()
    out_image, out_label = augment(image, label, AugmentConfig(enabled=False))
    assert torch.equal(out_image, image) and torch.equal(out_label, label)


def test_seeded_generator_reproduces_and_leaves_global_rng_alone():
    image, label = cube_batch()
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = augment(image, label, AugmentConfig(), generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.rand(3), expected_next)
    second = augment(image, label, AugmentConfig(), generator=torch.Generator().manual_seed(7))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_image_and_label_rotate_together():
    image, label = cube_batch()
    config = AugmentConfig(flip_prob_dhw=(0.0, 0.0, 0.0), affine_prob=1.0, rotate_d_deg=40.0, tilt_deg=8.0,
                           intensity_prob=0.0, gamma_prob=0.0, noise_prob=0.0)
    out_image, out_label = augment(image, label, config, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(out_label, label)  # it did move
    assert (overlap(out_image, out_label) > 0.8).all()
    assert (out_label[:, 0].sum((1, 2, 3)) > 0.6 * label[:, 0].sum((1, 2, 3))).all()
    # The padding the rotation brings in is background (the image minimum), not zero.
    assert out_image.min() >= 0.1 - 1e-5


def test_rotation_is_about_d():
    """A bar along D stays a bar along D: every D slice of the result is identical."""
    image = torch.zeros(1, 1, 8, 16, 16)
    image[..., 8, 12] = 1.0
    label = (image > 0.5).to(torch.uint8)
    config = AugmentConfig(flip_prob_dhw=(0.0, 0.0, 0.0), affine_prob=1.0, rotate_d_deg=30.0, tilt_deg=0.0,
                           scale_range=(1.0, 1.0), intensity_prob=0.0, gamma_prob=0.0, noise_prob=0.0)
    out_image, out_label = augment(image, label, config, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out_image, out_image[:, :, :1].expand_as(out_image), atol=1e-6)
    assert not torch.allclose(out_image, image)


def test_flips_move_image_and_label_together():
    image, label = cube_batch()
    config = AugmentConfig(flip_prob_dhw=(1.0, 1.0, 1.0), affine_prob=0.0, intensity_prob=0.0, gamma_prob=0.0,
                           noise_prob=0.0)
    out_image, out_label = augment(image, label, config)
    assert torch.equal(out_image, image.flip(2, 3, 4)) and torch.equal(out_label, label.flip(2, 3, 4))


def test_intensity_changes_leave_label_and_shape():
    image, label = cube_batch()
    config = AugmentConfig(flip_prob_dhw=(0.0, 0.0, 0.0), affine_prob=0.0, intensity_prob=1.0, gamma_prob=1.0,
                           noise_prob=1.0)
    out_image, out_label = augment(image, label, config, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out_label, label) and not torch.allclose(out_image, image)
    assert torch.isfinite(out_image).all()


def test_bad_arguments_are_named():
    image, label = cube_batch()
    with pytest.raises(InputError, match=r"\(2, 2, 16, 16\)"):
        augment(image, label[:, :, 0], AugmentConfig())
    with pytest.raises(InputError, match="gamma_prob.*1.5"):
        AugmentConfig(gamma_prob=1.5)
    config = AugmentConfig()
    assert AugmentConfig.from_dict(config.to_dict()) == config
    assert dataclasses.replace(config, enabled=False).enabled is False


def _bias_only(**settings) -> AugmentConfig:
    return AugmentConfig(flip_prob_dhw=(0.0, 0.0, 0.0), affine_prob=0.0, intensity_prob=0.0, gamma_prob=0.0,
                         noise_prob=0.0, **settings)


def test_the_bias_field_is_smooth_multiplicative_above_the_minimum_and_within_its_strength():
    torch.manual_seed(0)
    image = 0.2 + torch.rand(3, 1, 12, 16, 20)
    label = torch.zeros(3, 1, 12, 16, 20, dtype=torch.uint8)
    out, out_label = augment(image, label, _bias_only(bias_prob=1.0, bias_strength=0.5),
                             generator=torch.Generator().manual_seed(4))
    low = image.amin(dim=(2, 3, 4), keepdim=True)
    log_field = ((out - low) / (image - low).clamp_min(1e-6)).log()
    inside = (image - low) > 1e-3
    assert torch.equal(out_label, label)
    assert log_field[inside].abs().max() <= 0.5 + 1e-4
    per_sample = [log_field[b][inside[b]].abs().max() for b in range(3)]
    assert min(per_sample) >= 0.25 - 1e-4  # the span drawn from [0.5, 1] × strength
    # Smooth: neighbouring voxels' log differs far less than the field's span.
    step = (log_field[:, :, :, :, 1:] - log_field[:, :, :, :, :-1])[inside[..., 1:] & inside[..., :-1]].abs()
    assert step.max() < 0.25
    assert not torch.allclose(log_field[0][inside[0]], log_field[1][inside[1]])  # one field per sample


def test_the_bias_field_is_off_by_default_and_its_draws_leave_the_other_augmentations_alone():
    image, label = cube_batch()
    assert AugmentConfig().bias_prob == 0.0
    plain = augment(image, label, AugmentConfig(), generator=torch.Generator().manual_seed(5))
    never = augment(image, label, AugmentConfig(bias_strength=0.9), generator=torch.Generator().manual_seed(5))
    assert torch.equal(plain[0], never[0]) and torch.equal(plain[1], never[1])
    with pytest.raises(InputError, match="bias_strength"):
        AugmentConfig(bias_strength=-0.1)
    with pytest.raises(InputError, match="bias_prob"):
        AugmentConfig(bias_prob=1.5)
