"""The Kaggle notebooks in experiments/kaggle/ run end to end (train in SMOKE settings, then inference, on a CPU)
on a small competition-shaped folder, and their kernel-metadata.json attach what they read."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vol25d.data.gitract import CLASSES, rle_decode, rle_encode

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

KAGGLE = Path(__file__).resolve().parents[1] / "experiments" / "kaggle"
TRAIN = KAGGLE / "gi_tract_train" / "vol25d-gi-tract-train.ipynb"
INFER = KAGGLE / "gi_tract_infer" / "vol25d-gi-tract-infer.ipynb"

# (case, case_day, W, H, pw, ph, slice numbers): W ≠ H so a swapped axis shows in the RLE check; one test
# case-day does not start at slice 1, so ids must come from the file names; case1 has two days, which the
# patient split must keep together.
TRAIN_DAYS = [
    ("case1", "case1_day0", 40, 32, 1.50, 1.50, range(1, 9)),
    ("case1", "case1_day3", 40, 32, 1.50, 1.50, range(1, 10)),
    ("case2", "case2_day1", 32, 40, 1.63, 1.63, range(1, 9)),
    ("case4", "case4_day0", 40, 32, 1.50, 1.50, range(1, 9)),
]
TEST_DAYS = [
    ("case3", "case3_day2", 40, 32, 1.50, 1.50, range(1, 9)),
    ("case5", "case5_day1", 32, 40, 1.63, 1.63, range(3, 11)),
]


def _slice(h: int, w: int, z: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A 16-bit abdomen-like slice (body ellipse, three brighter organs that move with ``z``) and its masks."""
    y, x = np.mgrid[:h, :w]
    body = ((y - h / 2) / (0.45 * h)) ** 2 + ((x - w / 2) / (0.45 * w)) ** 2 <= 1
    masks = {
        "large_bowel": (((y - h / 2) ** 2 + (x - 0.3 * w) ** 2) <= 16) & body,
        "small_bowel": (np.abs(y - 0.6 * h) < 3) & (np.abs(x - 0.55 * w - z % 3) < 5) & body,
        "stomach": (((y - 0.35 * h) ** 2 + (x - 0.7 * w) ** 2) <= 9) & body & (z < 5),
    }
    pixels = np.where(body, 800.0, 0.0) + rng.normal(0, 40, (h, w))
    for level, mask in zip((1400, 1800, 2400), masks.values()):
        pixels[mask] = level + rng.normal(0, 40, int(mask.sum()))
    return np.clip(pixels, 0, 65535).astype(np.uint16), masks


