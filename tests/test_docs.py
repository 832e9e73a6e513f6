"""The project's docs: every file they point to is in the repository, and the workloads
table says what ``_workloads.py`` runs."""

import re
from pathlib import Path

import pytest

from batchbald_fast._workloads import WORKLOADS

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Directories the docs name as outputs of a command, not as part of the repository.
GENERATED = {"batchbald_fast_demo"}
# Extensions of files the docs may point to inside the repository.
EXTENSIONS = {".md", ".py", ".pyx", ".pxd", ".h", ".png", ".gif", ".toml", ".in", ".txt",
              ".cfg", ".json", ".yml", ".yaml", ".sh"}

LINK = re.compile(r"!?\[[^\]]*\]\(\s*([^)\s]+)[^)]*\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
CODE_SPAN = re.compile(r"`([^`]+)`")
PATH_TOKEN = re.compile(r"^/?(?:[\w.-]+/)*[\w.-]+/?$")
MD_NAME = re.compile(r"(?<![\w./-])((?:\.\.?/)?[\w.-]+(?:/[\w.-]+)*\.md)\b")


def _slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path):
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {_slug(h) for h in re.findall(r"^#+ +(.+?) *#*$", text, re.M)}


def _references(doc, root):
    """(reference, candidate paths) for every file the document points to."""
    text = doc.read_text(encoding="utf-8")
    here = doc.parent
    # Links resolve against the document's directory, as GitHub renders them.
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z+.-]*:", target) or target.startswith("#"):
            continue
        yield target, [here / target]
    # Paths in code (commands, file names) are relative to the repository root, where the
    # commands run, or to the document.
    code = FENCE.findall(text) + CODE_SPAN.findall(FENCE.sub("", text))
    for token in (t.strip("()[]{},;:'\"") for chunk in code for t in chunk.split()):
        if not PATH_TOKEN.match(token) or "/" not in token:
            continue
        if token.split("/")[0] in GENERATED:
            continue
        if token.endswith("/") or Path(token).suffix in EXTENSIONS:
            yield token, [root / token, here / token]
    # Names of Markdown files anywhere, in code or prose.
    for name in MD_NAME.findall(text):
        yield name, [here / name, root / name]


def dangling(doc, root=ROOT):
    """References of ``doc`` to files (or headings) missing from the tree at ``root``."""
    missing = []
    for reference, candidates in _references(doc, root):
        anchor = reference.partition("#")[2]
        paths = [Path(str(c).partition("#")[0]) for c in candidates]
        found = [p for p in paths if p.resolve().is_relative_to(root.resolve()) and p.exists()]
        if not found:
            missing.append(reference)
        elif anchor and found[0].suffix == ".md" and anchor not in _anchors(found[0]):
            missing.append(f"{reference} (no such heading)")
    return missing


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_docs_point_only_to_files_in_the_repository(doc):
    missing = dangling(doc)
    assert not missing, f"{doc.relative_to(ROOT)} points to what the repository lacks: {missing}"


def test_dangling_references_are_caught(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "present.py").write_text("")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text("# Guide\n\n## The README's figures\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "See MATHS.md, `../outside/` and [the guide](docs/guide.md), its\n"
        "[figures](docs/guide.md#the-readmes-figures) and [more](docs/guide.md#nothing).\n"
        "```bash\npython benchmarks/present.py W2 && python benchmarks/missing.py W2\n```\n"
        "`batchbald_fast_demo/batchbald_demo.gif` is an output; [a site](https://x.org/a.md),\n"
        "`batchbald_fast.redux` a module, `W1,W2` names, guide.md is in docs/.\n")
    assert sorted(dangling(readme, tmp_path)) == sorted([
        "MATHS.md", "../outside/", "docs/guide.md#nothing (no such heading)",
        "benchmarks/missing.py", "guide.md"])
    assert dangling(tmp_path / "docs" / "guide.md", tmp_path) == []


def test_workloads_table_matches_the_code():
    text = (ROOT / "docs" / "workloads.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| W") and len(cells) > 5:
            rows[cells[0]] = tuple(int(c.replace(",", "")) for c in cells[1:6])
    assert rows == {name: (w.N, w.K, w.C, w.batch_size, w.num_samples)
                    for name, w in WORKLOADS.items()}
