"""vol25d.demo.run_demo: the whole pipeline on tiny phantoms, with training's defaults where the settings leave them."""

import csv

import yaml

from vol25d.demo import DemoSettings, run_demo
from vol25d.model import ModelConfig
from vol25d.train import DEFAULT_EPOCHS


def test_the_cpu_demo_trains_as_vol25d_train_does_by_default():
    settings = DemoSettings.cpu()
    assert (settings.path1_epochs, settings.path2_epochs) == (None, None)  # train's CPU defaults
    assert settings.model() == ModelConfig()
    assert DemoSettings.gpu().model() == ModelConfig(views=16)


def test_the_demo_writes_data_run_predictions_and_scores(tmp_path, monkeypatch):
    monkeypatch.setitem(DEFAULT_EPOCHS, "cpu", {1: 1, 2: 1})  # unset epochs: train's default, kept short here
    settings = DemoSettings(train_cases=3, test_cases=2, size=16, directions=4, views=2)
    mean_dice, table = run_demo(tmp_path, settings, device="cpu", quiet=True)
    record = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (record["path1"]["train"]["epochs"], record["path2"]["train"]["epochs"]) == (1, 1)
    assert (record["path1"]["model"]["directions"], record["path1"]["model"]["views"]) == (4, 2)
    assert "layout mixed" in (tmp_path / "data" / "dataset.json").read_text()
    with (tmp_path / "evaluation.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 2 and 0.0 <= mean_dice <= 1.0
    assert abs(mean_dice - sum(float(row["dice"]) for row in rows) / 2) < 1e-9
    assert table.strip().endswith(f"mean Dice: {mean_dice:.3f}")
    assert len(list((tmp_path / "pred").glob("*.png"))) == 2  # a report per held-out case
