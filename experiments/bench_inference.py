"""Inference time and peak memory per method on the CPU, at sizes up to a real-size scan: vol25d's whole volume
against nnU-Net's sliding window (issue 29, item 4).

Usage:
    python experiments/bench_inference.py [--sizes 48,128,256,512x512x150] [--methods vol25d,nnunet-3d,...]
                                          [--timeout-s 300] [--threads 1] [--workers 1]
                                          [--out experiments/results/NAME.md]

Each cell (method × size) runs in a fresh process with ``--timeout-s``: the seconds are one prediction of one
volume, from the image in memory (a :class:`vol25d.io.Volume` for vol25d and the harness's baselines, nnU-Net's
reader's array for nnU-Net) to the mask on its grid, after one untimed warm-up prediction on a small volume;
the peak memory is the process's peak resident set (``ru_maxrss``), the Python and torch it imports included
(given alone in the ``import only`` row). A cell that does not finish in time is reported as stopped, with the
seconds it ran: a lower bound, not an estimate.

What is predicted is the same for every method: a noise image of the size with bright tubes, 0.5 mm voxels
in-plane and 1 mm slices for the non-cubic size (isotropic 0.5 mm otherwise), at full resolution (vol25d's
voxel cap is lifted to the volume; nnU-Net plans the size itself, from two such images, so its patch and
spacing are what it would choose for such data). Weights are fresh: the time of a forward pass does not depend
on them. Methods:

- ``vol25d``: :class:`vol25d.infer.Predictor` with the default :class:`vol25d.model.ModelConfig`.
- ``nnunet-3d``, ``nnunet-2d``: nnU-Net v2's ``3d_fullres`` and ``2d`` networks as planned, through
  ``nnUNetPredictor.predict_single_npy_array`` with its defaults (step 0.5, Gaussian, mirroring); ``…-nomirror``
  without mirroring.
- ``slice2d``, ``dynunet3d``: the benchmark harness's baselines (``experiments/benchmark.py``), their
  preprocessing and restore included.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit, cpu_count, cpu_name, utc_now  # noqa: E402

METHODS = ("vol25d", "nnunet-3d", "nnunet-3d-nomirror", "nnunet-2d", "nnunet-2d-nomirror", "slice2d", "dynunet3d")
DEFAULT_SIZES = "48,128,256,512x512x150"


def parse_size(text: str) -> tuple[int, int, int]:
    """``"256"`` → ``(256, 256, 256)``; ``"512x512x150"`` → ``(512, 512, 150)`` (X, Y, Z)."""
    parts = [int(p) for p in text.lower().split("x")]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 16:
        raise ValueError(f"size {text!r}: give N or XxYxZ, each at least 16")
    return tuple(parts)


def spacing_for(size) -> tuple[float, float, float]:
    return (0.5, 0.5, 0.5) if len(set(size)) == 1 else (0.5, 0.5, 1.0)


def make_volume(size, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image float32, label uint8, affine)`` in (X, Y, Z): noise with a few bright straight tubes."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100.0, 20.0, size).astype(np.float32)
    label = np.zeros(size, np.uint8)
    x, y = np.meshgrid(np.arange(size[0]), np.arange(size[1]), indexing="ij")
    for _ in range(6):
        cx, cy, r = rng.uniform(0.2, 0.8) * size[0], rng.uniform(0.2, 0.8) * size[1], max(1.5, size[0] / 60)
        label[(x - cx) ** 2 + (y - cy) ** 2 <= r * r, :] = 1
    image[label > 0] += 300.0
    affine = np.diag([*spacing_for(size), 1.0])
    return image, label, affine


# --- one cell, in its own process ----------------------------------------------------------------------------

def _vol25d(size, work: Path):
    import torch

    from vol25d.data.planning import plan_from_volumes
    from vol25d.infer import Predictor
    from vol25d.io import Volume
    from vol25d.model import ModelConfig, Random25DUNet

    image, _, affine = make_volume(size)
    volume = Volume(image, affine)
    voxels = int(np.prod(size))
    preprocess = plan_from_volumes([volume], max_voxels=voxels)
    model = Random25DUNet.from_config(ModelConfig()).eval()
    predictor = Predictor(model, preprocess, ["vessel"], ["MRA"], False, torch.device("cpu"), amp=False)
    small = Volume(image[:32, :32, :32].copy(), affine)
    warm = Predictor(model, plan_from_volumes([small]), ["vessel"], ["MRA"], False, torch.device("cpu"), amp=False)
    return (lambda: warm.labels(warm.probabilities([small]))), (lambda: predictor.labels(predictor.probabilities([volume])))


def _harness(method: str, size, work: Path):
    import torch

    import benchmark
    from vol25d.data.planning import plan_from_volumes
    from vol25d.data.preprocess import preprocess_image, restore
    from vol25d.io import Volume

    image, _, affine = make_volume(size)
    volume = Volume(image, affine)
    preprocess = plan_from_volumes([volume], max_voxels=int(np.prod(size)))
    settings = benchmark.Settings(1.0, size[0], 1, 1, None, torch.device("cpu"), smoke=False)
    model = benchmark.Baseline(method, settings, 1, 1)

    @torch.no_grad()
    def run(vol, config):
        tensor, info = preprocess_image([vol], config)
        return restore(model.predict(tensor), info).array >= 0.5

    small = Volume(image[:32, :32, :32].copy(), affine)
    small_config = plan_from_volumes([small])
    return (lambda: run(small, small_config)), (lambda: run(volume, preprocess))


def _nnunet(method: str, size, work: Path):
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import nnunet_baseline as nnunet

    nnunet.check_installed()
    folders = nnunet.use_folders(work)
    raw = folders["nnUNet_raw"] / nnunet.DATASET_NAME
    for sub in ("imagesTr", "labelsTr"):
        (raw / sub).mkdir(parents=True, exist_ok=True)
    import nibabel as nib

    for case in range(2):
        image, label, affine = make_volume(size, seed=case)
        nib.save(nib.Nifti1Image(image, affine), raw / "imagesTr" / f"case{case}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), raw / "labelsTr" / f"case{case}.nii.gz")
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRA"},
                                                  "labels": {"background": 0, "vessel": 1}, "numTraining": 2,
                                                  "file_ending": ".nii.gz"}))
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    threads = torch.get_num_threads()
    extract_fingerprints([nnunet.DATASET_ID], num_processes=1, verbose=False, show_progress_bar=False)
    plan_experiments([nnunet.DATASET_ID])
    torch.set_num_threads(threads)  # the planner resets them
    plans = json.loads((folders["nnUNet_preprocessed"] / nnunet.DATASET_NAME / "nnUNetPlans.json").read_text())
    manager = PlansManager(plans)
    configuration = manager.get_configuration("2d" if method.startswith("nnunet-2d") else "3d_fullres")
    network = nnUNetTrainer.build_network_architecture(manager, configuration, 1, 2, enable_deep_supervision=False)
    network.eval()
    dataset_json = json.loads((raw / "dataset.json").read_text())
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=not method.endswith("nomirror"),
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    mirror_axes = (0, 1) if method.startswith("nnunet-2d") else (0, 1, 2)
    predictor.manual_initialization(network, manager, configuration, [network.state_dict()], dataset_json,
                                    "nnUNetTrainer", mirror_axes)
    array, properties = SimpleITKIO().read_images([str(raw / "imagesTr" / "case0_0000.nii.gz")])
    small = np.ascontiguousarray(array[:, :32, :32, :32])
    patch = "×".join(str(int(n)) for n in configuration.patch_size)
    info = f"patch {patch}, spacing {'×'.join(f'{s:g}' for s in configuration.spacing)}"
    return ((lambda: predictor.predict_single_npy_array(small, properties)),
            (lambda: predictor.predict_single_npy_array(array, properties)), info)


def cell(method: str, size, threads: int) -> dict:
    """One prediction of ``method`` at ``size``: seconds, peak RSS (GiB), and what nnU-Net planned."""
    import torch

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="vol25d-bench-inference-") as scratch:
        work = Path(scratch)
        info = ""
        if method == "import":
            return {"seconds": 0.0, "peak_gib": _peak_gib()}
        if method == "vol25d":
            warm, run = _vol25d(size, work)
        elif method.startswith("nnunet"):
            warm, run, info = _nnunet(method, size, work)
            print(json.dumps({"info": info}), flush=True)  # read even if the cell is stopped
        else:
            warm, run = _harness(method, size, work)
        warm()
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_gib": _peak_gib(), "info": info} if info else {"seconds": seconds,
                                                                                   "peak_gib": _peak_gib()}


def _peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB on Linux


# --- the table ----------------------------------------------------------------------------------------------

def _peak_of(pid: int) -> float | None:
    """The peak resident memory (GiB) of a running process so far (``VmHWM``), or ``None``."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        return None
    return None


