"""vol25d.progress (bars where someone watches, log lines in logs, nothing when quiet) and where the long loops
use it: reading and preprocessing, training (one bar per path), path 2's view cache, predict; and
RUN/progress.png (vol25d.train.curves)."""

import logging
import re
import sys
import types

import pytest

from conftest import TINY_MODEL
from vol25d import progress
from vol25d.errors import InputError
from vol25d.model import ModelConfig
from vol25d.progress import Progress, progress_mode, track
from vol25d.train import TrainConfig, train
from vol25d.train.curves import read_curves, write_progress_plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cpu(path, **settings):
    return TrainConfig(path=path, device="cpu", amp=False, **{"epochs": 1, "steps_per_case": 1, **settings})


@pytest.fixture
def lines(monkeypatch, caplog):
    """Output that is no terminal, logging at INFO: the lines mode, its records in ``caplog``."""
    monkeypatch.delenv(progress.MODE_VARIABLE, raising=False)
    monkeypatch.setattr(progress, "_is_terminal", lambda stream: False)
    caplog.set_level(logging.INFO, logger="vol25d")
    return caplog


def messages(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records]


def test_off_a_terminal_progress_is_log_lines_with_i_of_n_elapsed_and_eta(lines):
    assert progress_mode(logging.getLogger("vol25d.test")) == "lines"
    assert list(track(["a", "b", "c"], "reading", logger=logging.getLogger("vol25d.test"))) == ["a", "b", "c"]
    assert [re.sub(r"\d+:\d\d", "T", m) for m in messages(lines)] == [
        "reading: 1/3 cases (33%), T elapsed, ETA T", "reading: 2/3 cases (67%), T elapsed, ETA T",
        "reading: 3/3 cases (100%), T elapsed, ETA T"]


def test_line_percentages_round_to_nearest_and_reach_100_only_at_the_end():
    def percent(n, total):
        bar = Progress(total, "x", quiet=True)
        bar.update(n)
        return re.search(r"\((\d+)%\)", bar.line()).group(1)

    assert [percent(n, 12) for n in (1, 2, 3, 6, 11, 12)] == ["8", "17", "25", "50", "92", "100"]
    assert percent(1, 8) == "13" and percent(199, 200) == "99" and percent(0, 0) == "100"


def test_a_long_loop_logs_every_tenth_not_every_item(lines):
    with Progress(200, "path1", unit="step", logger=logging.getLogger("vol25d.test")) as bar:
        for _ in range(200):
            bar.update(loss="0.5")
    counts = [int(re.search(r": (\d+)/200 steps", m).group(1)) for m in messages(lines)]
    assert counts == [20, 40, 60, 80, 100, 120, 140, 160, 180, 200]
    assert messages(lines)[-1].endswith("ETA 0:00, loss 0.5")


def test_quiet_or_logging_above_info_shows_nothing(lines, caplog):
    logger = logging.getLogger("vol25d.test")
    list(track(range(3), "reading", logger=logger, quiet=True))
    caplog.set_level(logging.WARNING, logger="vol25d")  # as `vol25d -q` sets it
    assert progress_mode(logger) == "off"
    list(track(range(3), "reading", logger=logger))
    assert messages(caplog) == []


def test_a_terminal_gets_a_tqdm_bar_with_the_count(lines, monkeypatch, capsys):
    from tqdm.std import tqdm

    monkeypatch.setattr(progress, "_is_terminal", lambda stream: True)
    with Progress(3, "predict", logger=logging.getLogger("vol25d.test")) as bar:
        assert bar.mode == "bar" and isinstance(bar._bar, tqdm)
        for _ in range(3):
            bar.update()
    assert "predict: 100%" in capsys.readouterr().err and "3/3" in bar._bar.__str__()
    assert messages(lines) == []  # the bar, not lines too


def test_a_run_that_raises_closes_its_bar_and_stops_redirecting_the_log(lines, monkeypatch):
    monkeypatch.setattr(progress, "_is_terminal", lambda stream: True)
    console = logging.StreamHandler(sys.stderr)
    logging.root.addHandler(console)
    try:
        bar = Progress(4, "path1", unit="step", logger=logging.getLogger("vol25d.test"))
        with pytest.raises(KeyboardInterrupt):
            for epoch in bar.over(range(1, 3), lambda number: f"path1 epoch {number}/2"):
                assert bar.description == "path1 epoch 1/2"
                assert console not in logging.root.handlers  # its records go above the bar meanwhile
                raise KeyboardInterrupt
        assert console in logging.root.handlers and bar._bar.disable  # tqdm disables a closed bar
    finally:
        logging.root.removeHandler(console)


def test_a_notebook_kernel_gets_a_bar_though_its_output_is_no_terminal(lines, monkeypatch):
    shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    assert progress_mode(logging.getLogger("vol25d.test")) == "bar"
    shell.config = {}  # a terminal IPython is no kernel: the terminal test decides
    assert progress_mode(logging.getLogger("vol25d.test")) == "lines"


