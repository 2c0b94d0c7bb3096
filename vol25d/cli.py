"""The ``vol25d`` command: parses arguments, configures logging, calls one library function.

Our exceptions (bad files, arguments, checkpoints) become one red line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from vol25d import __version__
from vol25d.errors import InputError
from vol25d.settings import (DEFAULT_EPOCHS, DEFAULT_LR, DEFAULT_MAX_VOXELS, DEFAULT_VIEW_CHUNK, FINE_TUNE_LR,
                             OPS_BACKENDS, PROJECTIONS, ModelConfig, TrainConfig, training_settings)

log = logging.getLogger("vol25d")

_RED, _RESET = "\033[31m", "\033[0m"


def _cube(voxels: int) -> str:
    """``128³`` for 2097152 voxels; the number itself when it is no cube."""
    side = round(voxels ** (1 / 3))
    return f"{side}³" if side**3 == voxels else str(voxels)


def _torchrun_rank() -> int:
    """This process's rank when ``torchrun`` started it, else 0: rank 0 speaks for all the processes."""
    return int(os.environ.get("RANK", "0"))


def _cmd_train(args) -> int:
    from vol25d.train import train

    settings = training_settings(
        args.path, config_file=args.config, init=args.init, resume=args.resume,
        train={key: getattr(args, key) for key in ("epochs", "steps_per_case", "lr", "seed", "device", "amp",
                                                   "view_chunk", "checkpoint_views", "path2_copies")
               if getattr(args, key) is not None},
        model={key: getattr(args, key) for key in ("directions", "views", "projection") if getattr(args, key) is not None},
        preprocess={"max_voxels": args.max_voxels} if args.max_voxels is not None else None)
    if not Path(args.data).is_dir():
        what = "is a file, not a folder" if Path(args.data).exists() else "does not exist"
        raise FileNotFoundError(f"data folder {args.data} {what}; pass a dataset in the MSD layout (vol25d make-phantoms makes one)")
    _set_threads(args, settings.train.device)
    result = train(args.data, args.out, settings.train, model_config=settings.model,
                   preprocess_options=settings.preprocess, init=args.init, resume=args.resume, quiet=args.quiet)
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
    from vol25d.ops.backend import here  # the kernels this machine would run, beside those the checkpoint ran

    description = {**describe_checkpoint(Checkpoint.load(args.checkpoint), args.checkpoint), "kernels_here": here()}
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
    kernels = argparse.ArgumentParser(add_help=False)
    kernels.add_argument("--ops-backend", choices=OPS_BACKENDS,
                         help="projection kernels: auto (default: Triton on CUDA, each kernel checked against the "
                         "reference on its first use, the reference PyTorch kernels wherever one fails; the CPU "
                         "kernels on the CPU), triton, cpu or reference; sets VOL25D_OPS_BACKEND")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    _add_train(commands, [common, threads, kernels])
    _add_predict(commands, [common, threads, kernels])
    _add_evaluate(commands, [common])
    _add_info(commands, [common])
    _add_demo(commands, [common, threads, kernels])
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
                 f"kept, its channels and classes must match, and --lr defaults to {FINE_TUNE_LR:g} (a tenth).",
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
    # Every default below is the library's (vol25d.settings), which loads without torch.
    p.add_argument("--directions", type=int, help=f"m, directions in [0, π) (default {ModelConfig.directions})")
    p.add_argument("--views", type=int, help=f"p, directions drawn per path-1 step (default {ModelConfig.views})")
    p.add_argument("--projection", choices=PROJECTIONS,
                   help=f"maximum intensity (mip) or sum projection (default {ModelConfig.projection})")
    p.add_argument("--max-voxels", type=int, metavar="N",
                   help="path 1: cap on D·H·W per image, coarser spacing above it; 0 = none (default: on a GPU, "
                   f"measured from its memory — full resolution when a step fits; on the CPU {_cube(DEFAULT_MAX_VOXELS)})")
    cpu, cuda = DEFAULT_EPOCHS["cpu"], DEFAULT_EPOCHS["cuda"]
    p.add_argument("--epochs", type=int,
                   help=f"passes over the training cases (default: on the CPU {cpu[1]} for path 1 and {cpu[2]} "
                   "for path 2, minutes for 12 volumes of 48³ on two cores, as docs/benchmarks.md's demo says; "
                   f"{cuda[1] if cuda[1] == cuda[2] else f'{cuda[1]} and {cuda[2]}'} on a GPU)")
    p.add_argument("--steps-per-case", type=int,
                   help=f"optimiser steps per training case per epoch (default {TrainConfig.steps_per_case})")
    p.add_argument("--lr", type=float, help=f"peak learning rate of U (default {DEFAULT_LR:g}, {FINE_TUNE_LR:g} when "
                   "fine-tuning with --init in path 1; F and T learn at small_lr_factor × it in path 1, default "
                   f"{TrainConfig.small_lr_factor:g})")
    p.add_argument("--device", help=f"{TrainConfig.device} (default: CUDA when available), cpu, cuda or cuda:N")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help=f"bf16 autocast on CUDA (default {'on' if TrainConfig.amp else 'off'})")
    p.add_argument("--seed", type=int,
                   help=f"seed of weights, split, order, views and augmentation (default {TrainConfig.seed})")
    p.add_argument("--view-chunk", type=int, metavar="N", help="memory: views pushed through U at once in validation "
                   f"and path 2's view cache (default {TrainConfig.view_chunk})")
    p.add_argument("--checkpoint-views", type=int, metavar="N", help="memory, path 1: recompute U's activations in the "
                   f"backward over chunks of N views (default {TrainConfig.checkpoint_views}: keep them)")
    p.add_argument("--path2-copies", type=int, metavar="N", help="path 2: also train F and T on U's views of N "
                   "augmented copies of every training case, views with the errors U makes on data it did not fit "
                   f'(default {TrainConfig.path2_copies}; docs/method.md "The operators")')
    p.add_argument("--resume", action="store_true", help="continue from RUN/pathN_last.pt (path 2: with the --init "
                   "it started from)")
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
    p.add_argument("--view-chunk", type=int, default=DEFAULT_VIEW_CHUNK, metavar="N",
                   help=f"views pushed through U at once (default {DEFAULT_VIEW_CHUNK}); lower it when the GPU runs "
                   "out of memory")
    p.set_defaults(run=_cmd_predict)


def _add_evaluate(commands, parents: list[argparse.ArgumentParser]) -> None:
    p = _command(commands, "evaluate", "Dice, HD95, clDice and volume difference of predictions against labels",
                 "Score a folder of predicted label files against reference labels of the same case names: Dice, "
                 "HD95 (mm), clDice and volume difference per case and class, then mean ± sd per class (sample "
                 "sd, ddof 1) and a last line `mean Dice: …`. Every reference needs a prediction (unless "
                 "--allow-missing) and every prediction must lie on its reference's grid (shape and affine). "
                 "Class names come from a dataset.json beside or above --ref. --csv writes the per-case table, "
                 "--json the per-case scores and per-class summary for scripts.",
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
    if getattr(args, "ops_backend", None):
        os.environ["VOL25D_OPS_BACKEND"] = args.ops_backend  # read by vol25d.ops.backend (and torchrun's workers)
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
