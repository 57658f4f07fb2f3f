"""The repository stands on its own (issue 11: the README and comments cited DESIGN §4, ../shared/VERISOUL.md
and PERSONA.md, which are not in it): every document cited is in docs/, and every section cited exists."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tracked_texts() -> dict[str, str]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    texts = {}
    for name in names:
        path = ROOT / name
        if path.suffix in (".py", ".md", ".toml", ".ini", ".txt", ".example", "") and path.is_file():
            texts[name] = path.read_text(errors="replace")
    return texts


def test_nothing_cites_a_document_outside_the_repository():
    outside = re.compile(r"\.\./shared|DESIGN §|DESIGN\.md|(?<!docs/)PERSONA\.md|(?<!docs/)VERISOUL\.md")
    citing = {
        name for name, text in tracked_texts().items() if outside.search(text) and name != "tests/unit/test_docs.py"
    }
    assert citing == set()


def test_every_document_cited_in_docs_exists():
    cited = {match for text in tracked_texts().values() for match in re.findall(r"docs/[\w-]+\.md", text)}
    assert cited and all((ROOT / name).is_file() for name in cited), sorted(cited)


def test_every_section_of_the_contracts_cited_exists():
    headings = set(re.findall(r"^## §(\d+)\.", (ROOT / "docs" / "contracts.md").read_text(), flags=re.M))
    cited = {n for text in tracked_texts().values() for n in re.findall(r"docs/contracts\.md §(\d+)", text)}
    assert cited and cited <= headings, cited - headings