def run_cell(method: str, size, threads: int, timeout_s: float, core: int | None = None) -> dict:
    """``cell`` in a fresh process (pinned to ``core`` where given); ``{"stopped": seconds, "peak_gib": …}``
    when it ran past ``timeout_s`` (its peak memory so far), ``{"error": …}`` when it failed."""
    # nnU-Net's planner sets torch's threads to nnUNet_n_proc_DA, so it is at least 1; prediction does not augment.
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "nnUNet_n_proc_DA": "1"}
    command = [sys.executable, __file__, "--cell", method, "x".join(map(str, size)), "--threads", str(threads)]
    pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                          preexec_fn=pin) as process:
        peak = None
        while process.poll() is None and time.perf_counter() - start < timeout_s:
            peak = _peak_of(process.pid) or peak
            time.sleep(0.5)
        if process.poll() is None:
            peak = _peak_of(process.pid) or peak
            process.kill()
            out, _ = process.communicate()
            return {"stopped": time.perf_counter() - start, "peak_gib": peak, **_info(out)}
        out, err = process.communicate()
    if process.returncode != 0:
        return {"error": (err.strip().splitlines() or ["no message"])[-1]}
    return {**_info(out), **json.loads(out.strip().splitlines()[-1])}


def _info(out: str) -> dict:
    lines = [json.loads(line) for line in out.splitlines() if line.startswith('{"info"')]
    return lines[-1] if lines else {}


