"""vol25d.settings: the settings and their rules, the same for ``vol25d train`` and a notebook calling
vol25d.train.train, without torch."""

import subprocess
import sys

import pytest
import yaml

from vol25d.cli import main
from vol25d.errors import InputError
from vol25d.settings import (FINE_TUNE_LR, ModelConfig, TrainConfig, check_start, model_settings_asked,
                             training_settings)


def test_the_settings_and_the_cli_parser_load_without_torch():
    code = ("import sys, vol25d.settings, vol25d.cli; vol25d.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'vol25d.model', 'vol25d.train') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _cli_error(args, capsys) -> str:
    """The one line ``vol25d train …`` prints for a refused setting (run in this process), without "error: "."""
    capsys.readouterr()
    assert main(["train", *map(str, args)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0].removeprefix("error: ")


def _notebook_error(tmp_path, config, **arguments) -> str:
    from vol25d.train import train

    with pytest.raises(InputError) as raised:
        train(tmp_path / "data", tmp_path / "run", config, quiet=True, **arguments)
    return str(raised.value)


# What a notebook passes to vol25d.train.train, and the same asked of `vol25d train`.
REFUSED = [
    ("path-2-model", dict(config=TrainConfig(path=2, device="cpu"), model_config=ModelConfig(directions=32)),
     ["--path", 2, "--device", "cpu", "--directions", 32], ["path 2 keeps the model settings", "drop directions"]),
    ("path-2-without-init", dict(config=TrainConfig(path=2, device="cpu"), init=None),
     ["--path", 2, "--device", "cpu"], ["path 2 starts from a path-1 checkpoint"]),
    ("init-preprocess", dict(config=TrainConfig(path=1, device="cpu"), preprocess_options={"max_voxels": 0}),
     ["--path", 1, "--device", "cpu", "--max-voxels", 0], ["--init keeps the preprocessing", "drop max_voxels"]),
    ("init-projection", dict(config=TrainConfig(path=1, device="cpu"), model_config=ModelConfig(projection="sum",
                                                                                                 reconstruction="seed")),
     ["--path", 1, "--device", "cpu", "--projection", "sum"], ["drop projection"]),
    ("init-and-resume", dict(config=TrainConfig(path=1, device="cpu"), resume=True),
     ["--path", 1, "--device", "cpu", "--resume"], ["--resume", "--init"]),
]


@pytest.mark.parametrize("notebook, flags, fragments", [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_a_notebook_gets_the_clis_sentence_for_a_setting_the_rules_refuse(tmp_path, capsys, notebook, flags, fragments):
    init = tmp_path / "path1.pt"  # the rules refuse before anything is read: it need not exist
    arguments = {"init": init, **notebook}
    cli_init = ["--init", init] if arguments["init"] is not None else []
    from_notebook = _notebook_error(tmp_path, **arguments)
    from_cli = _cli_error(["--data", tmp_path / "data", "--out", tmp_path / "run", *cli_init, *flags], capsys)
    assert from_notebook == from_cli
    for fragment in fragments:
        assert fragment in from_cli, from_cli
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing read


def test_the_rules_allow_what_each_path_may_do():
    check_start(1)
    check_start(1, model=["directions", "projection"], preprocess=["max_voxels"])  # a fresh path 1 sets anything
    check_start(1, init="RUN/path2.pt", model=["directions", "views", "channels"])  # fine-tuning: checked on the checkpoint
    check_start(1, resume=True)
    check_start(2, init="RUN/path1.pt")
    check_start(2, init="RUN/path1.pt", resume=True)  # path 2 resumes with the path-1 checkpoint it started from
    check_start(2, init="RUN/path1.pt", model=["in_channels", "out_channels"])  # always the data's
    with pytest.raises(InputError, match="path must be 1 or 2; got 3"):
        check_start(3)


def test_a_model_config_asks_for_the_settings_it_changes():
    assert model_settings_asked(None) == []
    assert model_settings_asked(ModelConfig(in_channels=2, out_channels=3)) == []
    assert model_settings_asked(ModelConfig(directions=32, views=4)) == ["directions", "views"]


def test_bad_model_settings_are_input_errors_still_value_errors():
    for bad in (dict(views=100, directions=8), dict(projection="cone"), dict(head_image="yes")):
        with pytest.raises(InputError):
            ModelConfig(**bad)
    with pytest.raises(ValueError, match="unknown model settings"):
        ModelConfig.from_dict({"bogus": 1})
    with pytest.raises(InputError, match="view_chunk must be an integer ≥ 1"):
        TrainConfig(view_chunk=0)


def test_training_settings_take_the_defaults_then_the_file_then_the_flags(tmp_path):
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump({"train": {"epochs": 3, "seed": 4}, "model": {"directions": 16},
                                    "augment": {"enabled": False}, "preprocess": {"n4": True}}))
    settings = training_settings(1, config_file=file, train={"seed": 5}, model={"views": 4},
                                 preprocess={"max_voxels": 0})
    assert (settings.train.epochs, settings.train.seed, settings.train.path) == (3, 5, 1)
    assert settings.train.augment.enabled is False and settings.train.lr == TrainConfig().lr
    assert settings.model == ModelConfig(directions=16, views=4)
    assert settings.preprocess == {"n4": True, "max_voxels": 0}
    default = training_settings(2, init="RUN/path1.pt")
    assert default.train == TrainConfig(path=2) and default.model is None and default.preprocess is None


def test_fine_tuning_defaults_to_the_fine_tuning_learning_rate():
    assert training_settings(1, init="RUN/path2.pt").train.lr == FINE_TUNE_LR
    assert training_settings(1, init="RUN/path2.pt", train={"lr": 1e-2}).train.lr == 1e-2
    assert training_settings(2, init="RUN/path1.pt").train.lr == TrainConfig().lr


def test_a_bad_value_names_the_file_it_came_from(tmp_path):
    file = tmp_path / "config.yaml"
    file.write_text("model:\n  directions: 4\n  views: 8\n")
    with pytest.raises(InputError, match=r"config.yaml: views \(p = 8\) must not exceed directions \(m = 4\)"):
        training_settings(1, config_file=file)
    with pytest.raises(InputError, match="bad setting in the arguments"):
        training_settings(1, train={"steps_per_case": None})


def test_the_train_help_states_the_librarys_defaults(monkeypatch, capsys):
    """The help reads its defaults from the settings' classes: changed there, the help says so."""
    monkeypatch.setattr(ModelConfig, "directions", 65)
    monkeypatch.setattr(TrainConfig, "steps_per_case", 13)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "in [0, π) (default 65)" in text and "per epoch (default 13)" in text


def test_path_2_resumes_from_the_command_line_with_its_init(run, phantoms, tmp_path, capsys):
    """`--resume` and `--init` exclude each other in path 1 only: path 2 resumes with the checkpoint it started from."""
    import shutil

    from vol25d.checkpoint import Checkpoint

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert Checkpoint.load(copy / "path2_last.pt").epoch == 1
    assert main(["-q", "train", "--path", "2", "--data", str(phantoms), "--out", str(copy), "--init",
                 str(copy / "path1.pt"), "--resume", "--epochs", "2", "--device", "cpu"]) == 0, capsys.readouterr().err
    assert Checkpoint.load(copy / "path2_last.pt").epoch == 2
    assert (copy / "path2_metrics.csv").read_text().count("\n") == 3  # the header and both epochs
