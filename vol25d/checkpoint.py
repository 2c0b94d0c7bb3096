"""Checkpoints: a plain dict of tensors and JSON-able values, written atomically, loaded with
``torch.load(..., weights_only=True)`` so a model file from anyone cannot run code.

A checkpoint holds everything ``predict`` needs: the weights, the model settings, the preprocessing
settings (target spacing, voxel cap, intensity statistics), the class and channel names, and the vol25d
version. A ``pathN_last.pt`` also holds what ``--resume`` needs (optimiser, scheduler, epoch, RNG states).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from vol25d import __version__
from vol25d.errors import InputError
from vol25d.files import atomic_path
from vol25d.model import ModelConfig, Random25DUNet

FORMAT = "vol25d-checkpoint"
_REQUIRED = ("format", "version", "model_config", "preprocess", "class_names", "channel_names", "state_dict")


def save_checkpoint(values: dict, path: str | os.PathLike) -> Path:
    """Write ``values`` (plus the format tag and version) to ``path`` atomically: temp file, then rename."""
    path = Path(path)
    with atomic_path(path) as temporary:
        torch.save({"format": FORMAT, "version": __version__, **values}, temporary)
    return path


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a vol25d checkpoint safely; raise :class:`InputError` naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass a RUN/path1.pt or RUN/path2.pt written by `vol25d train`")
    try:
        values = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, zipfile.BadZipFile, EOFError, ValueError) as error:
        raise InputError(
            f"{path} is not a vol25d checkpoint (torch could not load it safely: {str(error).splitlines()[0][:120]}); "
            "pass a RUN/path1.pt or RUN/path2.pt written by `vol25d train`"
        ) from None
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        raise InputError(f"{path} is not a vol25d checkpoint; pass a RUN/path1.pt or RUN/path2.pt written by `vol25d train`")
    missing = [key for key in _REQUIRED if key not in values]
    if missing:
        raise InputError(f"{path} is an incomplete vol25d checkpoint (missing {missing}); retrain or use another file")
    return values


# Checkpoints written before ModelConfig had these fields started F as Ram–Lak and left its DC gain free,
# and back-projected along whole rays (the seed reconstruction), whatever the defaults are now.
_BEFORE_FILTER_SETTINGS = {"filter_init": "ramlak", "filter_fixed_dc": False, "reconstruction": "seed"}


def model_from_checkpoint(values: dict, path: str | os.PathLike = "checkpoint") -> Random25DUNet:
    """Build the model a checkpoint describes and load its weights."""
    try:
        model = Random25DUNet.from_config(ModelConfig.from_dict({**_BEFORE_FILTER_SETTINGS, **values["model_config"]}))
    except (ValueError, TypeError) as error:
        raise InputError(f"{path} has model settings this vol25d does not know ({error}); use vol25d {values['version']} or retrain") from None
    expected, found = set(model.state_dict()), set(values["state_dict"])
    if expected != found:
        raise InputError(
            f"{path} does not fit its own model settings (missing {sorted(expected - found)[:3]}, unexpected "
            f"{sorted(found - expected)[:3]}); it was written by vol25d {values['version']}: use that version or retrain"
        )
    try:
        model.load_state_dict(values["state_dict"])
    except RuntimeError as error:
        detail = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error)[:160])
        raise InputError(f"{path} holds weights of the wrong shape for its model settings ({detail[:200]})") from None
    if values.get("unet_frozen"):
        model.freeze_unet()
    return model
