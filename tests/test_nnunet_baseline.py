"""experiments/nnunet_baseline.py: the harness's copy of a dataset in nnU-Net's layout, its split, the budget's
epochs and poly rate without nnunetv2; the whole nnU-Net run where the bench extra is installed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import load_script
from vol25d.data.dataset import load_dataset, split_cases
from vol25d.data.phantom import write_phantom_dataset

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _module():
    sys.path.insert(0, str(EXPERIMENTS))
    return load_script(EXPERIMENTS / "nnunet_baseline.py", "nnunet_baseline")


def test_the_raw_dataset_links_every_case_in_nnunet_names_and_fold_0_is_the_harness_split(tmp_path):
    nnunet = _module()
    dataset = load_dataset(write_phantom_dataset(tmp_path / "data", 5, 16, seed=3))
    folder = nnunet.write_raw_dataset(dataset, dataset.cases, tmp_path / "raw")
    assert folder.name == nnunet.DATASET_NAME
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta == {"channel_names": {"0": "MRA"}, "labels": {"background": 0, "vessel": 1}, "numTraining": 5,
                    "file_ending": ".nii.gz"}
    for case in dataset.cases:
        image = folder / "imagesTr" / f"{case.name}_0000.nii.gz"
        assert image.resolve() == case.image_paths[0].resolve()
        assert (folder / "labelsTr" / f"{case.name}.nii.gz").resolve() == case.label_path.resolve()
    train, val = split_cases(dataset.cases, 0.2, 7)
    split = json.loads(nnunet.write_split(tmp_path / "pre", train, val).read_text())
    assert split == [{"train": sorted(c.name for c in train), "val": sorted(c.name for c in val)}]


def test_datasets_nnunet_cannot_train_on_by_default_are_one_sentence(tmp_path):
    nnunet = _module()
    dataset = load_dataset(write_phantom_dataset(tmp_path / "data", 2, 16, seed=3))
    dataset.multi_label = True
    with pytest.raises(ValueError, match="multi-label"):
        nnunet.raw_dataset_json(dataset, 2)
    dataset.multi_label, dataset.labels = False, {"background": 0, "vessel": 2}
    with pytest.raises(ValueError, match="without gaps"):
        nnunet.raw_dataset_json(dataset, 2)


def test_the_poly_rate_follows_the_elapsed_fraction_of_the_budget():
    nnunet = _module()
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    now = [100.0]
    schedule = nnunet.ElapsedPoly(optimizer, 0.01, 50.0, start=100.0, clock=lambda: now[0])
    for elapsed, expected in ((0.0, 0.01), (25.0, 0.01 * 0.5 ** 0.9), (60.0, 0.0)):
        now[0] = 100.0 + elapsed
        schedule.step(7)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected)
        assert schedule.get_last_lr() == [pytest.approx(expected)]


def test_epochs_start_while_half_a_mean_epoch_fits_in_the_budget():
    nnunet = _module()
    assert nnunet.another_epoch(500.0, [], 10.0)  # the first always runs
    assert nnunet.another_epoch(8.9, [4.0, 4.0], 11.0)
    assert not nnunet.another_epoch(9.1, [4.0, 4.0], 11.0)


def test_a_missing_or_other_nnunet_is_one_sentence_with_the_install_line(monkeypatch):
    nnunet = _module()
    import importlib.metadata

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(RuntimeError, match=r"nnunetv2==2\.8\.1 \(found none\).*\[bench\]"):
        nnunet.check_installed()


def test_the_harness_runs_nnunet_end_to_end_where_it_is_installed(tmp_path):
    pytest.importorskip("nnunetv2")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "nnUNet_n_proc_DA": "0", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(EXPERIMENTS / "benchmark.py"), "--smoke", "--out-dir", str(tmp_path),
                           "--methods", "nnunet-2d,nnunet-3d"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = (tmp_path / "benchmark.md").read_text()
    for label in ("nnunet-2d", "nnunet-3d", "nnunet-2d (no mirroring)", "nnunet-3d (no mirroring)"):
        row = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
        assert 0.0 <= float(row.split("|")[2]) <= 1.0
