"""vol25d.train with the explained reconstruction: path 1 trains U, F and its margin and softness; path 2
trains F, T and them on cached views (U's probabilities and the image's own views); the checkpoints say so."""

import torch

from vol25d.checkpoint import Checkpoint
from vol25d.model import ModelConfig
from vol25d.train import TrainConfig, train

from conftest import TINY_MODEL


def test_both_paths_train_the_image_reconstruction(phantoms, tmp_path):
    model_config = ModelConfig(**{**TINY_MODEL, "channels": tuple(TINY_MODEL["channels"]),
                                  "strides": tuple(TINY_MODEL["strides"])}, reconstruction="image")
    base = dict(epochs=1, steps_per_case=1, amp=False, device="cpu", seed=0)
    first = train(phantoms, tmp_path, TrainConfig(path=1, **base), model_config=model_config, quiet=True)
    second = train(phantoms, tmp_path, TrainConfig(path=2, **base), init=first.checkpoint, quiet=True)
    start = torch.load(tmp_path / "path1.pt", weights_only=True)
    end = Checkpoint.load(second.checkpoint)
    assert start["model_config"]["reconstruction"] == end.model_config["reconstruction"] == "image"
    # Path 1 moved the margin and softness off their start; path 2 moved them again, and left U alone.
    assert abs(float(start["state_dict"]["explanation.margin"][0]) - 0.1) > 1e-6
    assert abs(float(start["state_dict"]["explanation.log_softness"][0].exp()) - 0.3) > 1e-6
    assert not torch.equal(start["state_dict"]["explanation.margin"], end.state_dict["explanation.margin"])
    unet = [k for k in start["state_dict"] if k.startswith("unet.")]
    assert all(torch.equal(start["state_dict"][k], end.state_dict[k]) for k in unet)
    model = end.model().eval()
    with torch.no_grad():
        out = model(torch.rand(1, 1, 12, 12, 12))
    assert out.shape == (1, 1, 12, 12, 12) and bool(((out >= 0) & (out <= 1)).all())
