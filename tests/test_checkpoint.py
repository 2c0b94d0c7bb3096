"""Checkpoints: safe loading and clear errors for files that are not ours or do not fit."""

import argparse

import pytest
import torch

from vol25d.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from vol25d.errors import InputError
from vol25d.model import Random25DUNet

SMALL = dict(channels=(4, 8), strides=(2,), num_res_units=1, directions=4, views=2)


def _values(model):
    return {"model_config": model.config.to_dict(), "preprocess": {}, "class_names": ["vessel"],
            "channel_names": ["MRA"], "state_dict": model.state_dict()}


def test_round_trip_gives_the_same_weights(tmp_path):
    model = Random25DUNet(1, 1, **SMALL)
    path = save_checkpoint(_values(model), tmp_path / "run" / "path1.pt")
    loaded = model_from_checkpoint(load_checkpoint(path), path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["path1.pt"]  # no temp file left


def test_a_checkpoint_from_before_the_filter_settings_keeps_its_filtration(tmp_path):
    old = Random25DUNet(1, 1, filter_init="ramlak", filter_fixed_dc=False, filter_radius=12, **SMALL)
    values = _values(old)
    for key in ("filter_init", "filter_fixed_dc"):
        del values["model_config"][key]  # as written by vol25d before they existed
    path = save_checkpoint(values, tmp_path / "path2.pt")
    loaded = model_from_checkpoint(load_checkpoint(path), path)
    assert (loaded.config.filter_init, loaded.config.filter_fixed_dc) == ("ramlak", False)
    torch.testing.assert_close(loaded.filtration.effective_kernel(), old.filtration.kernel)


def test_a_pickled_object_is_refused(tmp_path):
    # Any class outside torch's weights-only allow-list could run code when unpickled: it must be refused.
    torch.save({"format": "vol25d-checkpoint", "payload": argparse.Namespace(command="rm -rf /")}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="evil.pt is not a vol25d checkpoint"):
        load_checkpoint(tmp_path / "evil.pt")


def test_another_torch_file_is_not_ours(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="other.pt is not a vol25d checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt does not exist"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_weights_that_do_not_fit_the_settings(tmp_path):
    values = _values(Random25DUNet(1, 1, **SMALL))
    values["model_config"]["out_channels"] = 3
    path = save_checkpoint(values, tmp_path / "path2.pt")
    with pytest.raises(InputError, match="wrong shape"):
        model_from_checkpoint(load_checkpoint(path), path)
    del values["state_dict"]["filtration.kernel"]
    path = save_checkpoint(values, tmp_path / "path2.pt")
    with pytest.raises(InputError, match="missing"):
        model_from_checkpoint(load_checkpoint(path), path)


def test_an_old_checkpoint_without_a_reconstruction_loads_as_the_seed_one(tmp_path):
    values = _values(Random25DUNet(1, 1, **SMALL))
    del values["model_config"]["reconstruction"]  # as written before the setting existed
    path = save_checkpoint(values, tmp_path / "path1.pt")
    loaded = model_from_checkpoint(load_checkpoint(path), path)
    assert loaded.config.reconstruction == "seed" and loaded.explanation is None


def test_an_image_reconstruction_round_trips_with_its_margin_and_softness(tmp_path):
    model = Random25DUNet(1, 1, reconstruction="image", **SMALL)
    with torch.no_grad():
        model.explanation.margin.fill_(0.25)
    path = save_checkpoint(_values(model), tmp_path / "path2.pt")
    loaded = model_from_checkpoint(load_checkpoint(path), path)
    assert loaded.config.reconstruction == "image"
    assert float(loaded.explanation.margin.detach()) == pytest.approx(0.25)


def test_a_checkpoint_that_saved_memory_controls_loads_and_runs_with_the_given_ones(tmp_path):
    """Before they became runtime arguments, every checkpoint carried view_chunk and checkpoint_views."""
    model = Random25DUNet(1, 1, **SMALL)
    values = _values(model)
    values["model_config"].update(view_chunk=2, checkpoint_views=1)  # as written by vol25d 0.x
    path = save_checkpoint(values, tmp_path / "path2.pt")
    loaded = model_from_checkpoint(load_checkpoint(path), path)
    assert "view_chunk" not in loaded.config.to_dict()
    assert (loaded.view_chunk, loaded.checkpoint_views) == (16, 0)  # the defaults, not the saved ones
    x = torch.rand(1, 1, 8, 8, 8)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
