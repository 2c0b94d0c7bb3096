"""vol25d.data.gitract.kaggle (the Kaggle notebooks' input and model folders) and the notebooks' install cell,
which finds the wheels at any depth before vol25d is importable."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from vol25d.data.gitract import (
    find_input_file,
    keep_best_model,
    read_model_record,
    restore_previous_output,
    write_model_folder,
)
from vol25d.errors import InputError

KAGGLE = Path(__file__).resolve().parents[2] / "experiments" / "kaggle"
NOTEBOOKS = [KAGGLE / "gi_tract_train" / "vol25d-gi-tract-train.ipynb",
             KAGGLE / "gi_tract_infer" / "vol25d-gi-tract-infer.ipynb"]


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_find_input_file_at_any_depth_or_one_clear_error(tmp_path):
    model = _touch(tmp_path / "attached" / "vol25d-gi-tract-model" / "deeper" / "model.pt")
    assert find_input_file(tmp_path / "attached", "model.pt", "the model dataset") == model
    with pytest.raises(InputError, match=r"empty: holds no model.pt at any depth; attach the model dataset"):
        find_input_file(_touch(tmp_path / "empty" / "notes.txt").parent, "model.pt", "the model dataset")
    with pytest.raises(InputError, match=r"absent: no such folder; attach the model dataset"):
        find_input_file(tmp_path / "absent", "model.pt", "the model dataset")
    other = _touch(tmp_path / "attached" / "second" / "model.pt")
    with pytest.raises(InputError, match=r"holds 2 files called model.pt \(.*second/model.pt, .*deeper/model.pt\); keep one") as error:
        find_input_file(tmp_path / "attached", "model.pt", "the model dataset")
    assert str(other) in str(error.value) and str(model) in str(error.value)


def test_write_model_folder_swaps_in_a_whole_folder(tmp_path):
    source = _touch(tmp_path / "run" / "path2.pt", "weights")
    folder = tmp_path / "out" / "model"
    _touch(folder / "stale.txt")
    write_model_folder(folder, {"model.pt": source}, {"validation.json": {"projection": "mip"}})
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt", "validation.json"]  # the old folder is gone
    assert (folder / "model.pt").read_text() == "weights" and read_model_record(folder) == {"projection": "mip"}
    assert [p.name for p in folder.parent.iterdir()] == ["model"]  # no partial or old folder left
    with pytest.raises(FileNotFoundError):
        write_model_folder(folder, {"model.pt": tmp_path / "missing.pt"}, {})
    assert (folder / "model.pt").read_text() == "weights" and [p.name for p in folder.parent.iterdir()] == ["model"]


def test_keep_best_model_rewrites_the_folder_only_for_a_better_checkpoint(tmp_path):
    first, second = _touch(tmp_path / "a.pt", "first"), _touch(tmp_path / "b.pt", "second")
    folder, metadata = tmp_path / "model", {"id": "me/vol25d-gi-tract-model"}
    assert read_model_record(folder) is None
    assert keep_best_model(folder, first, 0.4, files={}, record={"epoch": 1}, metadata=metadata)
    assert read_model_record(folder) == {"epoch": 1, "final": False, "val_dice": 0.4}
    assert json.loads((folder / "dataset-metadata.json").read_text()) == metadata
    assert not keep_best_model(folder, second, 0.3, files={}, record={"epoch": 2}, metadata=metadata)
    assert (folder / "model.pt").read_text() == "first"
    assert keep_best_model(folder, second, 0.5, files={"config.yaml": first}, record={"epoch": 3}, metadata=metadata)
    assert (folder / "model.pt").read_text() == "second" and (folder / "config.yaml").is_file()
    write_model_folder(folder, {"model.pt": first}, {"validation.json": {"final": True}})
    assert not keep_best_model(folder, second, 0.9, files={}, record={}, metadata=metadata)  # final stays


def test_restore_previous_output_copies_the_runs_and_the_model_folder_back(tmp_path):
    previous = tmp_path / "input" / "vol25d-gi-tract-train"
    _touch(previous / "nested" / "runs" / "mip" / "path1_last.pt", "mip")
    _touch(previous / "nested" / "vol25d-gi-tract-model" / "model.pt")
    _touch(previous / "nested" / "vol25d-gi-tract-model" / "validation.json", "{}")
    out = tmp_path / "working"
    copied = restore_previous_output(previous, out / "runs", out / "vol25d-gi-tract-model")
    assert copied == [out / "runs", out / "vol25d-gi-tract-model"]
    assert (out / "runs" / "mip" / "path1_last.pt").read_text() == "mip"
    assert (out / "vol25d-gi-tract-model" / "validation.json").is_file()
    assert restore_previous_output(previous, out / "runs", out / "vol25d-gi-tract-model") == []  # never overwrites
    with pytest.raises(InputError, match=r"bare: holds no run folder \(\*/path1_last.pt\) at any depth"):
        restore_previous_output(_touch(tmp_path / "bare" / "x").parent, out / "r", out / "m")
    _touch(previous / "other" / "runs" / "sum" / "path1_last.pt")
    with pytest.raises(InputError, match=r"holds 2 folders of run folders \(.*other/runs.*\)"):
        restore_previous_output(previous, out / "r2", out / "m2")
    with pytest.raises(InputError, match=r"no such folder; attach the earlier version's output"):
        restore_previous_output(tmp_path / "absent", out / "r3", out / "m3")


def _install_cell(notebook: Path) -> str:
    cells = json.loads(notebook.read_text())["cells"]
    [cell] = [c for c in cells if c["cell_type"] == "code" and "pip" in "".join(c["source"])]
    return "".join(cell["source"])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=["train", "infer"])
def test_the_install_cell_finds_the_wheels_at_any_depth(notebook, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)  # as on Kaggle: not installed yet
    monkeypatch.setattr(subprocess, "run", lambda argv, **kwargs: calls.append(argv))
    wheels = tmp_path / "vol25d-wheels"
    ours = _touch(wheels / "vol25d-wheels" / "vol25d-0.1.0-py3-none-any.whl")
    _touch(wheels / "vol25d-wheels" / "deps" / "monai-1.4.0-py3-none-any.whl")
    exec(_install_cell(notebook), {"WHEELS_DIR": str(wheels)})
    [argv] = calls
    assert argv[-1] == str(ours) and "--no-index" in argv
    links = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--find-links"]
    assert links == [str(ours.parent), str(ours.parent / "deps")]

    with pytest.raises(FileNotFoundError, match=r"holds no vol25d-\*.whl at any depth; attach one vol25d-wheels"):
        exec(_install_cell(notebook), {"WHEELS_DIR": str(tmp_path / "nothing")})
    _touch(wheels / "old" / "vol25d-0.0.9-py3-none-any.whl")
    with pytest.raises(FileNotFoundError, match=r"holds 2 vol25d wheels \(.*0.0.9.*0.1.0.*\)"):
        exec(_install_cell(notebook), {"WHEELS_DIR": str(wheels)})
