"""The ``vol25d`` command: parses arguments, configures logging, calls one library function.

Our exceptions (bad files, arguments, checkpoints) become one red line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import yaml

from vol25d import __version__
from vol25d.errors import InputError

log = logging.getLogger("vol25d")

_RED, _RESET = "\033[31m", "\033[0m"


def _config_sections() -> dict[str, dict[str, "dataclasses.Field"]]:
    """The settings each section of a ``--config`` file may hold: the fields of the dataclass it fills."""
    import dataclasses

    from vol25d.data.augment import AugmentConfig
    from vol25d.data.preprocess import PreprocessConfig
    from vol25d.model import ModelConfig
    from vol25d.train import TrainConfig

    def names(cls) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(cls)}

    return {
        # --path picks the path and augment is its own section; the channels come from the data; the
        # intensity statistics (and the planned grid) are measured on the training images.
        section: {k: v for k, v in names(cls).items() if k not in drop}
        for section, cls, drop in (("train", TrainConfig, {"path", "augment"}),
                                   ("model", ModelConfig, {"in_channels", "out_channels"}),
                                   ("preprocess", PreprocessConfig, {"intensity_stats", "planned_shape"}),
                                   ("augment", AugmentConfig, set()))
    }


def _config_file(path: str | None, run_path: int | None = None) -> dict:
    """Sections ``train``, ``model``, ``preprocess``, ``augment`` of a YAML config file, each a mapping of
    known settings (see ``experiments/configs/example.yaml``); or, from a run folder's ``config.yaml``, the
    settings its path ``run_path`` ran with (:func:`_settings_of_run`)."""
    sections = _config_sections()
    if path is None:
        return {section: {} for section in sections}
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {file} does not exist; pass a YAML file with train/model/preprocess sections")
    try:
        values = yaml.safe_load(file.read_text(encoding="utf-8"))  # YAML is UTF-8
    except yaml.YAMLError as error:
        raise InputError(f"{file} is not valid YAML ({str(error).splitlines()[0]}); fix the file") from None
    except (UnicodeDecodeError, OSError) as error:
        raise InputError(f"{file} cannot be read as a text file ({type(error).__name__}); pass a YAML file") from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise InputError(f"{file}: the top level must be a mapping with sections {', '.join(sections)}; got "
                         f"{type(values).__name__} {str(values)[:40]!r} — see experiments/configs/example.yaml")
    from vol25d.checkpoint import RunFolder  # --config is read by train only, which loads torch anyway

    if RunFolder.is_record(values):
        values = _settings_of_run(values, file, run_path, sections)
    unknown = sorted(map(str, set(values) - set(sections)))
    if unknown:
        raise InputError(f"{file}: top-level keys must be among {', '.join(sections)}; got {unknown}")
    for section, known in sections.items():
        settings = values.get(section)
        if settings is None:
            values[section] = {}
            continue
        if not isinstance(settings, dict):
            raise InputError(f"{file}: section {section!r} must be a mapping of settings; got {type(settings).__name__} "
                             f"{str(settings)[:40]!r}")
        bad = sorted(map(str, set(settings) - set(known)))
        moved = sorted(set(bad) & {"view_chunk", "checkpoint_views"}) if section == "model" else []
        if moved:
            raise InputError(f"{file}: {', '.join(moved)} are memory controls of training, not model settings; move "
                             "them to the train section")
        if bad:
            raise InputError(f"{file}: unknown setting(s) {bad} in section {section!r}; known: {', '.join(sorted(known))}")
        for key, value in settings.items():
            expected = _expected_type(known[key])
            if expected and value is not None and not _is_a(value, expected[0]):
                raise InputError(f"{file}: {section}.{key} must be {expected[1]}; got {value!r}")
    return values


def _settings_of_run(record: dict, file: Path, run_path: int | None, sections: dict) -> dict:
    """A run folder's ``config.yaml`` → the known settings of the sections ``--config`` reads, as path
    ``run_path`` ran with them (:meth:`vol25d.checkpoint.RunFolder.settings`), so the same command re-runs it."""
    from vol25d.checkpoint import RunFolder

    values = RunFolder.settings(record, run_path, file)
    return {section: {k: v for k, v in values[section].items() if k in sections[section]} for section in sections}


def _expected_type(setting) -> tuple[tuple[type, ...], str] | None:
    """The YAML types a setting (a dataclass field) accepts, and how to say it; ``None``: not checked here.

    A setting whose default is ``None`` ("the device's", "planned") is checked by its annotation's first type
    (``int | None``: a whole number)."""
    default = setting.default
    if default is None:
        default = {"int": 0, "float": 0.0}.get(str(setting.type).split("|")[0].strip())
    if isinstance(default, bool):
        return (bool,), "true or false"
    if isinstance(default, int):
        return (int,), "a whole number"
    if isinstance(default, float):
        return (int, float), "a number"
    if isinstance(default, str):
        return (str,), "a word"
    if isinstance(default, tuple):
        return (list, tuple), "a list, e.g. [1, 2]"
    return None


def _is_a(value, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _torchrun_rank() -> int:
    """This process's rank when ``torchrun`` started it, else 0: rank 0 speaks for all the processes."""
    return int(os.environ.get("RANK", "0"))


