"""The folders of the Kaggle notebooks (``experiments/kaggle/``): an attached file found at any depth of its
input folder, and the model folder the train notebook writes and the inference notebook loads, written whole.

Kaggle mounts each attached dataset read-only under ``/kaggle/input/<slug>/``; a dataset made with *New Dataset*
from a notebook's output keeps the output's folders, so ``model.pt`` may lie one or more folders down.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

from vol25d.errors import InputError

__all__ = ["find_input_file", "keep_best_model", "read_model_record", "restore_previous_output", "write_model_folder"]

MODEL_RECORD = "validation.json"


def find_input_file(root: str | os.PathLike, name: str, attach: str) -> Path:
    """The one file called ``name`` under ``root``, at any depth.

    Args:
        root: the input folder (e.g. ``/kaggle/input/vol25d-gi-tract-model``).
        name: the file name (e.g. ``"model.pt"``).
        attach: what to attach for it, for the error message (e.g. ``"the vol25d-gi-tract-model dataset"``).

    Raises:
        InputError: ``root`` is missing or holds no such file (naming it and what to attach), or holds several
            (listing them).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder; attach {attach} as an input, or set the parameter to the folder "
                         f"that holds its {name}")
    found = sorted(p for p in root.rglob(name) if p.is_file())
    if not found:
        raise InputError(f"{root}: holds no {name} at any depth; attach {attach} as an input, or set the parameter to "
                         f"the folder that holds its {name}")
    if len(found) > 1:
        raise InputError(f"{root}: holds {len(found)} files called {name} ({', '.join(map(str, found))}); keep one of "
                         "them attached, or set the parameter to the folder of the one to use")
    return found[0]


def write_model_folder(folder: str | os.PathLike, files: Mapping[str, str | os.PathLike],
                       records: Mapping[str, dict]) -> Path:
    """Write the model folder whole: copies of ``files`` (name in the folder → source file) and ``records``
    (name → a dict written as JSON), assembled in a hidden sibling folder and swapped in for the old one, so a
    reader finds the old folder or the new one, never a mix (nor, if this fails, a half-written one).

    Returns:
        ``folder`` as a Path.
    """
    folder = Path(folder)
    tag = uuid.uuid4().hex[:12]
    partial, old = folder.with_name(f".{folder.name}.{tag}.partial"), folder.with_name(f".{folder.name}.{tag}.old")
    partial.mkdir(parents=True)
    try:
        for name, source in files.items():
            shutil.copyfile(source, partial / name)
        for name, record in records.items():
            (partial / name).write_text(json.dumps(record, indent=2) + "\n")
        if folder.exists():
            folder.rename(old)
        partial.rename(folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return folder


def read_model_record(folder: str | os.PathLike) -> dict | None:
    """The model folder's ``validation.json``, or ``None`` when there is none yet."""
    path = Path(folder) / MODEL_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def keep_best_model(folder: str | os.PathLike, checkpoint: str | os.PathLike, val_dice: float, *,
                    files: Mapping[str, str | os.PathLike], record: dict, metadata: dict) -> bool:
    """Refresh the model folder from ``checkpoint`` while training, if it beats what the folder holds.

    The folder is rewritten (:func:`write_model_folder`) with ``model.pt`` = ``checkpoint``, ``files``,
    ``dataset-metadata.json`` = ``metadata`` and ``validation.json`` = ``record`` plus ``"final": false`` and
    ``"val_dice"``, when it has no ``validation.json`` yet, or one that is not final and has a lower
    ``val_dice``. A final folder (the train notebook's last step, ``"final": true``) is left alone.

    Returns:
        Whether the folder was rewritten.
    """
    current = read_model_record(folder)
    if current is not None and (current.get("final") or float(current.get("val_dice", float("-inf"))) >= val_dice):
        return False
    write_model_folder(folder, {"model.pt": checkpoint, **files},
                       {MODEL_RECORD: {**record, "final": False, "val_dice": float(val_dice)},
                        "dataset-metadata.json": metadata})
    return True


def _copy_folder(source: Path, target: Path) -> None:
    """Copy a folder under a hidden name beside ``target``, then rename it into place."""
    partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.partial")
    try:
        shutil.copytree(source, partial)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def restore_previous_output(previous: str | os.PathLike, runs_dir: str | os.PathLike,
                            model_dir: str | os.PathLike) -> list[Path]:
    """Copy what an earlier session of the train notebook left, attached as an input, back into this session's
    output, so that its training resumes: the folder of run folders (the one folder holding ``*/path1_last.pt``)
    to ``runs_dir``, and the model folder (the one holding ``model.pt`` and ``validation.json``, if any) to
    ``model_dir``; either only where this session has none yet. Both are found at any depth of ``previous``.

    Returns:
        The folders copied (none when this session already has both).

    Raises:
        InputError: ``previous`` is missing, holds no run folder, or several folders of run folders.
    """
    previous, runs_dir, model_dir = Path(previous), Path(runs_dir), Path(model_dir)
    if not previous.is_dir():
        raise InputError(f"{previous}: no such folder; attach the earlier version's output of the train notebook as "
                         "an input, or set RESUME_FROM to None to start afresh")
    runs = sorted({p.parent.parent for p in previous.rglob("path1_last.pt")})
    if len(runs) != 1:
        found = f"{len(runs)} folders of run folders ({', '.join(map(str, runs))})" if runs else "no run folder"
        raise InputError(f"{previous}: holds {found} (*/path1_last.pt) at any depth; attach the output of one "
                         "earlier version of the train notebook, or set RESUME_FROM to None")
    copied = []
    if not runs_dir.exists():
        _copy_folder(runs[0], runs_dir)
        copied.append(runs_dir)
    models = sorted(p.parent for p in previous.rglob("model.pt") if (p.parent / MODEL_RECORD).is_file())
    if len(models) == 1 and not model_dir.exists():
        _copy_folder(models[0], model_dir)
        copied.append(model_dir)
    return copied
