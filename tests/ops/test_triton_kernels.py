"""vol25d.ops.triton_kernels against the reference kernels, run by the Triton interpreter on the CPU.

Triton picks the interpreter when a kernel is *decorated*, that is when ``vol25d.ops.triton_kernels`` is
first imported, and the other tests of this process may import it before us without ``TRITON_INTERPRET``. So
the comparisons run in one subprocess — this file run as a script, with ``TRITON_INTERPRET=1`` and
``VOL25D_OPS_BACKEND=triton`` — which writes every figure to a JSON file; the tests below assert on them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SIZES = [(3, 8, 8), (2, 7, 9), (2, 9, 6)]  # (D, H, W): even, odd and non-square planes
SIZE_IDS = ["x".join(map(str, size)) for size in SIZES]
FP32_RTOL = 1e-5  # relative to the largest magnitude of the reference output
LOW_PRECISION_RTOL = 1e-2  # bf16 / fp16 outputs: 8 (11) significant bits; the interpreter truncates to bf16


# --------------------------------------------------------------------------------------------------------
# The checks, run in the subprocess
# --------------------------------------------------------------------------------------------------------


def _relative_error(actual, expected) -> float:
    expected = expected.float()
    scale = float(expected.abs().max().clamp_min(1e-30))
    return float((actual.float() - expected).abs().max()) / scale


def _angles(count: int, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    extra = torch.rand(count - 2, generator=generator) * 2 * math.pi - math.pi
    return torch.cat([torch.tensor([0.0, math.pi / 2]), extra])  # float32 π/2: edge samples a few ulps out


def _check_raw_kernels(size, figures) -> None:
    """Every raw kernel (flattened batches) against the reference, float32."""
    import torch

    from vol25d.geometry import default_detector
    from vol25d.ops import reference, triton_kernels

    depth, height, width = size
    key = "x".join(map(str, size))
    generator = torch.Generator().manual_seed(depth * 100 + height * 10 + width)
    detector = default_detector(height, width)
    angles = _angles(5, seed=height * width)
    volume = torch.randn(2, depth, height, width, generator=generator)
    views = torch.randn(2, angles.numel(), depth, detector, generator=generator)

    figures[f"project/{key}"] = _relative_error(
        triton_kernels.project(volume, angles, detector), reference.project(volume, angles, detector)
    )
    # A detector narrower than the plane: voxels fall off both ends.
    figures[f"project_narrow/{key}"] = _relative_error(
        triton_kernels.project(volume, angles, 5), reference.project(volume, angles, 5)
    )
    figures[f"backproject/{key}"] = _relative_error(
        triton_kernels.backproject(views, angles, height, width), reference.backproject(views, angles, height, width)
    )
    # Two classes of views on one image: the explained back-projection (image views taken of `volume[:1]`).
    image_views = reference.mip(volume[:1], angles, detector, False)[0]
    margin, softness = torch.tensor([0.1, 0.0]), torch.tensor([0.3, 0.7])
    figures[f"backproject_explained/{key}"] = _relative_error(
        triton_kernels.backproject_explained(views, image_views, volume[:1], angles, margin, softness, height, width),
        reference.backproject_explained(views, image_views, volume[:1], angles, margin, softness, height, width),
    )
    expected, expected_argmax = reference.mip(volume, angles, detector, True)
    actual, argmax = triton_kernels.mip(volume, angles, detector, True)
    figures[f"mip/{key}"] = _relative_error(actual, expected)
    figures[f"mip_argmax_mismatches/{key}"] = int((argmax != expected_argmax).sum())
    figures[f"mip_argmax_dtype/{key}"] = str(argmax.dtype)
    figures[f"mip_empty_rays/{key}"] = int((expected_argmax < 0).sum())
    figures[f"mip_no_argmax/{key}"] = _relative_error(triton_kernels.mip(volume, angles, detector, False)[0], expected)
    grad_views = torch.randn(expected.shape, generator=generator)
    expected_grad = reference.mip_backward(grad_views, expected_argmax, angles, height, width)
    for variant, deterministic in (("scatter", False), ("gather", True)):
        grad = triton_kernels.mip_backward(
            grad_views, expected_argmax, angles, height, width, deterministic=deterministic
        )
        figures[f"mip_backward_{variant}/{key}"] = _relative_error(grad, expected_grad)


def _check_public_ops(size, figures) -> None:
    """Forward and gradients through vol25d.ops with VOL25D_OPS_BACKEND=triton against =reference, and the
    adjoint identity on the Triton path."""
    import torch

    import vol25d.ops as ops

    depth, height, width = size
    key = "x".join(map(str, size))
    generator = torch.Generator().manual_seed(7 + depth * 100 + height * 10 + width)
    angles = _angles(4, seed=height + width)
    volume = torch.randn(1, 2, depth, height, width, generator=generator)
    views_in = torch.randn(1, 2, angles.numel(), depth, 5, generator=generator)
    margin, softness = torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.5])

    def run(backend):
        os.environ["VOL25D_OPS_BACKEND"] = backend
        torch.manual_seed(0)
        out = {}
        for name, op, source in (
            ("mip", lambda x: ops.mip(x, angles), volume),
            ("project", lambda x: ops.project(x, angles), volume),
            ("backproject", lambda v: ops.backproject(v, angles, (height, width)), views_in),
            ("backproject_explained", lambda v: ops.backproject_explained(
                v, ops.mip(volume[:, :1], angles, 5), volume[:, :1], angles, margin, softness), views_in),
        ):
            leaf = source.clone().requires_grad_()
            result = op(leaf)
            weights = torch.linspace(-1, 2, result.numel()).reshape(result.shape)
            (result * weights).sum().backward()
            out[name] = (result.detach(), leaf.grad)
        return out

    triton_out, reference_out = run("triton"), run("reference")
    os.environ["VOL25D_OPS_BACKEND"] = "triton"
    for name in triton_out:
        figures[f"public_{name}_forward/{key}"] = _relative_error(triton_out[name][0], reference_out[name][0])
        figures[f"public_{name}_grad/{key}"] = _relative_error(triton_out[name][1], reference_out[name][1])

    views = ops.project(volume, angles)
    probe = torch.randn(views.shape, generator=generator)
    lhs = float((views.double() * probe.double()).sum())
    rhs = float((volume.double() * ops.backproject(probe, angles, (height, width)).double()).sum())
    figures[f"adjoint/{key}"] = abs(lhs - rhs) / abs(lhs)


def _check_low_precision(figures) -> None:
    """bf16 and fp16 inputs: fp32 accumulation, output in the input's dtype; compared with the float32
    reference on the same (rounded) input."""
    import torch

    from vol25d.geometry import default_detector
    from vol25d.ops import reference, triton_kernels

    depth, height, width = 2, 7, 9
    detector = default_detector(height, width)
    angles = _angles(4, seed=3)
    generator = torch.Generator().manual_seed(11)
    for dtype in (torch.bfloat16, torch.float16):
        name = str(dtype).removeprefix("torch.")
        volume = torch.randn(2, depth, height, width, generator=generator).to(dtype)
        views = torch.randn(2, angles.numel(), depth, detector, generator=generator).to(dtype)
        results = {
            "project": (
                triton_kernels.project(volume, angles, detector),
                reference.project(volume.float(), angles, detector),
            ),
            "backproject": (
                triton_kernels.backproject(views, angles, height, width),
                reference.backproject(views.float(), angles, height, width),
            ),
            "mip": (
                triton_kernels.mip(volume, angles, detector, False)[0],
                reference.mip(volume.float(), angles, detector, False)[0],
            ),
        }
        for op, (actual, expected) in results.items():
            figures[f"{op}_{name}/error"] = _relative_error(actual, expected)
            figures[f"{op}_{name}/dtype"] = str(actual.dtype)


def _check_tiling_and_determinism(figures) -> None:
    """Tiles much smaller than the problem (several bin blocks, voxel tiles, partial D-slabs and view
    blocks), and bit-for-bit repeatability of the deterministic kernels."""
    import torch

    from vol25d.geometry import default_detector
    from vol25d.ops import reference, triton_kernels

    depth, height, width = 3, 5, 7
    detector = default_detector(height, width)
    angles = _angles(4, seed=5)
    generator = torch.Generator().manual_seed(13)
    volume = torch.randn(1, depth, height, width, generator=generator)
    views = torch.randn(1, angles.numel(), depth, detector, generator=generator)
    figures["small_tiles_project"] = _relative_error(
        triton_kernels.project(volume, angles, detector, block_d=2, block_s=4),
        reference.project(volume, angles, detector),
    )
    figures["small_tiles_backproject"] = _relative_error(
        triton_kernels.backproject(views, angles, height, width, block_d=2, block_h=4, block_w=4),
        reference.backproject(views, angles, height, width),
    )
    image_views = reference.mip(volume, angles, detector, False)[0]
    one = (torch.tensor([0.1]), torch.tensor([0.3]))
    figures["small_tiles_backproject_explained"] = _relative_error(
        triton_kernels.backproject_explained(views, image_views, volume, angles, *one, height, width, block_d=2,
                                             block_h=4, block_w=4),
        reference.backproject_explained(views, image_views, volume, angles, *one, height, width),
    )
    expected, expected_argmax = reference.mip(volume, angles, detector, True)
    actual, argmax = triton_kernels.mip(volume, angles, detector, True, block_d=2, block_s=4, views_per_program=3)
    figures["small_tiles_mip"] = _relative_error(actual, expected)
    figures["small_tiles_mip_argmax_mismatches"] = int((argmax != expected_argmax).sum())
    grad = triton_kernels.mip_backward(views, argmax, angles, height, width, deterministic=False, block_d=2, block_s=4)
    figures["small_tiles_mip_backward"] = _relative_error(
        grad, reference.mip_backward(views, expected_argmax, angles, height, width)
    )

    # Both layouts: every view from the (N, D, H, W) volume, or the |cos| ≥ |sin| ones from a (N, D, W, H) copy.
    for copy in (False, True):
        figures[f"layout_copy={copy}_project"] = _relative_error(
            triton_kernels.project(volume, angles, detector, transposed_copy=copy),
            reference.project(volume, angles, detector),
        )
        actual, argmax_copy = triton_kernels.mip(volume, angles, detector, True, transposed_copy=copy)
        figures[f"layout_copy={copy}_mip"] = _relative_error(actual, expected)
        figures[f"layout_copy={copy}_mip_argmax_mismatches"] = int((argmax_copy != expected_argmax).sum())

    repeats = {
        "project": lambda: triton_kernels.project(volume, angles, detector),
        "backproject": lambda: triton_kernels.backproject(views, angles, height, width),
        "mip": lambda: triton_kernels.mip(volume, angles, detector, True)[0],
        "mip_backward_gather": lambda: triton_kernels.mip_backward(
            views, argmax, angles, height, width, deterministic=True
        ),
    }
    for name, kernel in repeats.items():
        figures[f"repeatable_{name}"] = bool(torch.equal(kernel(), kernel()))
    figures["default_is_atomic_scatter"] = not triton_kernels._deterministic(None)
    os.environ["VOL25D_DETERMINISTIC"] = "1"
    figures["env_selects_gather"] = triton_kernels._deterministic(None)
    del os.environ["VOL25D_DETERMINISTIC"]


def _run_checks(path: str) -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"
    from vol25d.ops import backend, triton_kernels

    figures = {"interpreted": triton_kernels._interpreted()}
    os.environ["VOL25D_OPS_BACKEND"] = "triton"
    import torch

    figures["backend_is_triton"] = backend.kernels_for(torch.zeros(1)).module is triton_kernels
    # The self-check `auto` runs before a Triton kernel's first use on a device, on the real kernels.
    for dtype in (torch.float32, torch.bfloat16):
        for kernel in backend.KERNELS:
            try:
                backend.self_check(triton_kernels, kernel, "cpu", dtype)
                figures[f"self_check/{kernel}/{dtype}"] = "ok"
            except Exception as error:  # noqa: BLE001 — the test below shows it
                figures[f"self_check/{kernel}/{dtype}"] = repr(error)
    for size in SIZES:
        _check_raw_kernels(size, figures)
        _check_public_ops(size, figures)
    _check_low_precision(figures)
    _check_tiling_and_determinism(figures)
    with open(path, "w") as handle:
        json.dump(figures, handle, indent=1)


def _compile_for_sm90() -> None:
    """Compile every kernel (float32 and bfloat16 data) to an sm_90 cubin, no GPU needed: this catches the
    type and specialisation errors the interpreter lets through. Prints one line per kernel."""
    assert os.environ.get("TRITON_INTERPRET", "0") != "1"
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    from vol25d.ops import triton_kernels as kernels

    tiles = {"BLOCK_D": 4, "BLOCK_S": 64, "BLOCK_H": 16, "BLOCK_W": 16, "VIEWS": 2}
    flags = {"KEEP_ARGMAX": True, "HAS_TRANSPOSED": True}
    float_pointers = {"cos_ptr", "sin_ptr", "floor_ptr", "grad_ptr", "margin_ptr", "softness_ptr"}  # float32 whatever the data's dtype
    for name in ("_backproject_kernel", "_backproject_explained_kernel", "_project_kernel", "_mip_kernel", "_mip_backward_scatter_kernel",
                 "_mip_backward_gather_kernel"):  # fmt: skip
        fn = getattr(kernels, name)
        for dtype in ("fp32", "bf16"):
            signature, constexprs = {}, {}
            for index, arg in enumerate(fn.arg_names):
                if arg.isupper():
                    signature[arg] = "constexpr"
                    constexprs[(index,)] = tiles.get(arg, flags.get(arg))
                elif arg == "arg_ptr":
                    signature[arg] = "*i32"
                elif arg.endswith("_ptr"):
                    signature[arg] = "*fp32" if arg in float_pointers else f"*{dtype}"
                elif arg in ("classes", "count", "depth", "height", "width", "detector"):
                    signature[arg] = "i32"
                else:
                    signature[arg] = "fp32"
            compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs), target=GPUTarget("cuda", 90, 32))
            print(f"compiled {name} {dtype}")


# --------------------------------------------------------------------------------------------------------
# The tests, in the pytest process
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    path = tmp_path_factory.mktemp("triton_kernels") / "figures.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "VOL25D_OPS_BACKEND": "triton"}
    env.pop("VOL25D_DETERMINISTIC", None)
    result = subprocess.run(
        [sys.executable, __file__, str(path)], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"the interpreter checks failed:\n{result.stderr[-6000:]}"
    return json.loads(path.read_text())


def test_the_subprocess_ran_the_triton_kernels_in_the_interpreter(figures):
    assert figures["interpreted"] is True
    assert figures["backend_is_triton"] is True


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("kernel", ["project", "backproject", "backproject_explained", "mip", "mip_backward"])
def test_every_triton_kernel_passes_the_backends_self_check(figures, kernel, dtype):
    assert figures[f"self_check/{kernel}/torch.{dtype}"] == "ok"


@pytest.mark.parametrize("size", SIZE_IDS)
def test_adjoint_identity_on_the_triton_path(figures, size):
    assert figures[f"adjoint/{size}"] <= 1e-5


@pytest.mark.parametrize("size", SIZE_IDS)
@pytest.mark.parametrize("kernel", ["project", "project_narrow", "backproject", "backproject_explained", "mip",
                                    "mip_no_argmax"])
def test_forward_kernels_match_the_reference(figures, kernel, size):
    assert figures[f"{kernel}/{size}"] <= FP32_RTOL


@pytest.mark.parametrize("size", SIZE_IDS)
def test_mip_argmax_matches_the_reference(figures, size):
    assert figures[f"mip_argmax_dtype/{size}"] == "torch.int32"
    assert figures[f"mip_argmax_mismatches/{size}"] == 0
    assert figures[f"mip_empty_rays/{size}"] > 0  # the default detector reaches past the plane at θ = 0


@pytest.mark.parametrize("size", SIZE_IDS)
@pytest.mark.parametrize("variant", ["scatter", "gather"])
def test_mip_backward_matches_the_reference(figures, variant, size):
    assert figures[f"mip_backward_{variant}/{size}"] <= FP32_RTOL


@pytest.mark.parametrize("size", SIZE_IDS)
@pytest.mark.parametrize("op", ["mip", "project", "backproject", "backproject_explained"])
@pytest.mark.parametrize("part", ["forward", "grad"])
def test_public_ops_and_their_gradients_match_the_reference_backend(figures, op, part, size):
    assert figures[f"public_{op}_{part}/{size}"] <= FP32_RTOL


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("op", ["project", "backproject", "mip"])
def test_low_precision_inputs_accumulate_in_fp32_and_keep_their_dtype(figures, op, dtype):
    assert figures[f"{op}_{dtype}/dtype"] == f"torch.{dtype}"
    assert figures[f"{op}_{dtype}/error"] <= LOW_PRECISION_RTOL


@pytest.mark.parametrize("kernel", ["project", "backproject", "backproject_explained", "mip", "mip_backward"])
def test_small_tiles_cover_the_problem(figures, kernel):
    assert figures[f"small_tiles_{kernel}"] <= FP32_RTOL
    if kernel == "mip":
        assert figures["small_tiles_mip_argmax_mismatches"] == 0


@pytest.mark.parametrize("copy", [False, True])
@pytest.mark.parametrize("kernel", ["project", "mip"])
def test_both_volume_layouts_match_the_reference(figures, kernel, copy):
    assert figures[f"layout_copy={copy}_{kernel}"] <= FP32_RTOL
    if kernel == "mip":
        assert figures[f"layout_copy={copy}_mip_argmax_mismatches"] == 0


@pytest.mark.parametrize("kernel", ["project", "backproject", "mip", "mip_backward_gather"])
def test_deterministic_kernels_repeat_bit_for_bit(figures, kernel):
    assert figures[f"repeatable_{kernel}"] is True


def test_vol25d_deterministic_selects_the_gather_backward(figures):
    assert figures["default_is_atomic_scatter"] is True
    assert figures["env_selects_gather"] is True


def test_every_kernel_compiles_for_an_h100_without_a_gpu():
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    result = subprocess.run(
        [sys.executable, __file__, "--compile-sm90"], env=env, capture_output=True, text=True, timeout=600
    )
    if result.returncode != 0 and "ptxas" in result.stderr and "No such file" in result.stderr:
        pytest.skip("this Triton install has no ptxas")
    assert result.returncode == 0, result.stderr[-6000:]
    assert result.stdout.count("compiled ") == 12


def test_cpu_tensors_without_the_interpreter_are_refused():
    import torch

    from vol25d.ops import triton_kernels

    if triton_kernels._interpreted():
        pytest.skip("this process imported the kernels under TRITON_INTERPRET=1")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        triton_kernels.project(torch.zeros(1, 2, 4, 4), torch.zeros(1), 6)


if __name__ == "__main__":
    if sys.argv[1] == "--compile-sm90":
        _compile_for_sm90()
    else:
        _run_checks(sys.argv[1])
