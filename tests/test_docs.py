"""The documentation as a newcomer meets it: a short README with the set-up commands first, links that lead
somewhere, docstrings that cite sections the docs have, and a results index that names every file."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
RESULTS = ROOT / "experiments" / "results"


def _headings(path: Path) -> set[str]:
    return {line.lstrip("#").strip() for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#")}


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_the_readme_is_short_and_starts_with_install_and_quick_start():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    sections = [line[3:] for line in readme.splitlines() if line.startswith("## ")]
    assert sections[:2] == ["Install", "Quick start"], sections
    assert "python -m pytest -q" in readme  # CI runs the README's test command
    assert "pip install -e ." in readme and "vol25d demo --out" in readme
    assert "<" + "this repository>" not in readme


def test_every_relative_link_of_the_readme_and_docs_leads_to_a_file_and_heading():
    broken = []
    for page in [ROOT / "README.md", RESULTS / "README.md", *DOCS]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in {_anchor(h) for h in _headings(resolved)}:
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, broken


def test_docstrings_cite_sections_that_the_docs_have():
    cited = []
    for path in sorted((ROOT / "vol25d").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "DESIGN.md" not in text, f"{path.relative_to(ROOT)} cites DESIGN.md; the document is docs/design.md"
        for page, name in re.findall(r'docs/(\w+\.md)[^"\n]{0,3}"([^"]+)"', text):
            cited.append((path, page, " ".join(name.split())))
    assert {page for _, page, _ in cited} >= {"design.md", "method.md"}
    missing = [f"{path.relative_to(ROOT)}: docs/{page} {name!r}" for path, page, name in cited
               if not (ROOT / "docs" / page).exists() or name not in _headings(ROOT / "docs" / page)]
    assert not missing, missing


def test_the_results_index_names_every_results_file():
    index = (RESULTS / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"[\w./{},-]+\.(?:md|png|\{md,png\})", index))
    expanded, pending = set(), set(named)
    while pending:  # `x_seed{0,1,2}.{md,png}` names six files
        name = pending.pop()
        match = re.search(r"\{([^}]+)\}", name)
        if match:
            pending |= {name[:match.start()] + part + name[match.end():] for part in match.group(1).split(",")}
        else:
            expanded.add(name)
    # a row names a run folder's files by their own names, so compare file names
    names = {Path(n).name for n in expanded}
    missing = [str(p.relative_to(RESULTS)) for p in sorted(RESULTS.rglob("*"))
               if p.is_file() and p.name != "README.md" and p.name not in names]
    assert not missing, f"experiments/results/README.md does not name {missing}"
