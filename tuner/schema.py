"""Validation of typed, ranged settings, shared by the agent's config and experiment specs.

A schema maps ``"section.key"`` to ``(type, default, allowed, meaning)``: ``allowed`` is a
``(lo, hi)`` range for numbers, a tuple of choices for strings and lists, a compiled pattern
a string must match whole, ``str`` for a list of names, or None (a list of None takes
numbers).

>>> SCHEMA = {"agent.window_ms": (int, 100, (10, 10000), "window, in milliseconds")}
>>> check_value(SCHEMA, "agent.window_ms", 250, "t.toml")
250
>>> check_value(SCHEMA, "agent.window_ms", 0, "t.toml")
Traceback (most recent call last):
...
tuner.errors.TunerError: 'agent.window_ms' in t.toml must be in the range [10, 10000] \
(window, in milliseconds); got 0
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from tuner.errors import TunerError

Schema = dict[str, tuple[type, Any, Any, str]]


def check_value(schema: Schema, key: str, value: Any, source: str) -> Any:
    """``value`` converted (an int where a float is wanted) and checked, or a
    :class:`TunerError` that names the key, the constraint and the value."""
    typ, _, allowed, help_ = schema[key]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise TunerError(f"{key!r} in {source} must be a {typ.__name__} ({help_}); got {value!r}")
    if typ is list:
        if isinstance(allowed, tuple):
            if not value or any(v not in allowed for v in value) or len(set(value)) != len(value):
                raise TunerError(
                    f"{key!r} in {source} must list distinct values of {', '.join(allowed)}; "
                    f"got {value!r}"
                )
        elif allowed is str:
            if not all(isinstance(v, str) and v for v in value):
                raise TunerError(
                    f"{key!r} in {source} must be a list of names ({help_}); got {value!r}"
                )
        elif not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            raise TunerError(
                f"{key!r} in {source} must be a list of numbers ({help_}); got {value!r}"
            )
    elif isinstance(allowed, tuple) and typ in (int, float):
        lo, hi = allowed
        if not lo <= value <= hi:
            raise TunerError(
                f"{key!r} in {source} must be in the range [{lo}, {hi}] ({help_}); got {value!r}"
            )
    elif isinstance(allowed, re.Pattern) and not allowed.fullmatch(value):
        raise TunerError(f"{key!r} in {source} is not allowed ({help_}); got {value!r}")
    elif isinstance(allowed, tuple) and value not in allowed:
        raise TunerError(f"{key!r} in {source} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def read_toml(path: str | Path, what: str, fix: str) -> dict[str, Any]:
    """Parse a TOML file, or raise a one-line :class:`TunerError` naming the file.

    >>> read_toml("/nonexistent.toml", "config file", "check the path")
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: config file /nonexistent.toml does not exist; fix: check the path
    """
    p = Path(path)
    try:
        return tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise TunerError(f"{what} {p} does not exist", fix) from None
    except (OSError, UnicodeDecodeError) as e:
        raise TunerError(f"cannot read {what} {p}: {e}", fix) from None
    except tomllib.TOMLDecodeError as e:
        raise TunerError(f"{p} is not valid TOML: {e}", "fix the syntax") from None


def check_positive(name: str, value: float | None) -> None:
    """A command-line number that must be above 0 (None: not given).

    >>> check_positive("--seconds", 0)
    Traceback (most recent call last):
    ...
    tuner.errors.TunerError: --seconds must be > 0; got 0
    """
    if value is not None and value <= 0:
        raise TunerError(f"{name} must be > 0; got {value}")


def toml_value(v: Any) -> str:
    """One value as TOML writes it.

    >>> toml_value(True), toml_value(0.8), toml_value("linear"), toml_value([1, 2])
    ('true', '0.8', '"linear"', '[1, 2]')
    """
    return json.dumps(v) if not isinstance(v, bool) else str(v).lower()


def to_toml(values: dict[str, Any]) -> str:
    """``section.key`` values (or ``{section: {key: value}}``) as TOML text.

    >>> print(to_toml({"a.x": 1, "a.y": "s", "b.z": [1, 2], "b.t": True}))
    [a]
    x = 1
    y = "s"
    <BLANKLINE>
    [b]
    z = [1, 2]
    t = true
    <BLANKLINE>
    """
    flat = {
        f"{sec}.{k}" if isinstance(body, dict) else sec: v
        for sec, body in values.items()
        for k, v in (body.items() if isinstance(body, dict) else [("", body)])
    }
    sections: dict[str, list[str]] = {}
    for key, v in flat.items():
        sec, name = key.split(".", 1)
        sections.setdefault(sec, []).append(f"{name} = {toml_value(v)}")
    return "\n".join(f"[{sec}]\n" + "\n".join(lines) + "\n" for sec, lines in sections.items())
