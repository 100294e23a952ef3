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