def test_the_environment_variable_picks_the_form_and_a_bad_value_is_one_sentence(lines, monkeypatch):
    logger = logging.getLogger("vol25d.test")
    for value, mode in (("bar", "bar"), ("lines", "lines"), ("OFF", "off"), ("", "lines")):
        monkeypatch.setenv(progress.MODE_VARIABLE, value)
        assert progress_mode(logger) == mode
    assert progress_mode(logger, quiet=True) == "off"
    monkeypatch.setenv(progress.MODE_VARIABLE, "fancy")
    with pytest.raises(InputError, match="VOL25D_PROGRESS='fancy' is not a progress mode; set it to one of auto"):
        progress_mode(logger)


@pytest.fixture(scope="module")
def trained(phantoms, tmp_path_factory):
    """Path 1 (1 epoch) then path 2 (1 epoch) in one run folder, trained with progress lines logged."""
    out = tmp_path_factory.mktemp("run")
    logger = logging.getLogger("vol25d")
    handler = _Collect()
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(progress, "_is_terminal", lambda stream: False)
        patch.delenv(progress.MODE_VARIABLE, raising=False)
        try:
            first = train(phantoms, out, cpu(1), model_config=ModelConfig(**TINY_MODEL))
            after_path1 = (out / "progress.png").read_bytes()
            second = train(phantoms, out, cpu(2, steps_per_case=2), init=first.checkpoint)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
    return out, after_path1, handler.messages, second


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_every_long_step_of_training_logs_i_of_n_and_eta(trained):
    _, _, logged, _ = trained
    text = "\n".join(logged)
    # 4 phantoms: 3 train, 1 validation; path 1 one step per case, path 2 two.
    for expected in (r"planning: reading the training images: 3/3 cases \(100%\), \d+:\d\d elapsed, ETA \d+:\d\d",
                     r"preprocessing: 4/4 cases \(100%\)",
                     r"path1 epoch 1/1: 3/3 steps \(100%\), \d+:\d\d elapsed, ETA 0:00, loss \d\.\d{3}",
                     r"path2: U's views of every case: 4/4 cases \(100%\)",
                     r"path2 epoch 1/1: 6/6 steps \(100%\), .*, loss \d\.\d{3}"):
        assert re.search(expected, text), (expected, text)
    assert re.search(r"path1 epoch 1/1: loss [\d.]+, validation Dice [\d.]+", text)  # the epoch's summary stays


def test_the_run_folder_gets_progress_png_after_one_epoch_and_both_paths_after_path_2(trained):
    out, after_path1, _, _ = trained
    assert after_path1.startswith(PNG_SIGNATURE)
    final = (out / "progress.png").read_bytes()
    assert final.startswith(PNG_SIGNATURE) and final != after_path1
    curves = read_curves(out)
    assert [(c.path, c.epochs, c.x) for c in curves] == [(1, [1], [1]), (2, [1], [2])]  # path 2 after path 1
    assert all(len(c.train_loss) == len(c.val_dice) == len(c.lr) == 1 for c in curves)
    assert not list(out.glob(".progress.png.*"))  # written atomically: no temporary left


def test_the_curves_of_a_folder_without_path_1_start_at_epoch_1_and_no_epoch_is_no_picture(tmp_path):
    assert write_progress_plot(tmp_path) is None and not (tmp_path / "progress.png").exists()
    (tmp_path / "path2_metrics.csv").write_text("epoch,train_loss,val_dice,lr,seconds\n1,0.5,nan,0.001,1.0\n"
                                               "2,0.4,nan,0.0,1.0\n")
    (curve,) = read_curves(tmp_path)
    assert curve.path == 2 and curve.x == [1, 2] and curve.train_loss == [0.5, 0.4]
    assert write_progress_plot(tmp_path).read_bytes().startswith(PNG_SIGNATURE)


def test_a_failing_picture_is_a_warning_and_training_goes_on(phantoms, tmp_path, monkeypatch, caplog):
    import vol25d.train.loop as loop

    def broken(run):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(loop, "write_progress_plot", broken)
    result = train(phantoms, tmp_path, cpu(1), model_config=ModelConfig(**TINY_MODEL), quiet=True)
    assert result.checkpoint.is_file() and not (tmp_path / "progress.png").exists()
    assert any("could not write" in m and "progress.png (RuntimeError: no fonts); training goes on" in m
               for m in messages(caplog))


def test_predict_logs_each_case_with_i_of_n_and_eta(trained, phantoms, tmp_path, lines):
    from vol25d.infer import predict

    out, _, _, second = trained
    predict(phantoms / "imagesTr", tmp_path / "pred", second.checkpoint, device="cpu")
    logged = [m for m in messages(lines) if m.startswith("case ")]
    assert len(logged) == 4
    for i, line in enumerate(logged, start=1):
        assert re.fullmatch(rf"case {i}/4 phantom_00{i - 1} → .*phantom_00{i - 1}\.nii\.gz \([\d.]+ s, ETA \d+:\d\d\)",
                            line), line
