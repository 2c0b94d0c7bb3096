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


def _config_file(path: str | None) -> dict:
    """Sections ``train``, ``model``, ``preprocess``, ``augment`` of a YAML config file."""
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {file} does not exist; pass a YAML file with train/model/preprocess sections")
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as error:
        raise InputError(f"{file} is not valid YAML ({str(error).splitlines()[0]}); fix the file") from None
    unknown = sorted(set(values) - {"train", "model", "preprocess", "augment"})
    if not isinstance(values, dict) or unknown:
        raise InputError(f"{file}: top-level keys must be among train, model, preprocess, augment; got {unknown}")
    return values


def _torchrun_rank() -> int:
    """This process's rank when ``torchrun`` started it, else 0: rank 0 speaks for all the processes."""
    return int(os.environ.get("RANK", "0"))


def _cmd_train(args) -> int:
    from vol25d.data.augment import AugmentConfig
    from vol25d.model import ModelConfig
    from vol25d.train import TrainConfig, train

    if args.path == 2 and args.init is None:
        raise InputError("path 2 starts from a path-1 checkpoint: pass --init RUN/path1.pt")
    if not Path(args.data).is_dir():
        raise FileNotFoundError(f"data folder {args.data} does not exist; pass a dataset in the MSD layout (vol25d make-phantoms makes one)")
    file = _config_file(args.config)
    train_values = dict(file.get("train", {}))
    for key in ("epochs", "steps_per_case", "lr", "seed", "device"):
        if getattr(args, key) is not None:
            train_values[key] = getattr(args, key)
    if args.amp is not None:
        train_values["amp"] = args.amp
    train_values["path"] = args.path
    try:
        augment = AugmentConfig(**file.get("augment", {}))
        config = TrainConfig(**{**train_values, "augment": augment})
        model_values = dict(file.get("model", {}))
        for key in ("directions", "views", "projection"):
            if getattr(args, key) is not None:
                model_values[key] = getattr(args, key)
        model = ModelConfig.from_dict(model_values) if model_values else None
    except TypeError as error:
        raise InputError(f"unknown setting in {args.config or 'the arguments'}: {error}") from None
    if args.path == 2 and (file.get("model") or args.directions or args.views or args.projection):
        raise InputError("path 2 keeps the model settings of its --init checkpoint; drop --directions/--views/--projection")
    preprocess = dict(file.get("preprocess") or {})
    if args.max_voxels is not None:
        if args.path == 2:
            raise InputError("path 2 keeps the preprocessing of its --init checkpoint; drop --max-voxels")
        preprocess["max_voxels"] = args.max_voxels
    result = train(args.data, args.out, config, model_config=model, preprocess_options=preprocess or None,
                   init=args.init, resume=args.resume, quiet=args.quiet)
    if _torchrun_rank() == 0:
        print(f"path {args.path}: {result.epochs} epochs in {result.seconds:.0f} s, best validation Dice "
              f"{result.best_dice:.4f} at epoch {result.best_epoch} → {result.checkpoint}{_peak_gpu_memory()}")
    return 0


def _peak_gpu_memory() -> str:
    """``", peak GPU memory X GiB"`` when this process used a GPU, else nothing."""
    import torch

    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return ""
    return f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


def _cmd_predict(args) -> int:
    from vol25d.infer import predict

    written = predict(args.input, args.output, args.model, threshold=args.threshold, probabilities=args.probabilities,
                      tta=args.tta, min_size=args.min_size, report=args.report, device=args.device)
    print(f"wrote {len(written)} file(s) to {args.output}{_peak_gpu_memory()}")
    return 0


def _cmd_evaluate(args) -> int:
    from vol25d.evaluate import evaluate_folders, format_table

    rows, summary = evaluate_folders(args.pred, args.ref, args.csv)
    print(format_table(rows, summary))
    return 0


def _cmd_demo(args) -> int:
    from vol25d.demo import run_demo

    mean_dice, table = run_demo(args.out, device=args.device, seed=args.seed, quiet=args.quiet)
    print(table)
    return 0


def _cmd_make_phantoms(args) -> int:
    from vol25d.data.phantom import write_phantom_dataset

    root = write_phantom_dataset(args.out, args.n, args.size, args.seed)
    print(f"wrote {args.n} phantoms of size {args.size} to {root}")
    return 0


