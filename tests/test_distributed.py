"""Training on several processes: torchrun through the command line, and ``train`` in two spawned gloo
processes on CPU whose final weights are compared (tiny phantoms, a tiny model)."""

import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import nibabel as nib
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml

from vol25d.distributed import shard

ENV = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
RUN_FILES = {"config.yaml", "path1.pt", "path1_last.pt", "path1_metrics.csv", "progress.png"}


def _weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def _same(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run).parent if p.parent.parent.name == "tb" else p.relative_to(run))
            for p in run.rglob("*") if p.is_file()}


@pytest.mark.parametrize("count, world", [(5, 2), (3, 2), (2, 4), (6, 3), (4, 1)])
def test_shard_gives_every_process_as_many_cases_and_covers_all(count, world):
    indices = list(range(10, 10 + count))
    shares = [shard(indices, rank, world) for rank in range(world)]
    assert len({len(share) for share in shares}) == 1
    assert len(shares[0]) == -(-count // world)
    assert set().union(*shares) == set(indices)
    if count % world == 0:
        assert sorted(sum(shares, [])) == indices  # nothing repeated when the cases split evenly
    assert shard(indices, 0, 1) == indices


def test_torchrun_trains_and_a_single_process_predicts_with_the_checkpoint(phantoms, tiny_config, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "vol25d", "-q", "train", "--path", "1", "--data", str(phantoms), "--out", str(run),
               "--config", str(tiny_config), "--epochs", "1", "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    # Rank 0 alone reports and writes: one result line, the files of a single-process run, one events file.
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("path 1: 1 epochs"), result.stdout
    assert _files(run) == RUN_FILES | {"tb/path1"}
    assert len(list((run / "tb" / "path1").iterdir())) == 1
    settings = yaml.safe_load((run / "config.yaml").read_text())["path1"]
    assert settings["processes"] == 2 and settings["volumes_per_step"] == 2
    assert (run / "path1_metrics.csv").read_text().count("\n") == 2
    assert not any(key.startswith("module.") for key in _weights(run / "path1.pt"))

    source = sorted((phantoms / "imagesTr").iterdir())[0]
    predicted = subprocess.run([sys.executable, "-m", "vol25d", "-q", "predict", "-i", str(source), "-o",
                                str(tmp_path / "mask.nii.gz"), "-m", str(run / "path1.pt"), "--device", "cpu"],
                               capture_output=True, text=True, env=ENV, timeout=300)
    assert predicted.returncode == 0, predicted.stderr
    assert nib.load(tmp_path / "mask.nii.gz").shape == nib.load(source).shape


def _worker(rank: int, world: int, port: int, phantoms: Path, tiny_config: Path, out: Path) -> None:
    """One process: joins a gloo group, then trains path 1 straight, path 1 interrupted and resumed, and
    path 2; after each it writes the weights its DDP-wrapped model ended with to ``out``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    import vol25d.train as training
    import vol25d.train.loop as loop
    from vol25d.model import ModelConfig

    wrapped = []
    real_ddp, real_epoch = loop.DistributedDataParallel, loop._epoch

    def recording_ddp(module, **options):
        wrapped.append(module)
        return real_ddp(module, **options)

    def interrupting_epoch(stage, net, optimizer, scheduler, shuffle, bar, device):
        if "epoch 2/" in bar.description:
            raise KeyboardInterrupt  # on every process at the same point, after epoch 1 was saved
        return real_epoch(stage, net, optimizer, scheduler, shuffle, bar, device)

    def final_weights(name: str, result) -> None:
        model = getattr(wrapped[-1], "model", wrapped[-1])  # path 2 wraps the model in its cached-views step
        torch.save({"state_dict": model.state_dict(), "best": [result.best_epoch, result.best_dice]},
                   out / f"{name}_rank{rank}.pt")

    loop.DistributedDataParallel = recording_ddp
    settings = yaml.safe_load(tiny_config.read_text())
    model = ModelConfig.from_dict(settings["model"])
    first = training.TrainConfig(**settings["train"], path=1, epochs=2, device="cpu", seed=5)
    second = training.TrainConfig(**settings["train"], path=2, epochs=1, device="cpu", seed=5)

    final_weights("straight", training.train(phantoms, out / "straight", first, model_config=model, quiet=True))
    loop._epoch = interrupting_epoch
    with pytest.raises(KeyboardInterrupt):
        training.train(phantoms, out / "resumed", first, model_config=model, quiet=True)
    loop._epoch = real_epoch
    final_weights("resumed", training.train(phantoms, out / "resumed", first, resume=True, quiet=True))
    path1 = out / "straight" / "path1.pt"
    final_weights("path2", training.train(phantoms, out / "straight", second, init=path1, quiet=True))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_end_alike_write_once_and_resume_exactly(phantoms, tiny_config, tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), phantoms, tiny_config, tmp_path), nprocs=2, join=True)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"

    for name, checkpoint in (("straight", straight / "path1_last.pt"), ("resumed", resumed / "path1_last.pt"),
                             ("path2", straight / "path2_last.pt")):
        ranks = [torch.load(tmp_path / f"{name}_rank{rank}.pt", weights_only=True) for rank in (0, 1)]
        assert _same(ranks[0]["state_dict"], ranks[1]["state_dict"]), f"{name}: the processes' weights differ"
        assert _same(ranks[0]["state_dict"], _weights(checkpoint)), f"{name}: rank 0's weights are not the checkpoint's"
        assert ranks[0]["best"] == ranks[1]["best"]

    # Interrupted after epoch 1 and resumed on two processes: the run an uninterrupted one is.
    assert _same(_weights(straight / "path1_last.pt"), _weights(resumed / "path1_last.pt"))
    assert _same(_weights(straight / "path1.pt"), _weights(resumed / "path1.pt"))
    rows = [[line.split(",")[:3] for line in (run / "path1_metrics.csv").read_text().splitlines()] for run in (straight, resumed)]
    assert rows[0] == rows[1] and len(rows[0]) == 3

    # Each process draws its own directions; the checkpoint keeps every process's generator for --resume.
    saved = torch.load(straight / "path1_last.pt", weights_only=True)
    assert saved["world_size"] == 2 and len(saved["rng"]["ranks"]) == 2
    assert torch.equal(saved["rng"]["directions"], saved["rng"]["ranks"][0]["directions"])
    assert not torch.equal(saved["rng"]["ranks"][0]["directions"], saved["rng"]["ranks"][1]["directions"])

    # Path 2 trained F and T on both processes and left U as path 1 trained it.
    first, second = _weights(straight / "path1.pt"), _weights(straight / "path2_last.pt")
    assert all(torch.equal(first[k], second[k]) for k in first if k.startswith("unet."))
    assert not torch.equal(first["filtration.kernel"], second["filtration.kernel"])

    # Only rank 0 wrote: the files of a single-process run and one TensorBoard events file per path.
    assert _files(straight) == RUN_FILES | {"path2.pt", "path2_last.pt", "path2_metrics.csv", "tb/path1", "tb/path2"}
    assert _files(resumed) == RUN_FILES | {"tb/path1"}
    assert len(list((straight / "tb" / "path1").iterdir())) == 1
    assert len(list((straight / "tb" / "path2").iterdir())) == 1
