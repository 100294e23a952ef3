"""Docs that are generated from the code stay true to it."""

from __future__ import annotations

from conftest import REPO

from tuner.agent.config import reference


def test_agent_config_reference_matches_the_code():
    assert reference() in (REPO / "docs/agent.md").read_text()


def test_trace_schema_table_matches_the_code():
    from tuner.trace.schema import COLUMNS

    text = (REPO / "docs/traces.md").read_text()
    for name, typ, meaning in COLUMNS:
        assert f"| `{name}` | {typ} | {meaning} |" in text, name


def test_docs_stand_on_their_own():
    """Every relative link in the README and docs/ resolves inside the repository, and none
    points outside it (docs once sent readers to ../shared/PLATFORM.md)."""
    import re

    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            assert path.is_relative_to(REPO.resolve()), (page, target)
            assert path.exists(), (page, target)
        assert "shared/PLATFORM" not in page.read_text(), page
