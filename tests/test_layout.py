"""The package's shape, as a newcomer meets it: short functions, and a design document that names every module."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vol25d"
MAX_LINES = 60  # lines of code per function, its docstring not counted
WHOLE = "reads better whole"  # how a long kernel or algorithm says why it is not split


def _functions(path: Path):
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            docstring = ast.get_docstring(node) or ""
            if docstring:
                body = body[1:]
            if not body:
                continue
            code = lines[body[0].lineno - 1:body[-1].end_lineno]
            # A Triton kernel cannot carry a docstring everywhere Triton compiles it: its first comments count.
            leading = " ".join(line.strip().lstrip("#") for line in lines[node.lineno - 1:body[0].lineno + 8]
                               if line.strip().startswith("#"))
            yield node.name, len(code), " ".join(docstring.split()) + " " + " ".join(leading.split())


def test_no_function_in_the_package_is_long_unless_it_says_why():
    long = [f"{path.relative_to(ROOT)}:{name} ({n} lines)" for path in sorted(PACKAGE.rglob("*.py"))
            for name, n, words in _functions(path) if n > MAX_LINES and WHOLE not in words]
    assert not long, f"functions over {MAX_LINES} lines of code; split them or say why they {WHOLE}: {long}"


def test_the_exceptions_are_few_and_say_what_they_are():
    exempt = {name for path in PACKAGE.rglob("*.py") for name, n, words in _functions(path)
              if n > MAX_LINES and WHOLE in words}
    assert exempt <= {"_vessel_trees", "_mip_kernel"}, exempt


def test_the_design_documents_module_map_names_every_module():
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = design.split("## Where each concern lives", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([^`]+)`", section))
    words = {w for token in named for w in re.split(r"[^\w.]+", token)}
    words |= {w.lstrip(".") for w in set(words)} | {w.rsplit(".", 1)[-1] for w in set(words)}
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if path.stem in ("__init__", "__main__") or path.stem.startswith("_"):
            continue
        if module not in words and path.stem not in words:
            missing.append(module)
    assert not missing, f"docs/design.md's module map ('Where each concern lives') does not name {missing}"
