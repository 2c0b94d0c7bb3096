"""Where the CPU time of vol25d goes: each stage's share of a whole-volume prediction and of a path-1 training step.

Stages (DESIGN.md): **M** the image's MIPs (``Random25DUNet.projections``), **U** the 2-D U-Net on the views
(``view_probabilities``), **F+R** the filtration and the (explained, by default) back-projection
(``reconstruct``), **T** the head, and, for prediction, **preprocess** (``preprocess_image``) and **restore**
(``restore``) between the file's grid and the model's.

*Prediction*: the default model (m = 64, ``view_chunk`` 16) in eval mode under ``no_grad``, its chunks of views
run stage by stage exactly as ``Random25DUNet._reconstruct_in_chunks`` runs them, each stage timed; the whole
``model(x)`` is also timed on its own ("model, end to end"). *Path-1 step*: p random views; each stage's forward
and backward on detached inputs (U: views → probabilities; F+R: probabilities → reconstruction; T: head, Dice
loss and their backward), then the AdamW step; "step, end to end" is the same step as
``experiments/bench_ops.py`` times (MONAI ``DiceLoss``). Every figure is the best of ``--repeats`` runs after a
warm-up, in wall and in this thread's CPU seconds, on float32 random-normal volumes (a phantom for the
preprocessing and restore rows). A last table times vol25d's prediction against a slice U-Net's (``slice2d`` of
``experiments/benchmark.py``) on the harness's real-size shape, interleaved.

Usage (one command): ``python experiments/profile_stages.py [--sizes 48 128 256] [--threads 1] [--repeats 3]
[--out experiments/results/profile_stages.md] [--note TEXT]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch
from monai.losses import DiceLoss

from vol25d.data.phantom import make_phantom
from vol25d.data.preprocess import PreprocessConfig, preprocess_image, restore
from vol25d.geometry import random_directions
from vol25d.io import Volume
from vol25d.model import Random25DUNet
from vol25d.ops.backend import kernels_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit, cpu_count, cpu_name, utc_now  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def best_of(fn, repeats: int) -> tuple[float, float]:
    """Best ``(wall, thread CPU)`` seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.thread_time()
        fn()
        walls.append(time.perf_counter() - start)
        cpus.append(time.thread_time() - cpu)
    return min(walls), min(cpus)


class _Clock:
    """Wall and thread-CPU seconds since the last :meth:`lap`."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.thread_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.thread_time()
        elapsed = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return elapsed


def _add(times: dict, name: str, elapsed: tuple[float, float]) -> None:
    wall, cpu = times.get(name, (0.0, 0.0))
    times[name] = (wall + elapsed[0], cpu + elapsed[1])


def prediction_stages(size: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Seconds per stage of one whole-volume prediction of a ``size``³ volume."""
    model = Random25DUNet(1, 1).eval()
    x = torch.randn(1, 1, size, size, size)
    plane = (size, size)
    angles = model.angles
    stages: dict[str, tuple[float, float]] = {}

    def staged():
        times: dict[str, tuple[float, float]] = {}
        with torch.no_grad():
            volume = None
            for start in range(0, angles.numel(), model.view_chunk):
                part = angles[start : start + model.view_chunk]
                clock = _Clock()
                views = model.projections(x, part)
                _add(times, "M", clock.lap())
                probabilities = model.view_probabilities(views)
                _add(times, "U", clock.lap())
                rebuilt = model.reconstruct(probabilities, part, plane, x, views) * part.numel()
                volume = rebuilt if volume is None else volume + rebuilt
                _add(times, "F+R", clock.lap())
            clock = _Clock()
            model.head(volume / angles.numel(), x)
            _add(times, "T", clock.lap())
        return times

    staged()
    runs = [staged() for _ in range(repeats)]
    for name in runs[0]:
        stages[name] = (min(run[name][0] for run in runs), min(run[name][1] for run in runs))

    image, _, affine = make_phantom((size, size, size), seed=0, spacing=(1.0, 1.0, 1.0))
    config = PreprocessConfig(max_voxels=0, crop_foreground=False)
    volume = Volume(image, affine)
    stages["preprocess"] = best_of(lambda: preprocess_image(volume, config), repeats)
    tensor, info = preprocess_image(volume, config)
    prob = torch.rand(1, *tensor.shape[1:])
    stages["restore"] = best_of(lambda: restore(prob, info), repeats)
    with torch.no_grad():
        stages["model, end to end"] = best_of(lambda: model(x), repeats)
    return stages


