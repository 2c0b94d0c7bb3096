"""Training-time augmentation of a batch ``(B, C, D, H, W)`` and its label ``(B, K, D, H, W)``, on any device.

Geometry comes from kornia's 3D augmentations (flips, and one random affine: rotation about ``D`` plus small
tilts, isotropic scaling) applied to image and label concatenated along the channel axis, so both move by the
very same transform; the label is interpolated linearly and thresholded at 0.5. Intensity changes (scale and
shift, gamma, Gaussian noise) touch the image only. Only path 1 augments: path 2 caches U's views per volume.

Example:
    >>> config = AugmentConfig()
    >>> image, label = torch.rand(2, 1, 16, 16, 16), (torch.rand(2, 1, 16, 16, 16) > 0.9).to(torch.uint8)
    >>> out_image, out_label = augment(image, label, config, generator=torch.Generator().manual_seed(0))
    >>> out_image.shape, out_label.dtype
    (torch.Size([2, 1, 16, 16, 16]), torch.uint8)
"""

from __future__ import annotations

import kornia.augmentation as K
import torch

from vol25d.errors import InputError
from vol25d.settings import AugmentConfig

__all__ = ["AugmentConfig", "augment"]



def _geometric(config: AugmentConfig) -> list[torch.nn.Module]:
    d, h, w = config.flip_prob_dhw
    modules = [K.RandomDepthicalFlip3D(p=d), K.RandomVerticalFlip3D(p=h), K.RandomHorizontalFlip3D(p=w)]
    if config.affine_prob > 0:
        tilt, roll = config.tilt_deg, config.rotate_d_deg
        # kornia's (yaw, pitch, roll) turn about x = W, y = H, z = D: roll is the rotation about D.
        modules.append(K.RandomAffine3D(degrees=((-tilt, tilt), (-tilt, tilt), (-roll, roll)),
                                        scale=config.scale_range, p=config.affine_prob))
    return [m for m in modules if m.p > 0]


def _uniform(low: float, high: float, batch: int, like: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 1, 1, 1)`` uniform draws from the (forked, seeded) CPU generator, moved to ``like``'s device."""
    return (low + (high - low) * torch.rand(batch, 1, 1, 1, 1)).to(like)


def _chosen(probability: float, batch: int, like: torch.Tensor) -> torch.Tensor:
    return (torch.rand(batch, 1, 1, 1, 1) < probability).to(like.device)


_BIAS_TERMS = [(i, j, k) for i in range(4) for j in range(4 - i) for k in range(4 - i - j) if i + j + k > 0]


def _bias(image: torch.Tensor, config: AugmentConfig) -> torch.Tensor:
    """The smooth multiplicative field of ``bias_prob`` (see :class:`AugmentConfig`), draws from the CPU generator."""
    batch, dims = image.shape[0], (2, 3, 4)
    axes = [torch.linspace(-1.0, 1.0, n, dtype=torch.float32, device=image.device) for n in image.shape[2:]]
    coefficients = torch.randn(batch, len(_BIAS_TERMS)).to(image.device)
    log_field = torch.zeros(batch, 1, *image.shape[2:], device=image.device)
    for t, (i, j, k) in enumerate(_BIAS_TERMS):
        term = axes[0].pow(i)[:, None, None] * axes[1].pow(j)[None, :, None] * axes[2].pow(k)[None, None, :]
        log_field += coefficients[:, t].view(batch, 1, 1, 1, 1) * term
    span = log_field.abs().amax(dim=dims, keepdim=True).clamp_min(1e-6)
    log_field *= _uniform(0.5, 1.0, batch, log_field) * config.bias_strength / span
    low = image.amin(dim=dims, keepdim=True)
    biased = low + (image - low) * log_field.exp().to(image.dtype)
    return torch.where(_chosen(config.bias_prob, batch, image), biased, image)


def _intensity(image: torch.Tensor, config: AugmentConfig, seed: int) -> torch.Tensor:
    batch = image.shape[0]
    dims = (2, 3, 4)
    if config.bias_prob > 0:
        image = _bias(image, config)
    std = image.std(dim=dims, keepdim=True).clamp_min(1e-6)
    if config.intensity_prob > 0:
        scale = _uniform(*config.intensity_scale, batch, image)
        shift = _uniform(-config.intensity_shift, config.intensity_shift, batch, image) * std
        image = torch.where(_chosen(config.intensity_prob, batch, image), image * scale + shift, image)
    if config.gamma_prob > 0:
        # Gamma needs [0, 1]; work on each sample's min–max range so z-scored images work too.
        low, high = image.amin(dim=dims, keepdim=True), image.amax(dim=dims, keepdim=True)
        span = (high - low).clamp_min(1e-6)
        gamma = _uniform(*config.gamma_range, batch, image)
        curved = low + span * ((image - low) / span).clamp(0, 1).pow(gamma)
        image = torch.where(_chosen(config.gamma_prob, batch, image), curved, image)
    if config.noise_prob > 0:
        sigma = _uniform(0.0, config.noise_std, batch, image) * std
        chosen = _chosen(config.noise_prob, batch, image)
        # Noise on the tensor's own device, from a generator seeded like the rest: reproducible on GPU too.
        device_generator = torch.Generator(device=image.device).manual_seed(seed)
        noise = torch.randn(image.shape, generator=device_generator, device=image.device, dtype=image.dtype)
        image = torch.where(chosen, image + sigma * noise, image)
    return image


def augment(image: torch.Tensor, label: torch.Tensor, config: AugmentConfig,
            generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Randomly augment a batch and its label with one shared geometric transform per sample.

    Args:
        image: float ``(B, C, D, H, W)``.
        label: ``(B, K, D, H, W)`` binary (any dtype, e.g. uint8 from ``preprocess_label``).
        config: the :class:`AugmentConfig`.
        generator: a CPU ``torch.Generator`` for reproducible draws; ``None`` uses (and advances) torch's
            global generator, so ``torch.manual_seed`` seeds it. The global RNG state is otherwise untouched.

    Returns:
        ``(image, label)`` with the input shapes, dtypes and device; the label is still 0/1. With
        ``config.enabled = False`` the inputs themselves.
    """
    if image.ndim != 5 or label.ndim != 5 or image.shape[0] != label.shape[0] or image.shape[2:] != label.shape[2:]:
        raise InputError(f"augment needs image (B, C, D, H, W) and label (B, K, D, H, W) of one batch and size; "
                         f"got {tuple(image.shape)} and {tuple(label.shape)}")
    if not image.is_floating_point():
        raise InputError(f"augment needs a floating-point image; got dtype {image.dtype}")
    if not config.enabled:
        return image, label
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    channels = image.shape[1]
    with torch.random.fork_rng(devices=[]):  # kornia draws from the global CPU generator: seed it, then restore
        torch.random.default_generator.manual_seed(seed)
        modules = _geometric(config)
        if modules:
            # Warps pad with zeros: shift the image so that zero is its minimum, i.e. padding looks like background.
            low = image.amin(dim=(2, 3, 4), keepdim=True)
            both = torch.cat([image - low, label.to(image.dtype)], dim=1)
            for module in modules:
                both = module(both)
            image = both[:, :channels] + low
            label = (both[:, channels:] >= 0.5).to(label.dtype)
        image = _intensity(image, config, seed)
    return image, label
