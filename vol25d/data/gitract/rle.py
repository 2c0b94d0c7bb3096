"""Run-length encoding of the competition's masks: 1-indexed ``start length`` pairs over the row-major
(C-order) flattened ``H×W`` slice; an empty string is an empty mask."""

from __future__ import annotations

import numpy as np

from vol25d.errors import InputError


def _is_count(token: str) -> bool:
    return token.isascii() and token.isdigit()  # str.isdigit alone accepts '²' and other Unicode digits


def rle_decode(rle: str, shape: tuple[int, int], *, name: str = "RLE") -> np.ndarray:
    """Decode a competition RLE string into one slice mask.

    Args:
        rle: ``"start length start length …"``, starts 1-indexed into the C-order flattened slice; ``""``
            (or only whitespace) is an empty mask.
        shape: ``(H, W)`` of the slice (PNG rows, columns).
        name: what the string is, for error messages (e.g. ``"train.csv id case1_day0_slice_0001 stomach"``).

    Returns:
        ``(H, W)`` uint8 mask of 0 and 1.

    Raises:
        InputError: odd number of values, a value that is not a positive integer, a run past the end of
            the slice, or runs that are unsorted or overlap.
    """
    height, width = (int(n) for n in shape)
    size = height * width
    flat = np.zeros(size, np.uint8)
    tokens = rle.split() if isinstance(rle, str) else None
    if tokens is None:
        raise InputError(f"{name}: RLE must be a string; got {type(rle).__name__} — use '' for an empty mask")
    if not tokens:
        return flat.reshape(height, width)
    if len(tokens) % 2:
        raise InputError(
            f"{name}: RLE has an odd number of values ({len(tokens)}); it must be 'start length' pairs — fix or "
            "blank that entry"
        )
    if not all(_is_count(token) for token in tokens):
        bad = next(token for token in tokens if not _is_count(token))
        raise InputError(f"{name}: RLE value {bad!r} is not a positive integer; fix or blank that entry")
    values = [int(token) for token in tokens]  # Python ints first: a 30-digit value must not overflow int64
    starts, lengths = np.asarray(values[0::2], dtype=object), np.asarray(values[1::2], dtype=object)
    ends = starts + lengths - 1  # inclusive, 1-indexed
    if min(values) < 1:
        raise InputError(f"{name}: RLE starts and lengths must be ≥ 1 (pixels are 1-indexed); fix that entry")
    if max(ends) > size:
        raise InputError(
            f"{name}: RLE run ends at pixel {max(ends)}, past the {height}×{width} = {size} pixels of the "
            "slice; check the slice size or the mask"
        )
    starts, ends = starts.astype(np.int64), ends.astype(np.int64)
    if np.any(starts[1:] <= ends[:-1]):
        raise InputError(f"{name}: RLE runs are unsorted or overlap; runs must be in increasing, disjoint order")
    for start, end in zip(starts, ends):
        flat[start - 1 : end] = 1
    return flat.reshape(height, width)


def rle_encode(mask: np.ndarray) -> str:
    """Encode one slice mask as the competition's RLE (the inverse of :func:`rle_decode`).

    Args:
        mask: ``(H, W)``, non-zero = foreground.

    Returns:
        ``"start length …"`` over the C-order flattened slice, 1-indexed, maximal runs; ``""`` if empty.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"rle_encode needs a 2-D (H, W) slice mask; got shape {mask.shape}")
    padded = np.concatenate([[0], mask.reshape(-1) != 0, [0]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded)) + 1  # 1-indexed run starts and one-past-ends, alternating
    starts, stops = edges[0::2], edges[1::2]
    return " ".join(f"{start} {stop - start}" for start, stop in zip(starts, stops))