def train_stages(size: int, views: int, repeats: int) -> dict[str, tuple[float, float]]:
    """Seconds per stage (forward + backward) of one path-1 step on a ``size``³ volume with ``p = views``."""
    torch.manual_seed(0)
    model = Random25DUNet(1, 1, views=views).train()
    x = torch.randn(1, 1, size, size, size)
    label = (x > 1.5).float()
    plane = (size, size)
    loss_fn = DiceLoss(include_background=True, smooth_nr=1e-5, smooth_dr=1e-5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    angles = random_directions(model.config.directions, views, generator)
    views_ = model.projections(x, angles)
    probabilities = model.view_probabilities(views_).detach()
    rebuilt = model.reconstruct(probabilities, angles, plane, x, views_).detach()
    stages: dict[str, tuple[float, float]] = {}
    stages["M"] = best_of(lambda: model.projections(x, angles), repeats)

    def u_step():
        out = model.view_probabilities(views_)
        out.backward(torch.ones_like(out))

    def fr_step():
        p = probabilities.clone().requires_grad_(True)
        out = model.reconstruct(p, angles, plane, x, views_)
        out.backward(torch.ones_like(out))

    def t_step():
        r = rebuilt.clone().requires_grad_(True)
        loss_fn(model.head(r, x), label).backward()

    stages["U"] = best_of(u_step, repeats)
    stages["F+R"] = best_of(fr_step, repeats)
    stages["T (with loss)"] = best_of(t_step, repeats)
    optimizer.zero_grad(set_to_none=True)
    u_step(), fr_step(), t_step()
    stages["AdamW step"] = best_of(optimizer.step, repeats)

    def step():
        optimizer.zero_grad(set_to_none=True)
        chosen = random_directions(model.config.directions, views, generator)
        loss_fn(model(x, chosen), label).backward()
        optimizer.step()

    stages["step, end to end"] = best_of(step, repeats)
    return stages


def table(stages: dict[str, tuple[float, float]], total_key: str) -> list[str]:
    """Markdown rows: stage, wall and thread-CPU seconds, share of the sum of the stages' CPU seconds (the
    end-to-end row has no share)."""
    parts = {k: v for k, v in stages.items() if k != total_key}
    wall, cpu = sum(v[0] for v in parts.values()), sum(v[1] for v in parts.values())
    rows = ["| stage | wall s | CPU s | share (CPU) |", "| --- | --- | --- | --- |"]
    rows += [f"| {name} | {w:.3f} | {c:.3f} | {100 * c / cpu:.0f} % |" for name, (w, c) in parts.items()]
    rows.append(f"| sum of the stages | {wall:.3f} | {cpu:.3f} | 100 % |")
    rows.append(f"| {total_key} | {stages[total_key][0]:.3f} | {stages[total_key][1]:.3f} | — |")
    return rows


def slice_unet_comparison(shape: tuple[int, int, int], repeats: int) -> list[str]:
    """vol25d's prediction (the default model, all m = 64 directions) against a slice U-Net's on one
    ``(D, H, W)`` tensor, interleaved: experiments/benchmark.py's ``slice2d`` (MONAI 2-D ``UNet`` with vol25d's
    default channels, the ``D`` slices zero-padded to a multiple of 16, 32 at a time)."""
    from monai.networks.nets import UNet

    model = Random25DUNet(1, 1).eval()
    config = model.config
    net = UNet(spatial_dims=2, in_channels=1, out_channels=1, channels=config.channels, strides=config.strides,
               num_res_units=2).eval()
    x = torch.randn(1, 1, *shape)
    multiple = 2 ** len(config.strides)
    pad_h, pad_w = -shape[1] % multiple, -shape[2] % multiple

    def slice2d():
        padded = torch.nn.functional.pad(x[0], (0, pad_w, 0, pad_h))  # (1, D, H', W')
        parts = [net(padded[:, start : start + 32].transpose(0, 1)) for start in range(0, shape[0], 32)]
        return torch.sigmoid(torch.cat(parts)[..., : shape[1], : shape[2]])

    closures = {"vol25d": lambda: model(x), "slice2d": slice2d}
    best = {name: (float("inf"), float("inf")) for name in closures}
    with torch.no_grad():
        for fn in closures.values():
            fn()
        for _ in range(repeats):
            for name, fn in closures.items():
                start, c0 = time.perf_counter(), time.thread_time()
                fn()
                wall, cpu = time.perf_counter() - start, time.thread_time() - c0
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    (vw, vc), (sw, sc) = best["vol25d"], best["slice2d"]
    return ["| method | wall s | CPU s |", "| --- | --- | --- |", f"| vol25d, m = 64 | {vw:.3f} | {vc:.3f} |",
            f"| slice2d | {sw:.3f} | {sc:.3f} |", f"| vol25d ÷ slice2d | {vw / sw:.2f}× | {vc / sc:.2f}× |"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[48, 128], help="cube sides (default 48 128)")
    parser.add_argument("--predict-sizes", nargs="+", type=int, default=None,
                        help="sides for the prediction rows only (default: --sizes)")
    parser.add_argument("--views", type=int, default=8, help="p of the path-1 step (default 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure, best taken (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS / "profile_stages.md")
    parser.add_argument("--note", default=None, help="a line for the report's machine section")
    parser.add_argument("--real-size", type=int, nargs=3, default=(113, 152, 122), metavar=("D", "H", "W"),
                        help="the (D, H, W) of the prediction against a slice U-Net (default 113 152 122, the "
                             "harness's preprocessed real-size MRI); 0 0 0 skips it")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    sections = []
    for size in args.predict_sizes or args.sizes:
        print(f"prediction {size}³ …", file=sys.stderr, flush=True)
        sections += [f"### Prediction, {size}³, m = 64 (chunks of 16 views)", "",
                     *table(prediction_stages(size, args.repeats), "model, end to end"), ""]
    for size in args.sizes:
        print(f"path-1 step {size}³ …", file=sys.stderr, flush=True)
        sections += [f"### Path-1 training step, {size}³, p = {args.views}", "",
                     *table(train_stages(size, args.views, args.repeats), "step, end to end"), ""]
    if all(args.real_size):
        shape = tuple(args.real_size)
        print(f"vol25d against slice2d at {shape} …", file=sys.stderr, flush=True)
        sections += [f"### Prediction against a slice U-Net, D×H×W = {'×'.join(map(str, shape))}", "",
                     *slice_unet_comparison(shape, args.repeats), ""]
    load_end = os.getloadavg()
    now = utc_now()
    command = "python experiments/profile_stages.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        "# vol25d on the CPU: each stage's share of prediction and of a path-1 step", "",
        f"Written by `{command.strip()}` on {now}.", "",
        f"- Machine: {cpu_name()}, {cpu_count()} CPU(s); {platform.platform()}; torch {torch.__version__} on "
        f"{args.threads} thread(s).",
        f"- Load average (1 min) {load_start[0]:.1f} at the start and {load_end[0]:.1f} at the end on "
        f"{cpu_count()} CPU(s), this run's own thread included"
        + ("; other jobs shared the cores, so the seconds are upper bounds." if load_start[0] > 1.0 else
           "; no other job was running (load below 1 at the start)."),
        f"- Commit: {commit()}; CPU kernels: `{kernels_for(torch.empty(1)).__name__}`.",
        *( [f"- Note: {args.note}"] if args.note else []), "",
        "Stages: M = the image's MIPs, U = the 2-D U-Net on the views, F+R = filtration and explained "
        "back-projection, T = the head (in training with the Dice loss); prediction also reads preprocess "
        "(`preprocess_image`, no crop, no resampling cap) and restore (`restore`). Each figure is the best of "
        f"{args.repeats} runs after a warm-up; the share is of the sum of the stages; training stages are "
        "forward + backward; wall and this thread's CPU seconds (the steadier figure on a shared machine). See the "
        "script's docstring.", "",
        *sections,
    ]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
