"""Exceptions that carry a message fit to show a user as is."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class CurateError(Exception):
    """Base class: a problem the user can fix (bad config, missing path, incomplete dataset)."""


class ConfigError(CurateError):
    """A pipeline config that cannot run. Raised before any work starts."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in self.problems))


class ParamsError(ConfigError, ValueError):
    """A stage made with parameters that do not validate (a ValueError too, as pydantic's own error is)."""


class DatasetError(CurateError):
    """A dataset directory that is missing, incomplete (no manifest) or corrupt."""


def pydantic_problems(error: Any, prefix: str = "", allowed_keys: Callable[[tuple], str] | None = None,
                      location: Callable[[dict[str, Any]], Sequence[Any] | None] | None = None) -> list[str]:
    """A pydantic `ValidationError` as config problems, one line each: the key's dotted path after `prefix`, what
    is wrong, the value given, and for an unknown key the keys that are allowed (`allowed_keys(loc)`).
    `location(error)` may rewrite an error's path, or return None to leave the error out."""
    problems = []
    for e in error.errors():
        parts = location(e) if location else e["loc"]
        if parts is None:
            continue
        where = prefix + ".".join(str(p) for p in parts)
        if e["type"] == "extra_forbidden":
            allowed = allowed_keys(e["loc"]) if allowed_keys else "(see the documentation)"
            problems.append(f"{where}: unknown key; allowed: {allowed}")
        elif e["type"] == "missing":
            problems.append(f"{where}: required key is missing")
        else:
            problems.append(f"{where}: {e['msg']} (got {e.get('input')!r})")
    return problems
