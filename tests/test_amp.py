"""Mixed precision as CUDA runs it, on the CPU: bf16 autocast on, and the ops CUDA autocast refuses refused
(the ``cuda_autocast`` fixture). Training, validation, path 2's view cache and prediction must all run."""

import numpy as np
import pytest
import torch

from conftest import TINY_MODEL
from vol25d.device import amp_enabled, autocast
from vol25d.infer import Predictor
from vol25d.io import read_volume
from vol25d.model import ModelConfig
from vol25d.train import Objective, TrainConfig, train


def test_the_fixture_refuses_what_cuda_refuses(cuda_autocast):
    probabilities, label = torch.full((1, 1, 4, 4, 4), 0.5), torch.ones(1, 1, 4, 4, 4)
    with autocast(torch.device("cpu"), True):
        with pytest.raises(RuntimeError, match="unsafe to autocast"):
            torch.nn.functional.binary_cross_entropy(probabilities, label)


@pytest.mark.parametrize("capability, expected", [((9, 0), True), ((8, 0), True), ((7, 5), False), ((7, 0), False)])
def test_amp_runs_on_gpus_with_bf16_only(monkeypatch, caplog, capability, expected):
    import vol25d.device

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"sm {capability}")
    monkeypatch.setattr(vol25d.device, "_warned_bf16", False)
    assert amp_enabled(torch.device("cuda"), True) is expected
    assert not amp_enabled(torch.device("cuda"), False)
    assert not amp_enabled(torch.device("cpu"), True)
    assert ("no bf16 arithmetic" in caplog.text) is not expected


def test_objective_is_float32_inside_autocast(cuda_autocast):
    output = torch.rand(1, 1, 6, 6, 6, requires_grad=True)
    label = (torch.rand(1, 1, 6, 6, 6) > 0.5).float()
    objective = Objective(TrainConfig(loss="dice+bce"))
    with autocast(torch.device("cpu"), True):
        loss = objective(output.to(torch.bfloat16), label, output[:, :, :2].to(torch.bfloat16), label[:, :, :2])
    assert loss.dtype == torch.float32
    reference = objective(output.detach(), label, output.detach()[:, :, :2], label[:, :, :2])
    assert float(loss) == pytest.approx(float(reference), rel=2e-2)
    loss.backward()
    assert torch.isfinite(output.grad).all()


def test_both_paths_and_prediction_under_cuda_autocast(cuda_autocast, phantoms, tmp_path, monkeypatch):
    from vol25d.model import ViewUNet
    from vol25d.ops.backend import kernels_for

    # U runs in bf16 under autocast; F, R and T in float32 (the head's steep threshold needs the digits).
    unet_dtypes, backprojected = set(), set()
    real_unet, kernels = ViewUNet.forward, kernels_for(torch.zeros(1))  # the kernels CPU tensors run
    monkeypatch.setattr(ViewUNet, "forward", lambda self, v: (out := real_unet(self, v), unet_dtypes.add(out.dtype))[0])
    for name in ("backproject", "backproject_explained"):  # R of the seed's and of the explained reconstruction
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda v, *a, real=real, **k: backprojected.add(v.dtype) or real(v, *a, **k))
    model = ModelConfig(**TINY_MODEL)
    one = TrainConfig(path=1, epochs=1, steps_per_case=1, amp=True, device="cpu")
    first = train(phantoms, tmp_path, one, model_config=model, quiet=True)
    two = TrainConfig(path=2, epochs=1, steps_per_case=1, amp=True, device="cpu")
    second = train(phantoms, tmp_path, two, init=first.checkpoint, quiet=True)
    assert np.isfinite(first.best_dice) and np.isfinite(second.best_dice)
    predictor = Predictor.load(second.checkpoint, device="cpu", amp=True)
    image = read_volume(sorted((phantoms / "imagesTr").iterdir())[0])
    probabilities = predictor.probabilities([image], tta=True)
    assert probabilities.dtype == np.float32 and probabilities.shape == (*image.shape, 1)
    assert np.isfinite(probabilities).all() and 0.0 <= probabilities.min() <= probabilities.max() <= 1.0
    assert unet_dtypes == {torch.bfloat16} and backprojected == {torch.float32}


def test_every_loss_goes_through_the_objective():
    """CUDA autocast refuses BCE: only :class:`Objective` (float32, autocast off) may call it, in the package
    and in the experiments, so a new loss call cannot bring the crash back."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    callers = []
    for path in sorted([*root.glob("vol25d/**/*.py"), *root.glob("experiments/*.py")]):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for child in ast.walk(node):
                    child.owner = getattr(child, "owner", node.name)
        for node in ast.walk(tree):
            name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
            if name in ("binary_cross_entropy", "BCELoss"):
                callers.append((path.relative_to(root).as_posix(), getattr(node, "owner", None)))
    assert callers and set(callers) == {("vol25d/train/objective.py", "Objective")}
