"""The CUDA checks of ``experiments/gpu_check.sh``, and its summary.

``python experiments/gpu_check.py ops --device cuda --sizes 128 256 --out DIR`` compares every operator and
Triton kernel with the reference PyTorch kernels on the same device — forward, gradients and the adjoint
identity, float32 and bfloat16 — and the model's forward and backward on the device with the same model on
the CPU. It writes ``DIR/cuda_checks.json`` and ``DIR/cuda_checks.md`` and exits 1 when a check fails.
With ``--device cpu`` (and ``TRITON_INTERPRET=1``) the same checks run the Triton kernels in the
interpreter: that is the script's ``--dry-run``, which the test suite runs at tiny sizes.

``python experiments/gpu_check.py summary --out DIR`` writes ``DIR/summary.md``: the machine (GPU, driver,
torch, Triton), whether every step passed, each step's status and time, and the figures the steps printed. It
needs no torch, so a run whose steps all failed for want of it still gets its summary.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

try:
    import torch
except ImportError as error:  # the summary is written without it; the ops checks refuse to run
    torch, _NO_TORCH = None, f"{type(error).__name__}: {error}"

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _provenance import commit, cpu_count, cpu_name, utc_now  # noqa: E402

# Tolerances relative to the largest magnitude of the reference output.
FP32_RTOL = 1e-4  # float32 sums over a 256-voxel ray in another order
BF16_RTOL = 2e-2  # bf16 outputs carry 8 significant bits
ADJOINT_RTOL = 5e-5  # <P x, y> against <x, Pᵀ y> (float32 kernels, dot products in float64)
MODEL_RTOL = 2e-3  # the model on the device against the CPU, float32, no autocast
MODEL_AMP_RTOL = 1e-1  # the same with bf16 autocast on the device (U in bf16)


def _relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    expected = expected.detach().double().cpu()
    scale = float(expected.abs().max().clamp_min(1e-30))
    return float((actual.detach().double().cpu() - expected).abs().max()) / scale


class Checks:
    """Named figures with their tolerance; ``failed`` lists those over it."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, name: str, value: float, tolerance: float, seconds: float | None = None) -> None:
        ok = math.isfinite(value) and value <= tolerance
        self.rows.append({"check": name, "value": value, "tolerance": tolerance, "ok": ok, "seconds": seconds})
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {value:.3g} (≤ {tolerance:g})", flush=True)

    @property
    def failed(self) -> list[str]:
        return [row["check"] for row in self.rows if not row["ok"]]


