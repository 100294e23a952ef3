"""Shared fixtures. Tests marked ``kernel`` load real BPF programs and need root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
collect_ignore = ["scripts"]  # programs the tests run, not tests


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root: loads BPF programs into the kernel")
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


def run_tuner(
    *args: str, timeout: float = 120, check: bool = False, **kwargs
) -> subprocess.CompletedProcess:
    """Run the ``tuner`` command line in a subprocess, as a user would."""
    proc = subprocess.run(
        [sys.executable, "-m", "tuner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        **kwargs,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"tuner {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


@pytest.fixture
def tuner_cli():
    """The :func:`run_tuner` helper."""
    return run_tuner