def _cell_text(result: dict) -> str:
    plan = f" ({result['info']})" if result.get("info") else ""
    if "stopped" in result:
        peak = f", ≥ {result['peak_gib']:.2f} GiB so far" if result.get("peak_gib") else ""
        return f"stopped after {result['stopped']:.0f} s{peak}{plan}"
    if "error" in result:
        return f"failed: {result['error'][:80]}"
    return f"{result['seconds']:.2f} s, {result['peak_gib']:.2f} GiB{plan}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="cells at once, each pinned to its own core "
                        "(default 1)")
    parser.add_argument("--out", type=Path, help="the Markdown table to write (default: print only)")
    parser.add_argument("--cell", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cell:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        print(json.dumps(cell(args.cell[0], parse_size(args.cell[1]), args.threads)))
        return 0
    try:
        sizes = [parse_size(text) for text in args.sizes.split(",")]
    except ValueError as error:
        parser.error(str(error))
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    names = ["×".join(map(str, s)) for s in sizes]
    lines = ["# Inference on the CPU: one volume, file grid to mask", "",
             "Seconds of one prediction and the process's peak resident memory; see experiments/bench_inference.py "
             "for what is inside both.", "",
             "| method | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(sizes)]
    imported = run_cell("import", sizes[0], args.threads, args.timeout_s)
    cells = [(method, size) for method in methods for size in sizes]
    results: dict[tuple, dict] = {}
    cores = sorted(os.sched_getaffinity(0))
    free = list(cores[: max(1, args.workers)])

    def one(job):
        core = free.pop()
        try:
            result = run_cell(job[0], job[1], args.threads, args.timeout_s, core if args.workers > 1 else None)
        finally:
            free.append(core)
        print(f"{job[0]} {'×'.join(map(str, job[1]))}: {_cell_text(result)}", flush=True)
        return job, result

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
        results = dict(pool.map(one, cells))
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(_cell_text(results[(method, s)]) for s in sizes) + " |")
    import torch

    lines += ["", f"import only (Python, torch, numpy): {imported.get('peak_gib', float('nan')):.2f} GiB peak.", "",
              f"- Machine: {cpu_name()}, {cpu_count()} CPU(s); torch {torch.__version__}; {args.threads} torch "
              f"thread(s) per cell; commit {commit()}; {utc_now()}",
              f"- Timeout per cell: {args.timeout_s:g} s; {max(1, args.workers)} cell(s) at once, "
              + ("each pinned to its own core." if args.workers > 1 else "one after another.")]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        temporary = args.out.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
