"""The one exception type of the config system."""

from __future__ import annotations

import difflib


class ConfigError(ValueError):
    """A config problem, always naming the offending key path (``policy.optimizer.lr``)."""

    def __init__(self, key_path: str, message: str):
        self.key_path = key_path
        super().__init__(f"config key '{key_path}': {message}" if key_path else message)


def did_you_mean(name: str, candidates: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
