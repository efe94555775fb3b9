"""Exceptions that carry a message fit to show a user as is."""


class CurateError(Exception):
    """Base class: a problem the user can fix (bad config, missing path, incomplete dataset)."""


class ConfigError(CurateError):
    """A pipeline config that cannot run. Raised before any work starts."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("invalid config:\n" + "\n".join(f"  - {p}" for p in self.problems))


class DatasetError(CurateError):
    """A dataset directory that is missing, incomplete (no manifest) or corrupt."""