def _cmd_train(args) -> int:
    from vol25d.data.augment import AugmentConfig
    from vol25d.data.preprocess import PreprocessConfig
    from vol25d.model import ModelConfig
    from vol25d.train import FINE_TUNE_LR, TrainConfig, train

    if args.path == 2 and args.init is None:
        raise InputError("path 2 starts from a path-1 checkpoint: pass --init RUN/path1.pt")
    if args.init is not None and args.resume:
        raise InputError("--resume continues RUN/pathN_last.pt and --init starts from another model; pass one of them")
    if not Path(args.data).is_dir():
        what = "is a file, not a folder" if Path(args.data).exists() else "does not exist"
        raise FileNotFoundError(f"data folder {args.data} {what}; pass a dataset in the MSD layout (vol25d make-phantoms makes one)")
    file = _config_file(args.config, args.path)
    if args.path == 2 and (file["model"] or args.directions or args.views or args.projection):
        raise InputError("path 2 keeps the model settings of its --init checkpoint; drop --directions/--views/--projection")
    if args.init is not None and (file["preprocess"] or args.projection):
        raise InputError(f"--init keeps the preprocessing and projection of {args.init}; drop --projection and the "
                         "config's preprocess section")
    train_values = dict(file["train"])
    for key in ("epochs", "steps_per_case", "lr", "seed", "device", "view_chunk", "checkpoint_views"):
        if getattr(args, key) is not None:
            train_values[key] = getattr(args, key)
    if args.amp is not None:
        train_values["amp"] = args.amp
    if args.path == 1 and args.init is not None and train_values.get("lr") is None:
        train_values["lr"] = FINE_TUNE_LR  # a tenth of the default (see vol25d.train.FINE_TUNE_LR)
    train_values["path"] = args.path
    source = args.config or "the arguments"
    try:
        augment = AugmentConfig(**file["augment"])
        config = TrainConfig(**{**train_values, "augment": augment})
        model_values = dict(file["model"])
        for key in ("directions", "views", "projection"):
            if getattr(args, key) is not None:
                model_values[key] = getattr(args, key)
        model = ModelConfig.from_dict(model_values) if model_values else None
        PreprocessConfig(**file["preprocess"])  # checked now, not after the images are read
    except InputError as error:
        raise InputError(f"{args.config}: {error}" if args.config else str(error)) from None
    except (TypeError, ValueError) as error:  # the model's and dataclasses' own checks
        raise InputError(f"bad setting in {source}: {error}") from None
    preprocess = dict(file["preprocess"])
    if args.max_voxels is not None:
        if args.init is not None:
            raise InputError(f"--init keeps the preprocessing of {args.init}; drop --max-voxels")
        preprocess["max_voxels"] = args.max_voxels
    _set_threads(args, config.device)
    result = train(args.data, args.out, config, model_config=model, preprocess_options=preprocess or None,
                   init=args.init, resume=args.resume, quiet=args.quiet)
    if _torchrun_rank() == 0:
        print(f"path {args.path}: {result.epochs} epochs in {result.seconds:.0f} s, best validation Dice "
              f"{result.best_dice:.4f} at epoch {result.best_epoch} → {result.checkpoint}{_peak_gpu_memory()}")
    return 0


