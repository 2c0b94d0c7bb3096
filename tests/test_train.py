"""vol25d.train.train, called as a library: what each path trains, resume, and the choice of the best epoch."""

import csv

import pytest
import torch
import yaml

from conftest import TINY_MODEL
from vol25d.checkpoint import Checkpoint, MetricsLog
from vol25d.errors import InputError
from vol25d.model import ModelConfig, Random25DUNet
from vol25d.train import DEFAULT_EPOCHS, TrainConfig, lr_schedule, paths, train

MODEL = ModelConfig(**TINY_MODEL)


def cpu(path, **settings):
    return TrainConfig(path=path, device="cpu", amp=False, **{"epochs": 1, "steps_per_case": 1, **settings})


def weights(path):
    return Checkpoint.load(path).state_dict


def changed(before: dict, after: dict, prefix: str) -> bool:
    keys = [k for k in before if k.startswith(prefix)]
    assert keys, prefix
    return any(not torch.equal(before[k], after[k]) for k in keys)


@pytest.fixture(scope="module")
def path1(phantoms, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    return out, train(phantoms, out, cpu(1, epochs=2, seed=1), model_config=MODEL, quiet=True)


def test_path_1_trains_u_f_and_t(path1, phantoms, tmp_path):
    out, result = path1
    torch.manual_seed(1)  # the seed train() draws the fresh weights with
    fresh = Random25DUNet.from_config(ModelConfig(**{**TINY_MODEL, "in_channels": 1, "out_channels": 1})).state_dict()
    still = weights(train(phantoms, tmp_path, cpu(1, seed=1, lr=0.0), model_config=MODEL, quiet=True).last_checkpoint)
    assert all(torch.equal(fresh[k], still[k]) for k in fresh)  # the weights it starts from, as drawn above
    trained = weights(out / "path1_last.pt")
    assert changed(fresh, trained, "unet.") and changed(fresh, trained, "filtration.") and changed(fresh, trained, "head.")
    assert result.epochs == 2 and result.checkpoint == out / "path1.pt" and (out / "path1.pt").exists()


def test_path_2_changes_no_u_weight_and_trains_f_and_t(path1, phantoms, tmp_path):
    out, first = path1
    second = train(phantoms, tmp_path, cpu(2, epochs=2), init=first.checkpoint, quiet=True)
    before, after = weights(first.checkpoint), weights(second.last_checkpoint)
    assert not changed(before, after, "unet.")
    assert changed(before, after, "filtration.") and changed(before, after, "head.context.")
    assert changed(before, after, "head.scale") and changed(before, after, "explanation.")
    assert Checkpoint.load(second.checkpoint).unet_frozen is True


def test_unset_epochs_take_the_default_of_the_device_trained_on(phantoms, tmp_path, monkeypatch):
    assert [TrainConfig(path=k).for_device(d).epochs for k in (1, 2) for d in ("cpu", "cuda:1")] == [
        DEFAULT_EPOCHS["cpu"][1], DEFAULT_EPOCHS["cuda"][1], DEFAULT_EPOCHS["cpu"][2], DEFAULT_EPOCHS["cuda"][2]]
    assert TrainConfig(path=1, epochs=7).for_device("cpu").epochs == 7
    monkeypatch.setitem(DEFAULT_EPOCHS, "cpu", {1: 2, 2: 1})  # train() resolves them, and the run folder records it
    first = train(phantoms, tmp_path, cpu(1, epochs=None), model_config=MODEL, quiet=True)
    second = train(phantoms, tmp_path, cpu(2, epochs=None), init=first.checkpoint, quiet=True)
    assert (first.epochs, second.epochs) == (2, 1)
    record = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (record["path1"]["train"]["epochs"], record["path2"]["train"]["epochs"]) == (2, 1)


def test_the_train_help_states_the_default_epochs(capsys):
    from vol25d.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    cpu, cuda = DEFAULT_EPOCHS["cpu"], DEFAULT_EPOCHS["cuda"]
    assert f"on the CPU {cpu[1]} for path 1 and {cpu[2]} for path 2" in text and f"{cuda[1]} on a GPU" in text
    assert cuda[1] == cuda[2]  # the help gives one GPU figure for both paths


@pytest.mark.parametrize("epochs", [0, 2.5, "ten", True])
def test_epochs_must_be_a_whole_number(epochs):
    with pytest.raises(InputError, match="epochs must be a whole number"):
        TrainConfig(epochs=epochs)


def test_path_2_needs_a_path_1_checkpoint(phantoms, tmp_path):
    with pytest.raises(InputError, match="--init"):
        train(phantoms, tmp_path, cpu(2))


def test_resume_ends_with_the_weights_of_an_uninterrupted_run(phantoms, tmp_path, monkeypatch):
    settings = cpu(1, epochs=3, seed=2)
    straight = train(phantoms, tmp_path / "straight", settings, model_config=MODEL, quiet=True)
    real_append, rows = MetricsLog.append, []

    def killed_in_epoch_2(self, *row):  # as a kill between epoch 2's steps and its checkpoint
        if rows:
            raise KeyboardInterrupt
        rows.append(row)
        real_append(self, *row)

    monkeypatch.setattr(MetricsLog, "append", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(phantoms, tmp_path / "killed", settings, model_config=MODEL, quiet=True)
    monkeypatch.setattr(MetricsLog, "append", real_append)
    assert Checkpoint.load(tmp_path / "killed" / "path1_last.pt").epoch == 1
    resumed = train(phantoms, tmp_path / "killed", settings, model_config=MODEL, resume=True, quiet=True)
    a, b = weights(straight.last_checkpoint), weights(resumed.last_checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "straight" / "path1_metrics.csv").read_text().count("\n") == 4
    assert (tmp_path / "killed" / "path1_metrics.csv").read_text().count("\n") == 4


def test_resume_without_a_last_checkpoint_is_one_sentence(phantoms, tmp_path):
    with pytest.raises(InputError, match="no .*path1_last.pt to resume from"):
        train(phantoms, tmp_path, cpu(1), model_config=MODEL, resume=True)


def test_the_best_epoch_by_validation_dice_is_path_n_pt(path1):
    out, result = path1
    with (out / "path1_metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    scores = [float(row["val_dice"]) for row in rows]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i)) + 1
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    assert result.best_epoch == best and result.best_dice == pytest.approx(scores[best - 1], abs=1e-6)
    saved = Checkpoint.load(out / "path1.pt")
    assert saved.epoch == best and saved.best_epoch == best


@pytest.mark.parametrize("path", [2, 1])
def test_training_from_a_trained_model_keeps_it_unless_an_epoch_beats_it_on_validation(path1, phantoms, tmp_path,
                                                                                     monkeypatch, path):
    first = path1[1]
    scores = iter([0.9, 0.5, 0.4])  # the starting model's validation Dice, then each epoch's: training made it worse
    monkeypatch.setattr(paths, "validate", lambda *args, **kwargs: next(scores))
    result = train(phantoms, tmp_path, cpu(path, epochs=2), init=first.checkpoint, quiet=True)
    assert (result.best_epoch, result.best_dice) == (0, pytest.approx(0.9))
    saved = Checkpoint.load(result.checkpoint)
    assert (saved.path, saved.epoch, saved.best_epoch) == (path, 0, 0)
    start, best = weights(first.checkpoint), weights(result.checkpoint)
    assert all(torch.equal(start[k], best[k]) for k in start)  # pathN.pt is the model it started from
    assert changed(start, weights(result.last_checkpoint), "filtration.")  # while the epochs did train


def test_path_2_takes_the_best_epoch_once_one_beats_its_starting_model(path1, phantoms, tmp_path, monkeypatch):
    first = path1[1]
    scores = iter([0.3, 0.5, 0.4])
    monkeypatch.setattr(paths, "validate", lambda *args, **kwargs: next(scores))
    result = train(phantoms, tmp_path, cpu(2, epochs=2), init=first.checkpoint, quiet=True)
    assert (result.best_epoch, result.best_dice) == (1, pytest.approx(0.5))
    assert Checkpoint.load(result.checkpoint).epoch == 1


def test_the_schedule_warms_up_then_decays_to_zero():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = lr_schedule(optimizer, total_steps=100)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[0] == pytest.approx(0.2) and max(rates) == pytest.approx(1.0)
    assert rates.index(max(rates)) == 4 and rates[-1] < 0.01
    assert all(a >= b for a, b in zip(rates[4:], rates[5:]))


def test_f_and_t_learn_at_small_lr_factor_times_us_rate_in_path_1(phantoms, tmp_path, monkeypatch):
    rates = {}
    real = torch.optim.AdamW

    def recording(groups, **kwargs):
        rates["groups"] = [group["lr"] for group in groups]
        rates["sizes"] = [sum(p.numel() for p in group["params"]) for group in groups]
        return real(groups, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", recording)
    result = train(phantoms, tmp_path, cpu(1, lr=1e-3, small_lr_factor=4.0), model_config=MODEL, quiet=True)
    # F and T, then U, then T's image correction (a convolution starting at zero) at U's rate.
    assert rates["groups"] == [pytest.approx(4e-3), pytest.approx(1e-3), pytest.approx(1e-3)]
    model = Checkpoint.load(result.checkpoint).model(result.checkpoint)
    assert rates["sizes"][2] == model.head.context.weight.numel() and model.head.context.weight.any()  # it learnt
    assert rates["sizes"][0] + rates["sizes"][1] + rates["sizes"][2] == sum(p.numel() for p in model.parameters())
    with pytest.raises(InputError, match="small_lr_factor"):
        TrainConfig(small_lr_factor=0)


def test_the_memory_controls_reach_the_model_and_change_memory_not_the_result(phantoms, tmp_path, monkeypatch):
    """view_chunk splits the views of validation (and of path 2's cache) without changing a number;
    checkpoint_views makes path 1 recompute U's activations in the backward, chunk by chunk."""
    import vol25d.model

    plain = train(phantoms, tmp_path / "plain", cpu(1, seed=3), model_config=MODEL, quiet=True)
    chunked = train(phantoms, tmp_path / "chunked", cpu(1, seed=3, view_chunk=1), model_config=MODEL, quiet=True)
    a, b = weights(plain.last_checkpoint), weights(chunked.last_checkpoint)
    assert all(torch.equal(a[k], b[k]) for k in a) and chunked.best_dice == plain.best_dice
    real, calls = vol25d.model.checkpoint, []
    monkeypatch.setattr(vol25d.model, "checkpoint", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    saving = train(phantoms, tmp_path / "saving", cpu(1, seed=3, checkpoint_views=1), model_config=MODEL, quiet=True)
    steps = len(Checkpoint.load(saving.checkpoint).train_cases)
    assert len(calls) == steps * MODEL.views  # one recomputed chunk per view per step
    saved = Checkpoint.load(saving.checkpoint)
    assert "checkpoint_views" not in saved.model_config and saved.train_config["checkpoint_views"] == 1
    with pytest.raises(InputError, match="view_chunk"):
        cpu(1, view_chunk=0)


def test_the_schedule_by_fraction_of_training_matches_the_one_by_steps():
    from vol25d.train import warmup_cosine

    assert warmup_cosine(0.0) == 0.0 and warmup_cosine(0.025) == pytest.approx(0.5)
    assert warmup_cosine(0.05) == pytest.approx(1.0) and warmup_cosine(1.0) == pytest.approx(0.0)
    rates = [warmup_cosine(i / 100) for i in range(5, 101)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = lr_schedule(optimizer, total_steps=100)
    for step in range(100):
        if step >= 5:  # past the warm-up the two agree, (step - 5) / 95 of the decay done
            assert optimizer.param_groups[0]["lr"] == pytest.approx(warmup_cosine(0.05 + 0.95 * (step - 5) / 95))
        optimizer.step()
        schedule.step()


@pytest.mark.parametrize("copies", [-1, 1.5, True])
def test_path2_copies_must_be_a_whole_number(copies):
    with pytest.raises(InputError, match="path2_copies must be a whole number"):
        TrainConfig(path=2, path2_copies=copies)


def test_path2_copies_need_the_augmentation():
    with pytest.raises(InputError, match="path2_copies = 2 needs the augmentation on"):
        TrainConfig(path=2, path2_copies=2, augment={"enabled": False})


def test_path_2_on_augmented_copies_trains_on_every_case_and_copy_with_the_same_steps(path1, phantoms, tmp_path):
    from vol25d.data.dataset import load_dataset, split_cases
    from vol25d.data.prepare import prepare_cases

    out, first = path1
    dataset = load_dataset(phantoms)
    train_cases, val_cases = split_cases(dataset.cases, 0.2, 0)
    train_data, val_data, _ = prepare_cases(dataset, train_cases, val_cases, quiet=True)
    saved = Checkpoint.load(first.checkpoint)
    model = Random25DUNet.from_config(ModelConfig(**saved.model_config))
    model.load_state_dict(saved.state_dict)
    cases = paths.Cases(train_data, val_data, torch.device("cpu"), False)
    config = cpu(2, steps_per_case=3, path2_copies=2)
    stage = paths.path2(model, cases, config, quiet=True)
    order = stage.order(torch.Generator().manual_seed(0))
    assert len(order) == stage.steps_per_epoch == 3 * len(train_data)  # the same steps as without copies
    assert sorted(set(order)) == list(range(3 * len(train_data)))  # every case (k·3) and its 2 copies drawn
    plain = paths.path2(model, cases, cpu(2, steps_per_case=3), quiet=True)
    assert sorted(set(plain.order(torch.Generator().manual_seed(0)))) == list(range(len(train_data)))
    for key in order[:4]:
        loss = stage.step(stage.net, key)
        assert torch.isfinite(loss) and loss.requires_grad
    # the run through train() and its command line
    second = train(phantoms, tmp_path, cpu(2, path2_copies=1), init=first.checkpoint, quiet=True)
    assert changed(weights(first.checkpoint), weights(second.last_checkpoint), "filtration.")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["path2"]["train"]["path2_copies"] == 1
