"""Checkpoints: safe loading and clear errors for files that are not ours or do not fit."""

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from vol25d.checkpoint import Checkpoint, Resume, RunFolder, describe_checkpoint
from vol25d.errors import InputError
from vol25d.model import Random25DUNet

SMALL = dict(channels=(4, 8), strides=(2,), num_res_units=1, directions=4, views=2)


def _values(model):
    return Checkpoint.of_model(model, preprocess={}, class_names=["vessel"], channel_names=["MRA"]).to_dict()


def save_checkpoint(values: dict, path):
    """Write a checkpoint's file dict as it is (also the ones an older vol25d wrote)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(values, path)
    return path


def model_from_checkpoint(checkpoint: Checkpoint, path):
    return checkpoint.model(path)


def test_round_trip_gives_the_same_weights(tmp_path):
    model = Random25DUNet(1, 1, **SMALL)
    path = save_checkpoint(_values(model), tmp_path / "run" / "path1.pt")
    loaded = model_from_checkpoint(Checkpoint.load(path), path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["path1.pt"]  # no temp file left


def test_a_checkpoint_from_before_the_filter_settings_keeps_its_filtration(tmp_path):
    old = Random25DUNet(1, 1, filter_init="ramlak", filter_fixed_dc=False, filter_radius=12, **SMALL)
    values = _values(old)
    for key in ("filter_init", "filter_fixed_dc"):
        del values["model_config"][key]  # as written by vol25d before they existed
    path = save_checkpoint(values, tmp_path / "path2.pt")
    loaded = model_from_checkpoint(Checkpoint.load(path), path)
    assert (loaded.config.filter_init, loaded.config.filter_fixed_dc) == ("ramlak", False)
    torch.testing.assert_close(loaded.filtration.effective_kernel(), old.filtration.kernel)


def test_a_pickled_object_is_refused(tmp_path):
    # Any class outside torch's weights-only allow-list could run code when unpickled: it must be refused.
    torch.save({"format": "vol25d-checkpoint", "payload": argparse.Namespace(command="rm -rf /")}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="evil.pt is not a vol25d checkpoint"):
        Checkpoint.load(tmp_path / "evil.pt")


def test_another_torch_file_is_not_ours(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="other.pt is not a vol25d checkpoint"):
        Checkpoint.load(tmp_path / "other.pt")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt does not exist"):
        Checkpoint.load(tmp_path / "nothing.pt")


def test_weights_that_do_not_fit_the_settings(tmp_path):
    values = _values(Random25DUNet(1, 1, **SMALL))
    values["model_config"]["out_channels"] = 3
    path = save_checkpoint(values, tmp_path / "path2.pt")
    with pytest.raises(InputError, match="wrong shape"):
        model_from_checkpoint(Checkpoint.load(path), path)
    del values["state_dict"]["filtration.kernel"]
    path = save_checkpoint(values, tmp_path / "path2.pt")
    with pytest.raises(InputError, match="missing"):
        model_from_checkpoint(Checkpoint.load(path), path)


def test_an_old_checkpoint_without_a_reconstruction_loads_as_the_seed_one(tmp_path):
    values = _values(Random25DUNet(1, 1, reconstruction="seed", **SMALL))  # all there was then
    del values["model_config"]["reconstruction"]  # as written before the setting existed
    path = save_checkpoint(values, tmp_path / "path1.pt")
    loaded = model_from_checkpoint(Checkpoint.load(path), path)
    assert loaded.config.reconstruction == "seed" and loaded.explanation is None


def test_an_image_reconstruction_round_trips_with_its_margin_and_softness(tmp_path):
    model = Random25DUNet(1, 1, reconstruction="image", **SMALL)
    with torch.no_grad():
        model.explanation.margin.fill_(0.25)
    path = save_checkpoint(_values(model), tmp_path / "path2.pt")
    loaded = model_from_checkpoint(Checkpoint.load(path), path)
    assert loaded.config.reconstruction == "image"
    assert float(loaded.explanation.margin.detach()) == pytest.approx(0.25)


def test_a_checkpoint_from_before_the_head_read_the_image_loads_and_gives_what_it_gave(tmp_path):
    old = Random25DUNet(1, 1, reconstruction="image", head_image=False, **SMALL).eval()  # all there was then
    values = _values(old)
    del values["model_config"]["head_image"]  # as written before the setting existed
    path = save_checkpoint(values, tmp_path / "path2.pt")
    loaded = model_from_checkpoint(Checkpoint.load(path), path).eval()
    assert not loaded.config.head_image and loaded.head.context is None
    x = torch.rand(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), old(x))
    assert describe_checkpoint(Checkpoint.load(path))["model"]["head"]["image"] is False
    new = _values(Random25DUNet(1, 1, **SMALL))
    assert new["model_config"]["head_image"] and "head.context.weight" in new["state_dict"]


def test_a_checkpoint_that_saved_memory_controls_loads_and_runs_with_the_given_ones(tmp_path):
    """Before they became runtime arguments, every checkpoint carried view_chunk and checkpoint_views."""
    model = Random25DUNet(1, 1, **SMALL)
    values = _values(model)
    values["model_config"].update(view_chunk=2, checkpoint_views=1)  # as written by vol25d 0.x
    path = save_checkpoint(values, tmp_path / "path2.pt")
    loaded = model_from_checkpoint(Checkpoint.load(path), path)
    assert "view_chunk" not in loaded.config.to_dict()
    assert (loaded.view_chunk, loaded.checkpoint_views) == (16, 0)  # the defaults, not the saved ones
    x = torch.rand(1, 1, 8, 8, 8)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


OLD = Path(__file__).resolve().parent / "fixtures" / "vol25d-0.1.0"


def test_checkpoints_written_by_vol25d_0_1_0_still_load_and_give_what_they_gave():
    """path2.pt and path1_last.pt as vol25d 0.1.0 wrote them (before the Checkpoint type and the runtime memory
    controls), with the logits its model gave for a fixed input then."""
    old = Checkpoint.load(OLD / "path2.pt")
    assert old.version == "0.1.0" and old.path == 2 and old.unet_frozen and "view_chunk" in old.model_config
    model = old.model(OLD / "path2.pt").eval()
    x = torch.rand(1, 1, 12, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model.head.logits(model._reconstruct_in_chunks(x, model.angles, (12, 12)))
    torch.testing.assert_close(logits, torch.from_numpy(np.load(OLD / "path2_logits.npy")), atol=1e-4, rtol=1e-4)
    last = Checkpoint.load(OLD / "path1_last.pt")
    assert last.epoch == 1 and last.resume is not None and last.resume.world_size == 1
    assert {"shuffle", "directions", "torch"} <= set(last.resume.rng) and "state" in last.resume.optimizer
    assert describe_checkpoint(last)["resumable"] and not describe_checkpoint(old)["resumable"]


def test_a_checkpoint_round_trips_every_field(tmp_path):
    model = Random25DUNet(1, 1, **SMALL)
    resume = Resume({"state": {}, "param_groups": []}, {"last_epoch": 3}, {"torch": torch.get_rng_state()}, 2)
    written = Checkpoint.of_model(model, preprocess={"rotation_axis": "AP"}, class_names=["vessel"],
                                  channel_names=["MRA"], multi_label=True, path=1, train_config={"lr": 0.1},
                                  dataset="data", train_cases=["a"], val_cases=["b"], epoch=3, best_dice=0.5,
                                  best_epoch=2, resume=resume)
    read = Checkpoint.load(written.save(tmp_path / "path1_last.pt"))
    for name in ("preprocess", "class_names", "channel_names", "multi_label", "path", "train_config", "dataset",
                 "train_cases", "val_cases", "epoch", "best_dice", "best_epoch", "version", "model_config"):
        assert getattr(read, name) == getattr(written, name), name
    assert read.resume.world_size == 2 and read.resume.scheduler == {"last_epoch": 3}


def test_the_run_folder_names_every_file():
    run = RunFolder("RUN")
    assert (run.best(1), run.last(2), run.metrics(1), run.tensorboard(2), run.config) == (
        Path("RUN/path1.pt"), Path("RUN/path2_last.pt"), Path("RUN/path1_metrics.csv"), Path("RUN/tb/path2"),
        Path("RUN/config.yaml"))


def test_the_train_help_names_the_run_folders_files(capsys):
    from vol25d.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    run = RunFolder("RUN")
    assert f"--init {run.best(1)}" in text and str(run.last(0)).replace("0", "N") in text
