"""Build the `vol25d-wheels` Kaggle dataset: a wheel of vol25d and of each dependency the Kaggle image lacks.

Run it where the notebooks will run — best in a Kaggle notebook with internet *on* (same image, same Python),
then make its output a dataset; or on any Linux x86-64 machine with the Kaggle image's Python and packages::

    python experiments/kaggle/build_wheels.py --out /kaggle/working/vol25d-wheels --username YOU

Steps, each with pip's own machinery:

1. ``pip install --dry-run --report`` of this project asks pip what it *would* install into the running
   environment: exactly the distributions this environment lacks (or holds in a version vol25d does not
   accept). Nothing is installed.
2. torch, torchvision, torchaudio, triton and the ``nvidia-*`` CUDA wheels are never built (gigabytes, and
   the image's own PyTorch matches its CUDA driver): if pip wants one, the script stops and says which.
3. ``pip wheel --no-deps`` writes vol25d's wheel and one wheel per missing distribution, in the versions pip
   chose (a published wheel is downloaded as is; an sdist is built).
4. ``pip install --dry-run --no-index --find-links OUT OUT/vol25d-….whl`` checks, offline, that these wheels and the
   environment's packages together install vol25d — what the notebooks do with internet off.

It also writes ``dataset-metadata.json`` (``YOU/vol25d-wheels``) so that ``kaggle datasets create -p OUT``
uploads the folder as is.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("build_wheels")

PROJECT = Path(__file__).resolve().parents[2]
DATASET_SLUG = "vol25d-wheels"
# The image's PyTorch stack: never rebuilt, whatever pip would prefer.
_IMAGE_ONLY = re.compile(r"^(torch|torchvision|torchaudio|triton|pytorch-triton|nvidia-.*)$")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheels_to_build(report: dict, project_name: str = "vol25d") -> list[str]:
    """The distributions a ``pip install --dry-run --report`` would install, less the project itself.

    Args:
        report: pip's installation report (JSON, version 1): ``{"install": [{"metadata": {"name", "version"},
            …}, …]}``.
        project_name: the project being installed (built from its folder, not pinned).

    Returns:
        ``["name==version", …]``, sorted by name.

    Raises:
        SystemExit: pip wants a distribution of the image's PyTorch stack (torch, triton, nvidia-* …), naming
            it and the version the environment would need.
    """
    wanted = {(_canonical(item["metadata"]["name"]), item["metadata"]["version"]) for item in report["install"]}
    wanted = {(name, version) for name, version in wanted if name != _canonical(project_name)}
    image_only = sorted(f"{name}=={version}" for name, version in wanted if _IMAGE_ONLY.match(name))
    if image_only:
        raise SystemExit(
            f"pip would install {', '.join(image_only)}: this environment's PyTorch stack does not satisfy "
            "vol25d's requirements (pyproject.toml). Run this script in the Kaggle image the notebooks use, or "
            "relax the torch requirement; torch and CUDA wheels are not part of the wheels dataset"
        )
    return sorted(f"{name}=={version}" for name, version in wanted)


def _pip(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", *args]
    log.info("%s", " ".join(command))
    return subprocess.run(command, check=True, text=True, capture_output=True)


def build(out: Path, project: Path = PROJECT, username: str = "INSERT_USERNAME", index: bool = True) -> list[Path]:
    """Write the wheels, check them offline, and write ``dataset-metadata.json``; return the wheel files.

    Args:
        out: the folder to fill (created; existing wheels are kept, so a rerun only adds).
        project: the vol25d source tree.
        username: the Kaggle account that will own the dataset.
        index: ``False`` passes ``--no-index`` to the resolution (an offline machine whose environment
            already holds every dependency: then only vol25d's wheel is built).
    """
    out.mkdir(parents=True, exist_ok=True)
    offline = [] if index else ["--no-index"]
    with tempfile.TemporaryDirectory() as folder:
        report_path = Path(folder) / "report.json"
        _pip("install", "--dry-run", "--quiet", "--no-build-isolation", *offline, "--report", str(report_path),
             str(project))
        report = json.loads(report_path.read_text())
    missing = wheels_to_build(report)
    log.info("the environment lacks %d distribution(s): %s", len(missing), ", ".join(missing) or "none")
    with tempfile.TemporaryDirectory() as folder:
        # From a clean copy: setuptools builds in the source tree, and a stale build/ there would put modules
        # since deleted into the wheel (and leave build/ and *.egg-info behind).
        source = Path(folder) / "vol25d"
        shutil.copytree(project / "vol25d", source / "vol25d", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copyfile(project / name, source / name)
        _pip("wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(source))
    if missing:
        _pip("wheel", "--no-deps", "--quiet", *offline, "-w", str(out), *missing)
    # The wheel file itself, not the name "vol25d": a file is always resolved (with its dependencies), even
    # where a vol25d is already installed.
    project_wheel = max(out.glob("vol25d-*.whl"), key=lambda path: path.stat().st_mtime)
    _pip("install", "--dry-run", "--quiet", "--no-index", "--find-links", str(out), str(project_wheel))
    metadata = {"title": "vol25d wheels", "id": f"{username}/{DATASET_SLUG}", "licenses": [{"name": "other"}]}
    (out / "dataset-metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    wheels = sorted(out.glob("*.whl"))
    for wheel in wheels:
        log.info("%s (%.1f MB)", wheel.name, wheel.stat().st_size / 1e6)
    return wheels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the wheels (the dataset's content)")
    parser.add_argument("--username", default="INSERT_USERNAME", help="Kaggle account owning the dataset")
    parser.add_argument("--no-index", action="store_true", help="resolve offline, from this environment only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        wheels = build(args.out, username=args.username, index=not args.no_index)
    except subprocess.CalledProcessError as error:
        raise SystemExit(f"{' '.join(error.cmd[2:4])} failed:\n{error.stderr.strip()}") from None
    print(f"{args.out}: {len(wheels)} wheel(s); upload with: kaggle datasets create -p {args.out}")


if __name__ == "__main__":
    main()
