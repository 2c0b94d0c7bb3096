"""The run folder and its checkpoints: one module owns every file name of a run and every key of a checkpoint.

A checkpoint (:class:`Checkpoint`) is a plain dict of tensors and JSON-able values on disk, written atomically
and loaded with ``torch.load(..., weights_only=True)``, so that a model file from anyone cannot run code. It
holds everything ``predict`` needs: the weights, the model settings, the preprocessing settings (target
spacing, voxel cap, intensity statistics), the class and channel names, and the vol25d version. A
``pathN_last.pt`` also holds what ``--resume`` needs (:class:`Resume`: optimiser, scheduler, RNG states).

A run folder (:class:`RunFolder`) holds, per training path N, ``pathN.pt`` (the best validation epoch),
``pathN_last.pt``, ``pathN_metrics.csv`` and TensorBoard events under ``tb/pathN``, one ``config.yaml``
with a record per path, which ``vol25d train --config RUN/config.yaml`` reads back to re-run the run, and
``progress.png``, the curves of the paths' metrics.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from vol25d import __version__
from vol25d.errors import InputError
from vol25d.files import atomic_path
from vol25d.model import RUNTIME_SETTINGS, ModelConfig, Random25DUNet

__all__ = ["Checkpoint", "Resume", "RunFolder", "MetricsLog", "describe_checkpoint", "format_description", "FORMAT"]

FORMAT = "vol25d-checkpoint"
_REQUIRED = ("format", "version", "model_config", "preprocess", "class_names", "channel_names", "state_dict")
_KINDS = {"model_config": dict, "preprocess": dict, "state_dict": dict, "class_names": (list, tuple),
          "channel_names": (list, tuple)}
_RESUME_KEYS = ("optimizer", "scheduler", "rng")
# Checkpoints written before ModelConfig had these fields started F as Ram–Lak and left its DC gain free,
# back-projected along whole rays (the seed reconstruction) and had a T that did not read the image, whatever
# the defaults are now.
_SETTINGS_BEFORE_THEIR_FIELDS = {"filter_init": "ramlak", "filter_fixed_dc": False, "reconstruction": "seed",
                                 "head_image": False}
_PASS = "pass a RUN/path1.pt or RUN/path2.pt written by `vol25d train`"


@dataclass(frozen=True)
class Resume:
    """What ``--resume`` continues from: the optimiser's and scheduler's state dicts, the trainer's RNG
    states (opaque here) and the number of processes that wrote them."""

    optimizer: dict
    scheduler: dict
    rng: dict
    world_size: int = 1


@dataclass(frozen=True)
class Checkpoint:
    """A trained model and what it needs to run: the one place a checkpoint's keys are spelled.

    Attributes:
        model_config: :class:`~vol25d.model.ModelConfig` as a dict (see :attr:`model_settings`).
        preprocess: :class:`~vol25d.data.preprocess.PreprocessConfig` as a dict, planned and measured.
        class_names, channel_names: of the training data, in ``dataset.json``'s order.
        state_dict: the weights (CPU tensors).
        multi_label: whether classes may overlap.
        path: the training path that wrote it (1 or 2; ``None`` if not recorded).
        unet_frozen: U was frozen (path 2).
        train_config: :class:`~vol25d.train.TrainConfig` as a dict.
        dataset, train_cases, val_cases: the data it was trained and validated on, where recorded.
        epoch, best_dice, best_epoch: the epoch it was saved at and the best validation Dice so far.
        version: the vol25d version that wrote it.
        ops_backend: the projection kernels that trained it (:func:`vol25d.ops.backend.describe`: ``triton``,
            ``reference``, ``reference (fallback: …)``); ``None`` where not recorded (older checkpoints).
        resume: the training state (in ``pathN_last.pt`` only).
    """

    model_config: dict
    preprocess: dict
    class_names: list[str]
    channel_names: list[str]
    state_dict: dict[str, torch.Tensor]
    multi_label: bool = False
    path: int | None = None
    unet_frozen: bool = False
    train_config: dict = field(default_factory=dict)
    dataset: str | None = None
    train_cases: list[str] | None = None
    val_cases: list[str] | None = None
    epoch: int | None = None
    best_dice: float | None = None
    best_epoch: int | None = None
    version: str = __version__
    ops_backend: str | None = None
    resume: Resume | None = None

    @classmethod
    def of_model(cls, model: Random25DUNet, **values) -> "Checkpoint":
        """A checkpoint of ``model``'s settings and weights (copied to the CPU); ``values``: the other fields."""
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return cls(model_config=model.config.to_dict(), state_dict=state, unet_frozen=model.unet_frozen, **values)

    def to_dict(self) -> dict:
        """The file's dict."""
        values = {"format": FORMAT, "version": self.version, "path": self.path, "model_config": self.model_config,
                  "preprocess": self.preprocess, "class_names": list(self.class_names),
                  "channel_names": list(self.channel_names), "multi_label": bool(self.multi_label),
                  "train_config": self.train_config, "unet_frozen": bool(self.unet_frozen),
                  "state_dict": self.state_dict, "epoch": self.epoch, "best_dice": self.best_dice,
                  "best_epoch": self.best_epoch, "ops_backend": self.ops_backend}
        if self.dataset is not None:
            values["data"] = {"dataset": self.dataset, "train_cases": list(self.train_cases or ()),
                              "val_cases": list(self.val_cases or ())}
        if self.resume is not None:
            values.update(dataclasses.asdict(self.resume))
        return values

    def save(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint to ``path`` atomically (a temporary file, then a rename)."""
        path = Path(path)
        with atomic_path(path) as temporary:
            torch.save(self.to_dict(), temporary)
        return path

    @classmethod
    def from_dict(cls, values: dict, source: str | os.PathLike = "checkpoint") -> "Checkpoint":
        """Validate a loaded dict and read it; :class:`InputError` naming ``source`` if it is not ours."""
        if not isinstance(values, dict) or values.get("format") != FORMAT:
            raise InputError(f"{source} is not a vol25d checkpoint; {_PASS}")
        missing = [key for key in _REQUIRED if key not in values]
        if missing:
            raise InputError(f"{source} is an incomplete vol25d checkpoint (missing {missing}); retrain or use another file")
        wrong = [key for key, kind in _KINDS.items() if not isinstance(values[key], kind)]
        if wrong or not all(isinstance(v, torch.Tensor) for v in values["state_dict"].values()):
            raise InputError(f"{source} is a damaged vol25d checkpoint ({', '.join(wrong) or 'state_dict'} of the wrong "
                             "type); retrain or use another file")
        data = values.get("data") or {}
        resume = None
        if all(key in values for key in _RESUME_KEYS):
            resume = Resume(values["optimizer"], values["scheduler"], values["rng"], int(values.get("world_size", 1)))
        return cls(
            model_config=dict(values["model_config"]), preprocess=dict(values["preprocess"]),
            class_names=list(values["class_names"]), channel_names=list(values["channel_names"]),
            state_dict=values["state_dict"], multi_label=bool(values.get("multi_label", False)),
            path=values.get("path"), unet_frozen=bool(values.get("unet_frozen", False)),
            train_config=dict(values.get("train_config") or {}), dataset=data.get("dataset"),
            train_cases=data.get("train_cases"), val_cases=data.get("val_cases"), epoch=values.get("epoch"),
            best_dice=values.get("best_dice"), best_epoch=values.get("best_epoch"), version=str(values["version"]),
            ops_backend=values.get("ops_backend") if isinstance(values.get("ops_backend"), str) else None,
            resume=resume,
        )

    @classmethod
    def load(cls, path: str | os.PathLike, map_location="cpu") -> "Checkpoint":
        """Read a vol25d checkpoint safely; :class:`InputError` naming the file if it is not one."""
        path = Path(path)
        if path.is_dir():
            raise InputError(f"checkpoint {path} is a folder; pass the file inside it, e.g. {RunFolder(path).best(2)}")
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist; {_PASS}")
        try:
            with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the refusal below says it all
                warnings.simplefilter("ignore")
                values = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as error:  # noqa: BLE001 — weights_only runs no code; any failure means "not ours"
            raise InputError(f"{path} is not a vol25d checkpoint ({_load_failure(error)}); {_PASS}") from None
        return cls.from_dict(values, path)

    @property
    def model_settings(self) -> dict:
        """The model settings as this vol25d reads them: those of older versions completed as they were
        trained (:data:`_SETTINGS_BEFORE_THEIR_FIELDS`), the memory controls they saved dropped."""
        settings = {**_SETTINGS_BEFORE_THEIR_FIELDS, **self.model_config}
        return {k: v for k, v in settings.items() if k not in RUNTIME_SETTINGS}

    def model(self, source: str | os.PathLike = "checkpoint", **memory) -> Random25DUNet:
        """Build the model the checkpoint describes and load its weights (U frozen if it was).

        ``memory``: the runtime controls of :class:`~vol25d.model.Random25DUNet` (``view_chunk``,
        ``checkpoint_views``).
        """
        try:
            model = Random25DUNet.from_config(ModelConfig.from_dict(self.model_settings), **memory)
        except (ValueError, TypeError) as error:
            raise InputError(f"{source} has model settings this vol25d does not know ({error}); use vol25d "
                             f"{self.version} or retrain") from None
        expected, found = set(model.state_dict()), set(self.state_dict)
        if expected != found:
            raise InputError(
                f"{source} does not fit its own model settings (missing {sorted(expected - found)[:3]}, unexpected "
                f"{sorted(found - expected)[:3]}); it was written by vol25d {self.version}: use that version or retrain"
            )
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as error:
            detail = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error)[:160])
            raise InputError(f"{source} holds weights of the wrong shape for its model settings ({detail[:200]})") from None
        if self.unet_frozen:
            model.freeze_unet()
        return model

    def check_fits(self, channel_names: list[str], class_names: list[str], data: str | os.PathLike,
                   source: str | os.PathLike) -> None:
        """A checkpoint to start from (``--init``) must take the data's channels and segment its classes, in the
        same order; :class:`InputError` naming both otherwise."""
        if len(self.channel_names) != len(channel_names):
            raise InputError(
                f"{source} was trained on {len(self.channel_names)} image channel(s) {list(self.channel_names)} "
                f"but {data} has {len(channel_names)} {list(channel_names)}; --init needs a model trained on the "
                "same channels"
            )
        if list(self.class_names) != list(class_names):
            raise InputError(f"{source} segments {list(self.class_names)} but {data} labels {list(class_names)}; "
                             "--init needs a model of the same classes in the same order (dataset.json's labels)")


def _load_failure(error: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words."""
    text = str(error)
    if "Weights only load failed" in text:
        # A pickle of arbitrary objects: the weights-only unpickler refuses it without running any of it.
        return "it is not made of tensors and plain values only; torch's weights-only loader refused it and ran nothing in it"
    if "zip archive" in text or "central directory" in text or isinstance(error, (EOFError, OSError)):
        return "the file is truncated or not a torch file"
    return f"torch could not read it: {type(error).__name__}"


class RunFolder:
    """The files of a run folder; every name is built here.

    Per training path ``N``: :meth:`best` ``pathN.pt``, :meth:`last` ``pathN_last.pt``, :meth:`metrics`
    ``pathN_metrics.csv``, :meth:`tensorboard` ``tb/pathN``; for the run: :attr:`config` ``config.yaml``,
    one record per path (:meth:`record`, read back by :meth:`settings`), and :attr:`progress_plot`
    ``progress.png`` (:mod:`vol25d.train.curves`).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.config = self.root / "config.yaml"
        self.progress_plot = self.root / "progress.png"

    def best(self, path: int) -> Path:
        """The checkpoint of the best validation epoch."""
        return self.root / f"path{path}.pt"

    def last(self, path: int) -> Path:
        """The checkpoint of the last epoch, with what ``--resume`` needs."""
        return self.root / f"path{path}_last.pt"

    def metrics(self, path: int) -> Path:
        return self.root / f"path{path}_metrics.csv"

    def tensorboard(self, path: int) -> Path:
        return self.root / "tb" / f"path{path}"

    def record(self, path: int, *, data, init, train: dict, model: dict, preprocess: dict, classes, channels,
               split: tuple[list[str], list[str]], device: str, processes: int, ops_backend: str | None = None) -> None:
        """Write path ``path``'s record into ``config.yaml`` (the other path's record is kept); ``ops_backend``:
        the projection kernels it runs (:func:`vol25d.ops.backend.describe`)."""
        current = (yaml.safe_load(self.config.read_text()) if self.config.exists() else None) or {}
        current[f"path{path}"] = {
            "data": str(data), "init": str(init) if init else None, "train": train, "model": model,
            "preprocess": preprocess, "classes": list(classes), "channels": list(channels),
            "split": {"train": list(split[0]), "val": list(split[1])}, "device": device, "processes": processes,
            "volumes_per_step": processes, "ops_backend": ops_backend,
        }
        with atomic_path(self.config) as temporary:
            temporary.write_text(yaml.safe_dump(current, sort_keys=False))

    @staticmethod
    def is_record(values: dict) -> bool:
        """Whether a YAML mapping is a run folder's ``config.yaml`` rather than a ``--config`` file."""
        return bool(values) and set(values) <= {"path1", "path2"}

    @staticmethod
    def settings(values: dict, path: int, file: str | os.PathLike) -> dict:
        """A ``config.yaml``'s record of path ``path`` → the sections ``--config`` reads (``train``,
        ``augment``, ``model``, ``preprocess``; not yet filtered): its train settings and augmentation, and for
        a path 1 that did not start from ``--init`` its model and its planned preprocessing, so that the same
        command re-runs the run."""
        run = values.get(f"path{path}")
        if not isinstance(run, dict) or not isinstance(run.get("train"), dict):
            raise InputError(f"{file} is a run folder's record without a path {path} run; pass the config.yaml of a "
                             f"run that trained path {path}, or a file with train/model/preprocess sections")
        train = dict(run["train"])
        sections = {"train": train, "augment": dict(train.get("augment") or {}), "model": {}, "preprocess": {}}
        if path == 1 and not run.get("init"):  # a fine-tuned run takes its model from --init again
            sections["model"] = dict(run.get("model") or {})
            sections["preprocess"] = dict(run.get("preprocess") or {})
        return sections