@pytest.fixture
def competition(tmp_path) -> Path:
    """The competition folder: train/ (4 case-days), train.csv, test/ (2 case-days), sample_submission.csv."""
    rng = np.random.default_rng(0)
    src = tmp_path / "competition"
    csv_rows = []
    for split, days in (("train", TRAIN_DAYS), ("test", TEST_DAYS)):
        for case, case_day, w, h, pw, ph, numbers in days:
            scans = src / split / case / case_day / "scans"
            scans.mkdir(parents=True)
            for z, number in enumerate(numbers):
                pixels, masks = _slice(h, w, z, rng)
                Image.fromarray(pixels).save(scans / f"slice_{number:04d}_{w}_{h}_{pw:.2f}_{ph:.2f}.png")
                if split == "train":
                    csv_rows += [(f"{case_day}_slice_{number:04d}", name, rle_encode(masks[name])) for name in CLASSES]
    with (src / "train.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([("id", "class", "segmentation"), *csv_rows])
    (src / "sample_submission.csv").write_text("id,class,predicted\n")  # empty, as the public one is
    return src


def _kernel_of_this_interpreter(tmp_path, monkeypatch) -> str:
    """A kernelspec running this Python, so that a 'python3' kernelspec installed elsewhere cannot take over."""
    spec = tmp_path / "jupyter" / "kernels" / "vol25d-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "vol25d test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return spec.name


def _execute(path: Path, parameters: dict, tmp_path: Path, kernel: str):
    """Run a notebook with ``parameters`` injected after its 'parameters' cell (papermill's way); return it run."""
    notebook = nbformat.read(path, as_version=4)
    tagged = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    defaults = {}
    exec(notebook.cells[tagged[0]].source, {}, defaults)
    assert set(parameters) <= set(defaults), f"{path.name} has no parameter(s) {set(parameters) - set(defaults)}"
    injected = "\n".join(f"{name} = {value!r}" for name, value in parameters.items())
    notebook.cells.insert(tagged[0] + 1, nbformat.v4.new_code_cell(injected))
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name=kernel,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # a cell that raises fails the test with its traceback
    return notebook


def _outputs(notebook) -> tuple[str, list]:
    outputs = [o for cell in notebook.cells for o in cell.get("outputs", [])]
    return "".join(o.get("text", "") for o in outputs), [o for o in outputs if "image/png" in o.get("data", {})]


def test_train_notebook_writes_a_model_folder_the_inference_notebook_submits_with(competition, tmp_path, monkeypatch):
    kernel = _kernel_of_this_interpreter(tmp_path, monkeypatch)
    out, scratch = tmp_path / "working", tmp_path / "scratch"
    settings = {"DATA_DIR": str(competition), "OUT_DIR": str(out), "SCRATCH_DIR": str(scratch), "SMOKE": True}
    model = out / "vol25d-gi-tract-model"

    # A time limit already past: the run trains one epoch of path 1 (MIP), stops cleanly, and leaves a model folder.
    stopped = _execute(TRAIN, {**settings, "TIME_LIMIT_H": 0.0}, tmp_path, kernel)
    text, figures = _outputs(stopped)
    assert "stopped for time (0.0 h)" in text and "path1: stopped for time after epoch 1/2" in text and not figures
    assert {p.name for p in (out / "runs").iterdir()} == {"mip"}
    assert not (out / "runs" / "mip" / "path2_last.pt").exists()
    interim = json.loads((model / "validation.json").read_text())
    assert interim["final"] is False and (interim["projection"], interim["checkpoint"], interim["epoch"]) == (
        "mip", "path1.pt", 1)
    assert {p.name for p in model.iterdir()} == {"model.pt", "config.yaml", "path1_metrics.csv", "validation.json",
                                                 "dataset-metadata.json"}
    epoch_1 = (out / "runs" / "mip" / "path1_metrics.csv").read_text().splitlines()[1]

    # Run again without a limit: path 1 resumes at epoch 2 (epoch 1's row kept), then everything completes.
    trained = _execute(TRAIN, {**settings, "TIME_LIMIT_H": None}, tmp_path, kernel)
    text, figures = _outputs(trained)
    assert "path1: resuming" in text
    lines = (out / "runs" / "mip" / "path1_metrics.csv").read_text().splitlines()
    assert lines[1] == epoch_1 and [line.split(",")[0] for line in lines[1:]] == ["1", "2"]
    assert "the model folder gets projection=" in text
    # Each path shows its progress in the notebook: a tqdm bar, a widget where ipywidgets is installed.
    widgets = [o for cell in trained.cells for o in cell.get("outputs", [])
               if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets or all(re.search(rf"path{k} epoch (\d+)/\1: 100%\|", text) for k in (1, 2)), text[-3000:]
    assert len(figures) == 2  # the views the model sees; validation slices with truth and prediction
    assert {p.name for p in model.iterdir()} == {"model.pt", "config.yaml", "path1_metrics.csv", "path2_metrics.csv",
                                                 "validation.json", "dataset-metadata.json"}
    assert {p.name for p in out.iterdir()} == {"vol25d-gi-tract-model", "runs"}  # no converted data, no leftovers
    assert {p.name for p in (out / "runs").iterdir()} == {"mip", "sum"}
    assert not (scratch / "dataset").exists()  # the converted copy lived outside OUT_DIR and is gone
    validation = json.loads((model / "validation.json").read_text())
    days = {case_day: case for case, case_day, *_ in TRAIN_DAYS}
    held_out, trained_on = set(validation["validation_patients"]), set(validation["training_patients"])
    assert held_out and trained_on and not held_out & trained_on and held_out | trained_on == set(days.values())
    assert sorted(validation["validation_case_days"]) == sorted(d for d, case in days.items() if case in held_out)
    assert set(validation["scores"]) == {"mip", "sum"} and validation["projection"] in {"mip", "sum"}
    assert all(0.0 <= s["score"] <= 1.0 for s in validation["scores"].values()) and validation["final"] is True
    metadata = json.loads((model / "dataset-metadata.json").read_text())
    assert metadata["id"].endswith("/vol25d-gi-tract-model") and metadata["licenses"]

    # As Kaggle's "New Dataset from output" attaches it: the model folder one folder down in the input folder. And
    # one test PNG truncated: its case-day gets empty rows and a warning, the submission stays complete.
    attached = tmp_path / "input" / "vol25d-gi-tract-model"
    shutil.copytree(model, attached / model.name)
    broken = sorted((competition / "test" / "case5" / "case5_day1" / "scans").glob("*.png"))[3]
    broken.write_bytes(broken.read_bytes()[:100])
    submission_dir = tmp_path / "submission"
    inferred = _execute(INFER, {"DATA_DIR": str(competition), "MODEL_DIR": str(attached),
                                "OUT_DIR": str(submission_dir)}, tmp_path, kernel)
    with (submission_dir / "submission.csv").open(newline="") as handle:
        reader = csv.reader(handle)
        assert next(reader) == ["id", "class", "predicted"]
        rows = list(reader)
    shapes = {}  # slice id → (H, W)
    for _, case_day, w, h, _, _, numbers in TEST_DAYS:
        shapes.update({f"{case_day}_slice_{number:04d}": (h, w) for number in numbers})
    assert sorted((r[0], r[1]) for r in rows) == sorted((i, name) for i in shapes for name in CLASSES)
    for slice_id, _, rle in rows:
        mask = rle_decode(rle, shapes[slice_id], name=slice_id)  # raises if a run leaves the slice
        assert mask.shape == shapes[slice_id]
    assert all(rle == "" for slice_id, _, rle in rows if slice_id.startswith("case5_day1"))
    text, _ = _outputs(inferred)
    assert f"submitting with projection={validation['projection']!r}" in text
    assert "case5_day1: cannot be read (" in text and "its 8 slices get empty predictions" in text
    assert "16 test slices of 2 case-days" in text
    assert {p.name for p in submission_dir.iterdir()} == {"submission.csv"}


@pytest.mark.parametrize("notebook", [TRAIN, INFER], ids=["train", "infer"])
def test_kernel_metadata_attaches_what_the_notebook_reads(notebook):
    metadata = json.loads((notebook.parent / "kernel-metadata.json").read_text())
    assert metadata["code_file"] == notebook.name
    assert metadata["kernel_type"] == "notebook" and metadata["language"] == "python"
    assert metadata["enable_internet"] is False  # a code competition's submission runs offline
    assert metadata["enable_gpu"] is True and metadata["machine_shape"] == "NvidiaTeslaT4"
    assert metadata["competition_sources"] == ["uw-madison-gi-tract-image-segmentation"]
    slug = metadata["id"].split("/")[1]
    assert slug == re.sub(r"[^a-z0-9]+", "-", metadata["title"].lower())  # Kaggle derives the slug from the title
    source = "".join(cell.source for cell in nbformat.read(notebook, as_version=4).cells if cell.cell_type == "code")
    read = set(re.findall(r"/kaggle/input/([\w-]+)", source))
    attached = {name.split("/")[1] for name in metadata["dataset_sources"]} | set(metadata["competition_sources"])
    assert read == attached
