"""The demo: synthetic MRA phantoms → train path 1 → train path 2 → predict held-out phantoms → evaluate.

Runs anywhere with no download. On a GPU it uses larger phantoms and longer training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from vol25d.data.phantom import write_phantom_dataset
from vol25d.evaluate import evaluate_folders, format_table
from vol25d.infer import predict
from vol25d.model import ModelConfig
from vol25d.device import resolve_device
from vol25d.train import TrainConfig, train

log = logging.getLogger(__name__)

__all__ = ["DemoSettings", "run_demo"]


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the demo: ``cpu()`` is ``vol25d train``'s defaults on 12 phantoms of 48³ (minutes on 2 CPU
    cores; measured times: docs/benchmarks.md, "The demo"), ``gpu()`` a larger run.

    ``path1_epochs``/``path2_epochs`` ``None``: training's default for the device
    (:data:`vol25d.train.DEFAULT_EPOCHS`); ``views`` ``None``: :class:`ModelConfig`'s.
    """

    train_cases: int
    test_cases: int
    size: int
    path1_epochs: int | None = None
    path2_epochs: int | None = None
    directions: int = 64
    views: int | None = None

    @classmethod
    def cpu(cls) -> "DemoSettings":
        return cls(train_cases=12, test_cases=4, size=48)

    @classmethod
    def gpu(cls) -> "DemoSettings":
        return cls(train_cases=40, test_cases=10, size=96, path1_epochs=30, path2_epochs=10, views=16)

    def model(self) -> ModelConfig:
        return ModelConfig(directions=self.directions, **({} if self.views is None else {"views": self.views}))


def run_demo(out: str | Path, settings: DemoSettings | None = None, *, device: str = "auto", seed: int = 0,
             quiet: bool = False) -> tuple[float, str]:
    """Run the whole pipeline into ``out``; return the mean Dice on the held-out phantoms and the printed
    evaluation table.

    Writes ``out/data`` (training phantoms), ``out/test`` (held-out phantoms, another seed), ``out/run``
    (the run folder), ``out/pred`` (predictions with a report PNG each) and ``out/evaluation.csv``.
    """
    out = Path(out)
    target = resolve_device(device)
    settings = settings or (DemoSettings.gpu() if target.type == "cuda" else DemoSettings.cpu())
    log.info("demo on %s: %d training phantoms of %d³, %d held out", target, settings.train_cases, settings.size,
             settings.test_cases)
    # Both tree layouts (make-phantoms' default): trained on the tangles alone, U learns where they lie.
    data = write_phantom_dataset(out / "data", settings.train_cases, settings.size, seed, layout="mixed")
    test = write_phantom_dataset(out / "test", settings.test_cases, settings.size, seed + 1000, layout="mixed")
    run = out / "run"
    train(data, run, TrainConfig(path=1, epochs=settings.path1_epochs, device=str(target), seed=seed),
          model_config=settings.model(), quiet=quiet)
    result = train(data, run, TrainConfig(path=2, epochs=settings.path2_epochs, device=str(target), seed=seed),
                   init=run / "path1.pt", quiet=quiet)
    predict(test / "imagesTr", out / "pred", result.checkpoint, report=True, device=str(target))
    rows, summary = evaluate_folders(out / "pred", test / "labelsTr", out / "evaluation.csv")
    return sum(r["dice"] for r in rows) / len(rows), format_table(rows, summary)