class MetricsLog:
    """``pathN_metrics.csv``: one row per epoch; a resumed run drops the rows after the epoch it resumes."""

    COLUMNS = ("epoch", "train_loss", "val_dice", "lr", "seconds")

    def __init__(self, path: Path, keep_epochs: int):
        self.path = path
        rows = []
        if keep_epochs and path.exists():
            with path.open() as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["epoch"]) <= keep_epochs]
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, self.COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, epoch: int, train_loss: float, val_dice: float, lr: float, seconds: float) -> None:
        row = {"epoch": epoch, "train_loss": f"{train_loss:.6f}", "val_dice": f"{val_dice:.6f}", "lr": f"{lr:.6g}",
               "seconds": f"{seconds:.2f}"}
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, self.COLUMNS).writerow(row)


def describe_checkpoint(checkpoint: Checkpoint, path: str | os.PathLike | None = None) -> dict:
    """What a loaded checkpoint is, as plain JSON-able values (``vol25d info``).

    Returns:
        A dict with ``file``, ``vol25d_version``, ``path`` (1 or 2), ``classes``, ``channels``,
        ``multi_label``, ``model`` (``m``, ``p``, projection, the reconstruction F and head T, U's size,
        parameter count), ``preprocess`` (target spacing, voxel cap, normalisation, …), ``training`` (epochs,
        best validation Dice and epoch, lr, steps per case; cases trained on and the projection kernels, where
        recorded) and ``resumable`` (whether it holds optimiser state, as ``pathN_last.pt`` does).
    """
    model = checkpoint.model_settings
    config = checkpoint.train_config
    radius = model.get("filter_radius")
    preprocess = checkpoint.preprocess
    return {
        "file": str(path) if path is not None else None,
        "vol25d_version": checkpoint.version,
        "path": checkpoint.path,
        "classes": list(checkpoint.class_names),
        "channels": list(checkpoint.channel_names),
        "multi_label": checkpoint.multi_label,
        "model": {
            "directions_m": model.get("directions"),
            "views_p": model.get("views"),
            "projection": model.get("projection"),
            "reconstruction": {"kind": model.get("reconstruction"), "filter_init": model.get("filter_init"),
                               "filter_taps": 2 * int(radius) + 1 if radius else None,
                               "filter_fixed_dc": model.get("filter_fixed_dc")},
            "head": {"norm": model.get("head_norm"), "pool": model.get("head_pool"), "activation": model.get("activation"),
                     "image": model.get("head_image")},
            "unet": {"channels": list(model.get("channels") or ()), "strides": list(model.get("strides") or ()),
                     "num_res_units": model.get("num_res_units")},
            "unet_frozen": checkpoint.unet_frozen,
            "parameters": sum(int(t.numel()) for t in checkpoint.state_dict.values()),
        },
        "preprocess": {key: preprocess.get(key) for key in
                       ("target_spacing_mm", "max_voxels", "spacing_tolerance", "normalization", "percentiles",
                        "crop_foreground", "n4", "rotation_axis", "intensity_stats", "planned_shape")
                       if key in preprocess},
        "training": {
            "epochs": checkpoint.epoch,
            "best_validation_dice": checkpoint.best_dice,
            "best_epoch": checkpoint.best_epoch,
            "lr": config.get("lr"),
            "steps_per_case": config.get("steps_per_case"),
            "loss": config.get("loss"),
            "dataset": checkpoint.dataset,
            "train_cases": None if checkpoint.train_cases is None else len(checkpoint.train_cases),
            "val_cases": None if checkpoint.val_cases is None else len(checkpoint.val_cases),
            "ops_backend": checkpoint.ops_backend,
        },
        "resumable": checkpoint.resume is not None,
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
    """:func:`describe_checkpoint`'s dict as a two-column table (with a row for ``kernels_here``, the kernels
    this machine would run, where the caller added it)."""
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
        ("head T", f"{model['head']['norm']} norm, pool {model['head']['pool']}, "
                   f"{'reads the image, ' if model['head']['image'] else ''}{model['head']['activation']}"),
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
        ("projection kernels", training.get("ops_backend")),
        *([("projection kernels here", description["kernels_here"])] if "kernels_here" in description else []),
        ("training data", f"{training['dataset']}: {training['train_cases']} training / {training['val_cases']} "
                          "validation cases" if training["dataset"] else None),
        ("resumable", "yes (optimiser state inside)" if description["resumable"] else "no"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {_cell(value)}" for name, value in rows)