def _angles(count: int, device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(count)
    extra = torch.rand(count - 2, generator=generator) * 2 * math.pi - math.pi
    return torch.cat([torch.tensor([0.0, math.pi / 2]), extra]).to(device)  # π/2: edge samples a few ulps out


def _with_backend(backend: str, fn):
    previous = os.environ.get("VOL25D_OPS_BACKEND")
    os.environ["VOL25D_OPS_BACKEND"] = backend
    try:
        return fn()
    finally:
        if previous is None:
            os.environ.pop("VOL25D_OPS_BACKEND")
        else:
            os.environ["VOL25D_OPS_BACKEND"] = previous


def check_operators(checks: Checks, size: int, device: torch.device, views_count: int = 16) -> None:
    """mip, project and backproject through ``vol25d.ops`` on the Triton kernels against the reference
    kernels on the same device: forward and the gradient of a weighted sum, float32 and bfloat16 (bf16 against
    the float32 reference on the same rounded input); mip's backward both ways; the adjoint identity."""
    import vol25d.ops as ops
    from vol25d.geometry import default_detector
    from vol25d.ops import reference, triton_kernels

    shape = (size, size, size)
    detector = default_detector(size, size)
    angles = _angles(views_count, device)
    generator = torch.Generator().manual_seed(size)
    volume = torch.randn(1, 1, *shape, generator=generator).to(device)
    views = torch.randn(1, 1, views_count, size, detector, generator=generator).to(device)
    operators = {
        "mip": (lambda x: ops.mip(x, angles), volume),
        "project": (lambda x: ops.project(x, angles), volume),
        "backproject": (lambda v: ops.backproject(v, angles, (size, size)), views),
    }
    for dtype, tolerance in ((torch.float32, FP32_RTOL), (torch.bfloat16, BF16_RTOL)):
        tag = "fp32" if dtype == torch.float32 else "bf16"
        for name, (op, source) in operators.items():
            def run(backend, source=source.to(dtype), op=op):
                leaf = source.clone().requires_grad_()
                start = time.perf_counter()
                result = op(leaf if backend == "triton" else leaf.float())
                weights = torch.linspace(-1, 2, result.numel(), device=device).reshape(result.shape)
                (result.float() * weights).sum().backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                return result.detach(), leaf.grad, time.perf_counter() - start

            actual, grad, seconds = _with_backend("triton", lambda: run("triton"))
            expected, expected_grad, _ = _with_backend("reference", lambda: run("reference"))
            checks.add(f"{name} forward {size}³ {tag}", _relative(actual, expected), tolerance, seconds)
            if name != "mip":
                checks.add(f"{name} gradient {size}³ {tag}", _relative(grad, expected_grad), tolerance)
            elif dtype == torch.float32:  # (a bf16 tie moves a ray's winner: no fixed tolerance there)
                # Near-ties may pick another winner on a few of millions of rays, moving their gradient to a
                # neighbouring voxel: measured as a share of the gradient's L1 mass, not at the worst voxel.
                moved = float((grad - expected_grad).abs().sum() / expected_grad.abs().sum().clamp_min(1e-30))
                checks.add(f"mip gradient {size}³ fp32 (L1 share)", moved, tolerance)
        if dtype == torch.bfloat16:
            checks.add(f"mip output dtype {size}³ bf16", float(ops.mip(volume.to(dtype), angles).dtype != dtype), 0)
    flat = volume.reshape(1, *shape)
    expected, argmax = reference.mip(flat, angles, detector, True)
    actual, triton_argmax = triton_kernels.mip(flat, angles, detector, True)
    checks.add(f"mip argmax mismatches {size}³ (share of rays)", float((triton_argmax != argmax).float().mean()), 1e-5)
    grad_views = torch.randn(expected.shape, generator=generator).to(device)
    expected_grad = reference.mip_backward(grad_views, argmax, angles, size, size)
    for variant, deterministic in (("scatter", False), ("gather", True)):
        grad = triton_kernels.mip_backward(grad_views, argmax, angles, size, size, deterministic=deterministic)
        checks.add(f"mip backward ({variant}) {size}³", _relative(grad, expected_grad), FP32_RTOL)
    for backend in ("triton", "reference"):
        probe = torch.randn(1, 1, views_count, size, detector, generator=generator).to(device)
        projected = _with_backend(backend, lambda: ops.project(volume, angles))
        back = _with_backend(backend, lambda: ops.backproject(probe, angles, (size, size)))
        lhs = float((projected.double() * probe.double()).sum())
        rhs = float((volume.double() * back.double()).sum())
        checks.add(f"adjoint <Px, y> = <x, Pᵀy> {size}³ {backend}", abs(lhs - rhs) / abs(lhs), ADJOINT_RTOL)


def check_auto(checks: Checks, device: torch.device) -> None:
    """``VOL25D_OPS_BACKEND=auto`` self-checks every kernel on ``device`` and keeps the Triton kernels (the
    check's name says what it chose: a fallback names the kernel and its error)."""
    from vol25d.ops import backend

    kernels = _with_backend("auto", lambda: backend.resolve(device))
    checks.add(f"auto keeps the Triton kernels after their self-check: {kernels}", float(kernels != "triton"), 0)


def check_model(checks: Checks, size: int, device: torch.device) -> None:
    """The model on ``device`` against the same weights on the CPU: eval output (all ``m`` views in chunks)
    and the gradients of a path-1 training loss, float32; then with bf16 autocast on the device."""
    from vol25d.device import autocast
    from vol25d.model import Random25DUNet
    from vol25d.ops import mip
    from vol25d.train import Objective, TrainConfig

    torch.manual_seed(0)
    cpu_model = Random25DUNet(1, 1, directions=16, views=4, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    model = Random25DUNet(1, 1, directions=16, views=4, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    model.load_state_dict(cpu_model.state_dict())
    model.to(device)
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(1, 1, size, size, size, generator=generator)
    label = (torch.rand(1, 1, size, size, size, generator=generator) > 0.9).float()
    angles = cpu_model.angles[[0, 3, 7, 12]]
    objective = Objective(TrainConfig())

    def run(net, where, amp):
        net.eval()
        with torch.no_grad(), autocast(where, amp):
            output = net(image.to(where))
        net.train()
        net.zero_grad()
        with autocast(where, amp):
            trained, views = net(image.to(where), angles.to(where), return_views=True)
        objective(trained, label.to(where), views, mip(label.to(where), angles.to(where))).backward()
        grads = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
        return output, grads

    expected, expected_grads = _with_backend("reference", lambda: run(cpu_model, torch.device("cpu"), False))
    # On the CPU (the dry run) the device side runs the Triton kernels in the interpreter; there is no autocast.
    where = "cuda" if device.type == "cuda" else "cpu, Triton interpreted"
    for amp, tolerance in ((False, MODEL_RTOL), (True, MODEL_AMP_RTOL))[: 2 if device.type == "cuda" else 1]:
        tag = "bf16 autocast" if amp else "fp32"
        output, grads = _with_backend("triton", lambda: run(model, device, amp))
        checks.add(f"model eval output ({where}) vs cpu {size}³ {tag}", _relative(output, expected), tolerance)
        checks.add(f"model gradients ({where}) vs cpu {size}³ {tag}", _relative(grads, expected_grads), tolerance)


def write_checks(checks: Checks, out: Path, device: torch.device) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "cuda_checks.json").write_text(json.dumps(checks.rows, indent=1))
    lines = [f"# Operator and model checks on {_device_name(device)}", "",
             f"{len(checks.rows) - len(checks.failed)} of {len(checks.rows)} within tolerance.", "",
             "| check | value | tolerance | ok | s |", "|---|---|---|---|---|"]
    for r in checks.rows:
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.3f}"
        lines.append(f"| {r['check']} | {r['value']:.3g} | {r['tolerance']:g} | {'yes' if r['ok'] else '**no**'} | "
                     f"{seconds} |")
    (out / "cuda_checks.md").write_text("\n".join(lines) + "\n")


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"


def _command(args: list[str]) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_lines() -> list[str]:
    """GPU, driver, CUDA, torch, Triton, Python, CPU, commit and time, one line each."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    gpu = _command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if torch is None:
        name, versions = "unknown (no torch)", f"torch not importable ({_NO_TORCH})"
    else:
        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU run)"
        versions = f"torch {torch.__version__} (CUDA {torch.version.cuda})"
    return [
        f"- GPU: {name}",
        f"- nvidia-smi: {gpu or 'not available'}",
        f"- {versions}, Triton {triton_version}, Python {platform.python_version()}",
        f"- CPU: {cpu_name()}, {cpu_count()} cores",
        f"- vol25d at commit {commit()}; written {utc_now()}",
    ]


# Figures the steps print: per step, (label, regular expression on its log; group 1 is the figure).
_FIGURES = {
    "train": [("kernels", r"^(path\d: projection kernels on .*)"), ("path 1", r"path 1: (.*)"),
              ("path 2", r"path 2: (.*)"), ("predict", r"(wrote \d+ file.*)"),
              ("held-out mean Dice", r"mean Dice: (.*)")],
    "benchmark": [("benchmark", r"^(\w[\w-]*: Dice .*)"), ("sweep", r"^sweep (.*)")],
}


def summary(out: Path) -> str:
    """``summary.md`` from the steps' table (``steps.tsv``) and logs in ``out``."""
    lines = ["# vol25d GPU check", "", f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "## Machine", "", *machine_lines(), "", "## Steps", "", "| step | status | seconds | log |",
             "|---|---|---|---|"]
    steps = []
    table = out / "steps.tsv"
    if table.exists():
        steps = [line.split("\t") for line in table.read_text().splitlines() if line.strip()]
    bad = [f"{name} ({status})" for name, status, _ in steps if status != "ok"]
    verdict = (f"**{len(bad)} of {len(steps)} steps not ok: {', '.join(bad)}**" if bad else
               f"all {len(steps)} steps ok" if steps else "**no step ran**")
    lines[lines.index("## Steps") + 1: lines.index("## Steps") + 1] = ["", verdict]
    for name, status, seconds in steps:
        lines.append(f"| {name} | {status} | {seconds} | [{name}.log]({name}.log) |")
    lines += ["", "## Figures", ""]
    for name, _, _ in steps:
        log = out / f"{name}.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        for label, pattern in _FIGURES.get(name, []):
            found = re.findall(pattern, text, flags=re.MULTILINE)
            lines += [f"- {label}: {figure}" for figure in found] or [f"- {label}: not reached"]
    for name, title in (("cuda_checks.md", "operator and model checks"), ("bench_ops.md", "bench_ops"),
                        ("benchmark.md", "benchmark and sweep")):
        lines.append(f"- {title}: " + (f"[{name}]({name})" if (out / name).exists() else "not written"))
    checks = out / "cuda_checks.json"
    if checks.exists():
        rows = json.loads(checks.read_text())
        failed = [r["check"] for r in rows if not r["ok"]]
        lines.append(f"- checks within tolerance: {len(rows) - len(failed)} of {len(rows)}"
                     + (f"; failed: {', '.join(failed)}" if failed else ""))
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ops_parser = commands.add_parser("ops", help="operators, kernels and model against the reference")
    ops_parser.add_argument("--device", default="cuda")
    ops_parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    ops_parser.add_argument("--views", type=int, default=16, help="directions per operator call")
    ops_parser.add_argument("--model-size", type=int, default=64, help="volume side of the model check")
    ops_parser.add_argument("--out", type=Path, required=True)
    summary_parser = commands.add_parser("summary", help="write OUT/summary.md from the steps' logs")
    summary_parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "summary":
        print(summary(args.out))
        return 0
    if torch is None:
        print(f"error: the checks need torch, which does not import ({_NO_TORCH})")
        return 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is available; use --device cpu with TRITON_INTERPRET=1")
        return 1
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        print("error: on the CPU the Triton kernels run only in the interpreter; set TRITON_INTERPRET=1")
        return 1
    checks = Checks()
    if device.type == "cuda":  # (on the CPU auto runs the reference kernels: nothing to check)
        check_auto(checks, device)
    for size in args.sizes:
        check_operators(checks, size, device, args.views)
    check_model(checks, args.model_size, device)
    write_checks(checks, args.out, device)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main())
