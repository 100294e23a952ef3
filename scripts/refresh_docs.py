"""Regenerate the tables in docs/ that come from the code (the tests check they match):
the agent's configuration reference in docs/agent.md.

usage: .venv/bin/python scripts/refresh_docs.py
"""

from pathlib import Path

from tuner.agent.config import reference

path = Path(__file__).resolve().parent.parent / "docs" / "agent.md"
lines = path.read_text().split("\n")
start = next(i for i, x in enumerate(lines) if x.startswith("| key | type | default | meaning |"))
end = start
while end < len(lines) and lines[end].startswith("|"):
    end += 1
path.write_text("\n".join(lines[:start] + reference().split("\n") + lines[end:]))
print(f"refreshed {path}")
