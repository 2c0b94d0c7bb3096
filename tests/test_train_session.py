"""Training under a time limit: train's deadline stops a path cleanly and resume continues it; train_both_paths
picks up a run folder where an earlier call stopped."""

import csv
import time

import torch

from conftest import TINY_MODEL
from vol25d.checkpoint import Checkpoint
from vol25d.model import ModelConfig
from vol25d.train import TrainConfig, train, train_both_paths

MODEL = ModelConfig(**TINY_MODEL)


def cpu(path, **settings):
    return TrainConfig(path=path, device="cpu", amp=False, **{"epochs": 1, "steps_per_case": 1, **settings})


def epochs_in(metrics):
    with metrics.open() as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_a_deadline_stops_after_an_epoch_and_resume_finishes_the_path(phantoms, tmp_path):
    settings = cpu(1, epochs=3, seed=3)
    bests = []
    stopped = train(phantoms, tmp_path, settings, model_config=MODEL, quiet=True, deadline=time.time(),
                    on_best=lambda checkpoint, epoch, dice: bests.append((checkpoint.name, epoch, checkpoint.exists())))
    assert stopped.out_of_time and stopped.epochs == 1  # one epoch runs; the next would end past the deadline
    assert Checkpoint.load(tmp_path / "path1_last.pt").epoch == 1 and epochs_in(tmp_path / "path1_metrics.csv") == [1]
    assert bests[0] == ("path1.pt", 1, True)  # called once pathN.pt of the improved epoch is written
    finished = train(phantoms, tmp_path, settings, model_config=MODEL, quiet=True, resume=True,
                     deadline=time.time() + 3600)
    assert not finished.out_of_time and finished.epochs == 3
    assert epochs_in(tmp_path / "path1_metrics.csv") == [1, 2, 3]


def test_train_both_paths_resumes_the_path_in_progress_then_starts_path_2(phantoms, tmp_path):
    path1, path2 = cpu(1, epochs=2, seed=4), cpu(2, epochs=2, seed=4)
    past = time.time() - 1

    def call(**kwargs):
        return train_both_paths(phantoms, tmp_path, path1, path2, model_config=MODEL, quiet=True, **kwargs)

    nothing = call(deadline=past)
    assert (nothing.path1, nothing.path2, nothing.trained, nothing.done) == (None, None, False, False)
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # past the deadline, nothing starts

    first = call(deadline=past, start_anyway=True)  # one epoch, then out of time
    assert first.trained and first.path1.out_of_time and first.path1.epochs == 1 and first.path2 is None
    epoch_1 = (tmp_path / "path1_metrics.csv").read_text().splitlines()[1]

    second = call(deadline=past, start_anyway=True)  # path 1 resumes and ends; path 2 does not start past the deadline
    assert second.path1.epochs == 2 and not second.path1.out_of_time and second.path2 is None
    lines = (tmp_path / "path1_metrics.csv").read_text().splitlines()
    assert lines[1] == epoch_1 and epochs_in(tmp_path / "path1_metrics.csv") == [1, 2]  # continued, not restarted
    assert not (tmp_path / "path2_last.pt").exists()

    third = call(deadline=past, start_anyway=True)  # path 1 is skipped, path 2 starts and stops for time
    assert third.path1.epochs == 2 and third.path2.out_of_time and third.path2.epochs == 1 and not third.done
    assert epochs_in(tmp_path / "path1_metrics.csv") == [1, 2] and epochs_in(tmp_path / "path2_metrics.csv") == [1]

    fourth = call()  # path 2 resumes (from path1.pt's preprocessing) and ends
    assert fourth.done and fourth.path2.epochs == 2 and epochs_in(tmp_path / "path2_metrics.csv") == [1, 2]
    assert Checkpoint.load(tmp_path / "path2.pt").unet_frozen
    before = torch.load(tmp_path / "path2_last.pt", weights_only=True)["state_dict"]

    again = call()
    assert again.done and not again.trained  # both finished: nothing trains
    after = torch.load(tmp_path / "path2_last.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
