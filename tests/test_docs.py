"""Docs that are generated from the code stay true to it."""

from __future__ import annotations

from conftest import REPO

from tuner.agent.config import reference


def test_agent_config_reference_matches_the_code():
    assert reference() in (REPO / "docs/agent.md").read_text()