def _cmd_check_data(args) -> int:
    from vol25d.data.dataset import check_dataset

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vol25d", description="Fully 3D MRI segmentation with the random 2.5D U-Net.")
    parser.add_argument("--version", action="version", version=f"vol25d {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and the final result")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("train", help="train path 1 (random views) or path 2 (all views, U frozen)",
                            description="Train one path. An epoch is one pass over the training cases with "
                            "--steps-per-case optimiser steps (one volume each, default 12) per case; in path 1 each "
                            "step draws its own p views and augmentation. Settings come from the defaults, then "
                            "--config, then these flags.")
    p.add_argument("--path", type=int, choices=(1, 2), required=True, help="1: U, F, T on p random views; 2: F, T on all m views")
    p.add_argument("--data", required=True, help="dataset folder in the MSD layout (imagesTr, labelsTr, dataset.json)")
    p.add_argument("--out", required=True, help="run folder (checkpoints, metrics CSV, config.yaml, tb/)")
    p.add_argument("--init", help="path 2: the path-1 checkpoint to start from (RUN/path1.pt)")
    p.add_argument("--config", help="YAML file with sections train, model, preprocess, augment")
    p.add_argument("--directions", type=int, help="m, directions in [0, π) (default 64)")
    p.add_argument("--views", type=int, help="p, directions drawn per path-1 step (default 8)")
    p.add_argument("--projection", choices=("mip", "sum"), help="maximum intensity (default) or sum projection")
    p.add_argument("--max-voxels", type=int, metavar="N",
                   help="path 1: cap on D·H·W per image, coarser spacing above it; 0 = none (default: on a GPU, "
                   "measured from its memory — full resolution when a step fits; on the CPU 128³)")
    p.add_argument("--epochs", type=int, help="passes over the training cases (default 100)")
    p.add_argument("--steps-per-case", type=int, help="optimiser steps per training case per epoch (default 12)")
    p.add_argument("--lr", type=float, help="peak learning rate of U (default 3e-3; F and T learn at 10× in path 1)")
    p.add_argument("--device", help="auto (default: CUDA when available), cuda or cpu")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast on CUDA (default on)")
    p.add_argument("--seed", type=int, help="seed of weights, split, order, views and augmentation (default 0)")
    p.add_argument("--resume", action="store_true", help="continue from RUN/pathN_last.pt")
    p.set_defaults(run=_cmd_train)

    p = commands.add_parser("predict", help="segment NIfTI (or .mha/.nrrd/DICOM) files; output on the input's grid")
    p.add_argument("-i", "--input", required=True, help="an image file or a folder (case_0000, case_0001 … are channels)")
    p.add_argument("-o", "--output", required=True, help="output file (single input) or folder")
    p.add_argument("-m", "--model", required=True, help="checkpoint: RUN/path2.pt or RUN/path1.pt")
    p.add_argument("--threshold", type=float, default=0.5, help="probability for a voxel to be labelled (default 0.5)")
    p.add_argument("--probabilities", action="store_true", help="write float32 probabilities instead of labels")
    p.add_argument("--tta", action="store_true", help="average the predictions of mirrored inputs")
    p.add_argument("--min-size", type=int, default=0, help="drop connected components smaller than N voxels")
    p.add_argument("--report", action="store_true", help="write a PNG beside each output (MIPs + slices with the mask)")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.set_defaults(run=_cmd_predict)

    p = commands.add_parser("evaluate", help="Dice, HD95, clDice and volume difference of predictions against labels")
    p.add_argument("--pred", required=True, help="folder of predicted label files")
    p.add_argument("--ref", required=True, help="folder of reference label files with the same case names")
    p.add_argument("--csv", help="write the per-case table to this CSV file")
    p.set_defaults(run=_cmd_evaluate)

    p = commands.add_parser("demo", help="phantoms → train path 1 → path 2 → predict → evaluate, no download")
    p.add_argument("--out", default="vol25d-demo", help="folder for everything the demo writes (default vol25d-demo)")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_cmd_demo)

    p = commands.add_parser("make-phantoms", help="write synthetic TOF-MRA-like phantoms in the MSD layout")
    p.add_argument("out", help="dataset folder to write")
    p.add_argument("--n", type=int, default=12, help="number of cases (default 12)")
    p.add_argument("--size", type=int, default=48, help="voxels a side (default 48)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=_cmd_make_phantoms)

    p = commands.add_parser("check-data", help="check every case of an MSD-layout dataset and list all problems")
    p.add_argument("dir", help="dataset folder")
    p.set_defaults(run=_cmd_check_data)

    p = commands.add_parser("convert-gitract", help="Kaggle UW-Madison GI tract folder → MSD layout (multi-label)")
    p.add_argument("src", help="competition folder (train/, train.csv, optional test/)")
    p.add_argument("out", help="dataset folder to write")
    p.set_defaults(run=_cmd_convert_gitract)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet or _torchrun_rank() else logging.INFO
    logging.basicConfig(level=level, format="%(message)s")
    try:
        return args.run(args)
    except (InputError, FileNotFoundError, NotADirectoryError, PermissionError) as error:
        colour = sys.stderr.isatty()
        print(f"{_RED if colour else ''}error: {error}{_RESET if colour else ''}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
