"""Checkpoints: a plain dict of tensors and JSON-able values, written atomically, loaded with
``torch.load(..., weights_only=True)`` so a model file from anyone cannot run code.

A checkpoint holds everything ``predict`` needs: the weights, the model settings, the preprocessing
settings (target spacing, voxel cap, intensity statistics), the class and channel names, and the vol25d
version. A ``pathN_last.pt`` also holds what ``--resume`` needs (optimiser, scheduler, epoch, RNG states).
"""

from __future__ import annotations

import os
import warnings
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


def _load_failure(error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words."""
    text = str(error)
    if "Weights only load failed" in text:
        # A pickle of arbitrary objects: the weights-only unpickler refuses it without running any of it.
        return "it is not made of tensors and plain values only; torch's weights-only loader refused it and ran nothing in it"
    if "zip archive" in text or "central directory" in text or isinstance(error, (EOFError, OSError)):
        return "the file is truncated or not a torch file"
    return f"torch could not read it: {type(error).__name__}"


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Read a vol25d checkpoint safely; raise :class:`InputError` naming the file if it is not one."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"checkpoint {path} is a folder; pass the file inside it, e.g. {path / 'path2.pt'}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist; pass a RUN/path1.pt or RUN/path2.pt written by `vol25d train`")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the refusal below says it all
            warnings.simplefilter("ignore")
            values = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 — weights_only runs no code; any failure means "not ours"
        raise InputError(f"{path} is not a vol25d checkpoint ({_load_failure(error)}); pass a RUN/path1.pt or "
                         "RUN/path2.pt written by `vol25d train`") from None
    if not isinstance(values, dict) or values.get("format") != FORMAT:
        raise InputError(f"{path} is not a vol25d checkpoint; pass a RUN/path1.pt or RUN/path2.pt written by `vol25d train`")
    missing = [key for key in _REQUIRED if key not in values]
    if missing:
        raise InputError(f"{path} is an incomplete vol25d checkpoint (missing {missing}); retrain or use another file")
    kinds = {"model_config": dict, "preprocess": dict, "state_dict": dict, "class_names": (list, tuple),
             "channel_names": (list, tuple)}
    wrong = [key for key, kind in kinds.items() if not isinstance(values[key], kind)]
    if wrong or not all(isinstance(v, torch.Tensor) for v in values["state_dict"].values()):
        raise InputError(f"{path} is a damaged vol25d checkpoint ({', '.join(wrong) or 'state_dict'} of the wrong "
                         "type); retrain or use another file")
    return values


def describe_checkpoint(values: dict, path: str | os.PathLike | None = None) -> dict:
    """What a loaded checkpoint is, as plain JSON-able values (``vol25d info``).

    Returns:
        A dict with ``file``, ``vol25d_version``, ``path`` (1 or 2), ``classes``, ``channels``,
        ``multi_label``, ``model`` (``m``, ``p``, projection, the reconstruction F and head T, U's size,
        parameter count), ``preprocess`` (target spacing, voxel cap, normalisation, …), ``training`` (epochs,
        best validation Dice and epoch, lr, steps per case; cases trained on, where recorded) and
        ``resumable`` (whether it holds optimiser state, as ``pathN_last.pt`` does).
    """
    model = {**_BEFORE_FILTER_SETTINGS, **values["model_config"]}
    config = values.get("train_config") or {}
    data = values.get("data") or {}
    parameters = sum(int(t.numel()) for t in values["state_dict"].values())
    preprocess = dict(values["preprocess"])
    return {
        "file": str(path) if path is not None else None,
        "vol25d_version": values.get("version"),
        "path": values.get("path"),
        "classes": list(values["class_names"]),
        "channels": list(values["channel_names"]),
        "multi_label": bool(values.get("multi_label", False)),
        "model": {
            "directions_m": model.get("directions"),
            "views_p": model.get("views"),
            "projection": model.get("projection"),
            "reconstruction": {"kind": model.get("reconstruction"), "filter_init": model.get("filter_init"), "filter_taps": 2 * int(model.get("filter_radius") or 0) + 1
                               if model.get("filter_radius") else None, "filter_fixed_dc": model.get("filter_fixed_dc")},
            "head": {"norm": model.get("head_norm"), "pool": model.get("head_pool"), "activation": model.get("activation")},
            "unet": {"channels": list(model.get("channels") or ()), "strides": list(model.get("strides") or ()),
                     "num_res_units": model.get("num_res_units")},
            "unet_frozen": bool(values.get("unet_frozen", False)),
            "parameters": parameters,
        },
        "preprocess": {key: preprocess.get(key) for key in
                       ("target_spacing_mm", "max_voxels", "spacing_tolerance", "normalization", "percentiles",
                        "crop_foreground", "n4", "rotation_axis", "intensity_stats", "planned_shape")
                       if key in preprocess},
        "training": {
            "epochs": values.get("epoch"),
            "best_validation_dice": values.get("best_dice"),
            "best_epoch": values.get("best_epoch"),
            "lr": config.get("lr"),
            "steps_per_case": config.get("steps_per_case"),
            "loss": config.get("loss"),
            "dataset": data.get("dataset"),
            "train_cases": len(data["train_cases"]) if "train_cases" in data else None,
            "val_cases": len(data["val_cases"]) if "val_cases" in data else None,
        },
        "resumable": "optimizer" in values,
    }


def _cell(value) -> str:
    if value is None:
        return "not recorded"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "×".join(_cell(v) for v in value) if value and all(isinstance(v, (int, float)) for v in value) \
            else ", ".join(map(str, value)) or "none"
    return str(value)


def format_description(description: dict) -> str:
    """:func:`describe_checkpoint`'s dict as a two-column table."""
    model, preprocess, training = description["model"], description["preprocess"], description["training"]
    rows = [
        ("file", description["file"]),
        ("written by", f"vol25d {description['vol25d_version']}"),
        ("trained in", None if description["path"] is None else
         f"path {description['path']}" + (" (U frozen)" if model["unet_frozen"] else "")),
        ("classes", description["classes"]),
        ("multi-label", "yes (classes may overlap)" if description["multi_label"] else "no"),
        ("channels", description["channels"]),
        ("directions m", model["directions_m"]),
        ("views per step p", model["views_p"]),
        ("projection", model["projection"]),
        ("reconstruction R", model["reconstruction"]["kind"]),
        ("filtration F", f"{model['reconstruction']['filter_init']} start, {model['reconstruction']['filter_taps']} "
                         f"taps, DC gain {'held' if model['reconstruction']['filter_fixed_dc'] else 'free'}"),
        ("head T", f"{model['head']['norm']} norm, pool {model['head']['pool']}, {model['head']['activation']}"),
        ("U", f"channels {_cell(model['unet']['channels'])}, strides {_cell(model['unet']['strides'])}, "
              f"{model['unet']['num_res_units']} residual unit(s) per level"),
        ("parameters", f"{model['parameters']:,}"),
        ("target spacing (D, H, W) mm", preprocess.get("target_spacing_mm") or "native"),
        ("planned grid (D, H, W)", preprocess.get("planned_shape")),
        ("voxel cap", f"{preprocess['max_voxels']:,}" if preprocess.get("max_voxels") else
                      "none" if preprocess.get("max_voxels") == 0 else None),
        ("normalisation", preprocess.get("normalization")),
        ("rotation axis", preprocess.get("rotation_axis")),
        ("epochs trained", training["epochs"]),
        ("best validation Dice", f"{training['best_validation_dice']:.4f} at epoch {training['best_epoch']}"
                                 if isinstance(training["best_validation_dice"], float) else None),
        ("learning rate", training["lr"]),
        ("training data", f"{training['dataset']}: {training['train_cases']} training / {training['val_cases']} "
                          "validation cases" if training["dataset"] else None),
        ("resumable", "yes (optimiser state inside)" if description["resumable"] else "no"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {_cell(value)}" for name, value in rows)


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
