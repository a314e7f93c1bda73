"""The map stays true: every file of the package that a docstring, a comment, README.md or
docs/architecture.md names as ``<package>/<module>.py`` exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "jodiffusion"
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file())
# ``training/joint.py``, ``data/importer/plan.py``: a path that starts at one of the package's own folders
REFERENCE = re.compile(rf"(?<![\w/.-])((?:{'|'.join(SUBPACKAGES)})/(?:\w+/)*\w+\.py)\b")


def _references(path: Path) -> list[tuple[int, str]]:
    return [(number, match.group(1)) for number, line in enumerate(path.read_text().splitlines(), start=1)
            for match in REFERENCE.finditer(line)]


SOURCES = [*sorted(PACKAGE.rglob("*.py")), REPO / "README.md", REPO / "docs" / "architecture.md"]


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_modules_exist(source):
    missing = [f"line {number}: {ref}" for number, ref in _references(source) if not (PACKAGE / ref).is_file()]
    assert not missing, f"{source.relative_to(REPO)} names modules that do not exist: {missing}"


def test_the_pattern_finds_references():
    # the check above would pass vacuously if the pattern matched nothing
    found = {ref for _, ref in _references(REPO / "docs" / "architecture.md")}
    assert "training/joint.py" in found and len(found) > 20