def _set_threads(args, device: str) -> None:
    """``--threads`` for torch on the CPU (``auto``: as measured best for this machine; see vol25d.device)."""
    from vol25d.device import resolve_device, set_threads

    resolve_device(device)  # a bad --device is one sentence before anything else happens
    threads = set_threads(args.threads)
    log.debug("torch uses %d CPU thread(s)", threads)


def _peak_gpu_memory() -> str:
    """``", peak GPU memory X GiB"`` when this process used a GPU, else nothing."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return ""
    return f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


def _cmd_predict(args) -> int:
    from vol25d.infer import predict

    _set_threads(args, args.device)
    written = predict(args.input, args.output, args.model, threshold=args.threshold, probabilities=args.probabilities,
                      save_probabilities=args.save_probabilities, tta=args.tta, min_size=args.min_size,
                      report=args.report, device=args.device, resume=args.resume, view_chunk=args.view_chunk)
    print(f"wrote {len(written)} file(s) to {args.output}{_peak_gpu_memory()}")
    return 0


def _cmd_evaluate(args) -> int:
    from vol25d.evaluate import evaluate_folders, format_table

    rows, summary = evaluate_folders(args.pred, args.ref, args.csv, allow_missing=args.allow_missing,
                                     json_path=args.json)
    print(format_table(rows, summary))
    return 0


def _cmd_demo(args) -> int:
    from vol25d.demo import run_demo

    _set_threads(args, args.device)
    mean_dice, table = run_demo(args.out, device=args.device, seed=args.seed, quiet=args.quiet)
    print(table)
    return 0


def _cmd_info(args) -> int:
    import json

    from vol25d.checkpoint import Checkpoint, describe_checkpoint, format_description

    description = describe_checkpoint(Checkpoint.load(args.checkpoint), args.checkpoint)
    print(json.dumps(description, indent=2) if args.json else format_description(description))
    return 0


def _cmd_make_phantoms(args) -> int:
    from vol25d.data.phantom import write_phantom_dataset

    root = write_phantom_dataset(args.out, args.n, args.size, args.seed, layout=args.layout)
    print(f"wrote {args.n} phantoms of size {args.size} to {root}")
    return 0


def _cmd_check_data(args) -> int:
    from vol25d.data.check import check_dataset

    problems = check_dataset(args.dir)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {args.dir}", file=sys.stderr)
        return 1
    print(f"{args.dir}: every case is readable and consistent")
    return 0


def _cmd_convert_gitract(args) -> int:
    from vol25d.data.gitract import convert_gitract

    root = convert_gitract(args.src, args.out)
    print(f"wrote the MSD layout to {root}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line on stderr (exit 2) instead of the usage block and a message."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see `{self.prog} --help`\n")


class _HelpFormatter(argparse.HelpFormatter):
    """Descriptions wrapped to the terminal; the example epilog kept as written."""

    def _fill_text(self, text, width, indent):
        if text.startswith("example:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def _command(commands, name: str, summary: str, description: str, example: str, parents) -> argparse.ArgumentParser:
    return commands.add_parser(name, help=summary, description=description, epilog=f"example:\n  {example}",
                               formatter_class=_HelpFormatter, parents=parents)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="vol25d", description="Fully 3D MRI segmentation with the random 2.5D U-Net "
                     "(Angermann & Haltmeier, MLMECH 2019). Run `vol25d COMMAND --help` for each command.",
                     epilog="example:\n  vol25d demo --out vol25d-demo", formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"vol25d {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final result")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    # The same flags after the subcommand (`vol25d predict … -q`); SUPPRESS keeps a flag given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="only warnings and the final result")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    threads = argparse.ArgumentParser(add_help=False)
    threads.add_argument("--threads", default="auto", metavar="N",
                         help="torch CPU threads: auto (default: 1 on a machine with ≤ 2 CPUs, where more were measured "
                         "slower; else torch's default) or a number")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_train(commands, [common, threads])
    _add_predict(commands, [common, threads])
    _add_evaluate(commands, [common])
    _add_info(commands, [common])
    _add_demo(commands, [common, threads])
    _add_make_phantoms(commands, [common])
    _add_check_data(commands, [common])
    _add_convert_gitract(commands, [common])
    return parser


def _add_train(commands, parents: list[argparse.ArgumentParser]) -> None:
    p = _command(commands, "train", "train path 1 (random views) or path 2 (all views, U frozen)",
                 "Train one path of the method on a dataset in the nnU-Net/MSD layout. Path 1 trains U, F and T "
                 "end to end on p random views per step; path 2 (--init RUN/path1.pt) freezes U and trains F and T "
                 "on all m views. An epoch is one pass over the training cases with --steps-per-case optimiser "
                 "steps per case. Settings come from the defaults, then --config, then these flags. Path 1 with "
                 "--init CKPT fine-tunes a trained model on new data: its model settings and preprocessing are "
                 "kept, its channels and classes must match, and --lr defaults to 3e-4 (a tenth).",
                 "vol25d train --path 1 --data DATASET --out RUN && "
                 "vol25d train --path 2 --data DATASET --out RUN --init RUN/path1.pt",
                 parents)
    p.add_argument("--path", type=int, choices=(1, 2), required=True, help="1: U, F, T on p random views; 2: F, T on all m views")
    p.add_argument("--data", required=True, help="dataset folder in the MSD layout (imagesTr, labelsTr, dataset.json)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics CSV, config.yaml, tb/)")
    p.add_argument("--init", help="path 2: the path-1 checkpoint to start from (RUN/path1.pt); path 1: a trained "
                   "checkpoint to fine-tune")
    p.add_argument("--config", help="YAML file with sections train, model, preprocess, augment "
                   "(experiments/configs/example.yaml lists every setting)")
    p.add_argument("--directions", type=int, help="m, directions in [0, π) (default 64)")
    p.add_argument("--views", type=int, help="p, directions drawn per path-1 step (default 8)")
    p.add_argument("--projection", choices=("mip", "sum"), help="maximum intensity (default) or sum projection")
    p.add_argument("--max-voxels", type=int, metavar="N",
                   help="path 1: cap on D·H·W per image, coarser spacing above it; 0 = none (default: on a GPU, "
                   "measured from its memory — full resolution when a step fits; on the CPU 128³)")
    p.add_argument("--epochs", type=int,  # train.DEFAULT_EPOCHS, unimported (torch loads only when a command runs)
                   help="passes over the training cases (default: on the CPU 20 for path 1 and 5 "
                   "for path 2, about six and a half minutes for 12 volumes of 48³ on two cores; 100 on a GPU)")
    p.add_argument("--steps-per-case", type=int, help="optimiser steps per training case per epoch (default 12)")
    p.add_argument("--lr", type=float, help="peak learning rate of U (default 3e-3, 3e-4 when fine-tuning with "
                   "--init in path 1; F and T learn at small_lr_factor × it in path 1, default 10)")
    p.add_argument("--device", help="auto (default: CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast on CUDA (default on)")
    p.add_argument("--seed", type=int, help="seed of weights, split, order, views and augmentation (default 0)")
    p.add_argument("--view-chunk", type=int, metavar="N", help="memory: views pushed through U at once in validation "
                   "and path 2's view cache (default 16)")
    p.add_argument("--checkpoint-views", type=int, metavar="N", help="memory, path 1: recompute U's activations in the "
                   "backward over chunks of N views (default 0: keep them)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/pathN_last.pt")
    p.set_defaults(run=_cmd_train)


def _add_predict(commands, parents: list[argparse.ArgumentParser]) -> None:
    p = _command(commands, "predict", "segment NIfTI (or .mha/.nrrd/DICOM) files; output on the input's grid",
                 "Segment one image or a folder of them with a trained checkpoint. Inputs: NIfTI, .mha/.mhd, "
                 ".nrrd/.nhdr, or a DICOM series folder; in a folder, nnU-Net's case_0000, case_0001 … files are "
                 "one case's channels. Every output has its input's shape and affine, so it opens aligned in "
                 "3D Slicer or ITK-SNAP: uint8 labels (a multi-label model writes a 4-D file, one channel per "
                 "class, and a 3-D CASE_labelmap file where overlaps go to the most probable class). "
                 "--save-probabilities also writes float32 CASE_probabilities files; --continue skips cases "
                 "already predicted. Images with NaN/Inf voxels are refused.",
                 "vol25d predict -i DATASET/imagesTs -o PRED -m RUN/path2.pt --save-probabilities --continue",
                 parents)
    p.add_argument("-i", "--input", required=True, help="an image file, a DICOM folder, or a folder of images "
                   "(case_0000, case_0001 … are channels)")
    p.add_argument("-o", "--output", required=True, help="output file (single input) or folder")
    p.add_argument("-m", "--model", required=True, help="checkpoint: RUN/path2.pt or RUN/path1.pt")
    p.add_argument("--threshold", type=float, default=0.5, help="probability for a voxel to be labelled (default 0.5)")
    p.add_argument("--save-probabilities", action="store_true",
                   help="also write float32 probabilities beside the labels (CASE_probabilities.nii.gz)")
    p.add_argument("--probabilities", action="store_true", help="write float32 probabilities instead of labels")
    p.add_argument("--tta", action="store_true", help="average the predictions of the input and its mirrors along each axis (4× the time; "
                   "measured +0.008 Dice on phantoms, so off by default)")
    p.add_argument("--min-size", type=int, default=0, help="drop connected components smaller than N voxels")
    p.add_argument("--report", action="store_true", help="write a PNG beside each output (MIPs + slices with the mask)")
    p.add_argument("--continue", dest="resume", action="store_true",
                   help="skip cases whose outputs all exist (outputs are written atomically: one that exists is whole)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--view-chunk", type=int, default=16, metavar="N",
                   help="views pushed through U at once (default 16); lower it when the GPU runs out of memory")
    p.set_defaults(run=_cmd_predict)


def _add_evaluate(commands, parents: list[argparse.ArgumentParser]) -> None:
    p = _command(commands, "evaluate", "Dice, HD95, clDice and volume difference of predictions against labels",
                 "Score a folder of predicted label files against reference labels of the same case names: Dice, "
                 "HD95 (mm), clDice and volume difference per case and class, then mean ± std per class and a "
                 "last line `mean Dice: …`. Every reference needs a prediction (unless --allow-missing) and every "
                 "prediction must lie on its reference's grid (shape and affine). Class names come from a "
                 "dataset.json beside or above --ref. --csv writes the per-case table, --json the per-case "
                 "scores and per-class summary for scripts.",
                 "vol25d evaluate --pred PRED --ref DATASET/labelsTr --csv scores.csv", parents)
    p.add_argument("--pred", required=True, help="folder of predicted label files")
    p.add_argument("--ref", required=True, help="folder of reference label files with the same case names")
    p.add_argument("--csv", help="write the per-case table to this CSV file")
    p.add_argument("--json", metavar="FILE", help="write the summary for scripts to this JSON file: per case and "
                   "class every metric, per class mean ± sd (sample sd, ddof 1), n; inf/NaN as null")
    p.add_argument("--allow-missing", action="store_true", help="score the references that have a prediction and "
                   "warn about the others, instead of refusing")
    p.set_defaults(run=_cmd_evaluate)


def _add_info(commands, parents: list[argparse.ArgumentParser]) -> None:
    p = _command(commands, "info", "what a checkpoint is: classes, channels, spacing, m, p, training",
                 "Describe a checkpoint without running it: its classes and channels, the planned spacing and "
                 "voxel cap, the model (m, p, projection, reconstruction F and head T, U's size), what it was "
                 "trained on and for how long, and the vol25d version that wrote it. The file is read safely "
                 "(tensors and plain values only); --json prints the same as JSON for scripts.",
                 "vol25d info RUN/path2.pt --json", parents)
    p.add_argument("checkpoint", help="RUN/path1.pt, RUN/path2.pt or a pathN_last.pt")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=_cmd_info)


def _add_demo(commands, parents: list[argparse.ArgumentParser]) -> None:
    p = _command(commands, "demo", "phantoms → train path 1 → path 2 → predict → evaluate, no download",
                 "Run the whole pipeline on synthetic TOF-MRA-like phantoms with no download: write training and "
                 "held-out phantoms, train path 1 and path 2, predict the held-out phantoms (with a report PNG "
                 "each) and evaluate them. On a CPU it is sized for a few minutes on 2 cores; with a GPU it uses "
                 "larger phantoms and longer training.",
                 "vol25d demo --out vol25d-demo", parents)
    p.add_argument("--out", default="vol25d-demo", help="folder for everything the demo writes (default vol25d-demo)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_cmd_demo)


def _add_make_phantoms(commands, parents: list[argparse.ArgumentParser]) -> None:
    p = _command(commands, "make-phantoms", "write synthetic TOF-MRA-like phantoms in the MSD layout",
                 "Write N synthetic TOF-MRA-like phantoms (branching vessels, textured tissue, bias field, Rician "
                 "noise, a bright shell, anisotropic spacing, an oblique affine) with their vessel labels, as a "
                 "dataset in the nnU-Net/MSD layout. Deterministic for a given seed.",
                 "vol25d make-phantoms phantoms --n 12 --size 48 --seed 0", parents)
    p.add_argument("out", help="dataset folder to write")
    p.add_argument("--n", type=int, default=12, help="number of cases (default 12)")
    p.add_argument("--size", type=int, default=48, help="voxels a side (default 48)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", choices=("tangle", "spread", "mixed"), default="mixed",  # phantom.LAYOUTS, unimported
                   help="how the vessel trees fill the head: tangle (dense, in its middle), spread (over the "
                        "whole head, near its surface too) or mixed (one of the two per case, the default: "
                        "models trained on it do better on other generators' phantoms)")
    p.set_defaults(run=_cmd_make_phantoms)


def _add_check_data(commands, parents: list[argparse.ArgumentParser]) -> None:
    p = _command(commands, "check-data", "check every case of an MSD-layout dataset and list all problems",
                 "Read every file of a dataset in the nnU-Net/MSD layout and list every problem, one line per "
                 "file: dataset.json, missing channels or labels, unreadable files, NaN/Inf voxels, images and "
                 "labels on different grids, label values not declared. Exits 1 if there is any.",
                 "vol25d check-data DATASET", parents)
    p.add_argument("dir", help="dataset folder")
    p.set_defaults(run=_cmd_check_data)


def _add_convert_gitract(commands, parents: list[argparse.ArgumentParser]) -> None:
    p = _command(commands, "convert-gitract", "Kaggle UW-Madison GI tract folder → MSD layout (multi-label)",
                 "Convert the Kaggle UW-Madison GI tract competition folder (16-bit PNG slices and train.csv "
                 "with RLE masks) into the MSD layout: one volume per case-day, a multi-label dataset of large "
                 "bowel, small bowel and stomach.",
                 "vol25d convert-gitract uw-madison-gi-tract-image-segmentation gitract", parents)
    p.add_argument("src", help="competition folder (train/, train.csv, optional test/)")
    p.add_argument("out", help="dataset folder to write")
    p.set_defaults(run=_cmd_convert_gitract)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet or _torchrun_rank() else logging.INFO
    logging.basicConfig(level=level, format="%(message)s", force=True)  # force: main() may run twice in a process
    try:
        return args.run(args)
    except BrokenPipeError:  # `vol25d info … | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (InputError, OSError) as error:
        if isinstance(error, OSError) and error.filename is not None:  # raised by the OS: name the path
            error = f"{error.filename}: {error.strerror or type(error).__name__}; check the path and its permissions"
        colour = sys.stderr.isatty()
        print(f"{_RED if colour else ''}error: {error}{_RESET if colour else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
