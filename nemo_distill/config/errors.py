"""The exceptions that mean "the user must change something", and nothing else.

* :class:`UserError` -- base of every mistake a user can fix (config, data, prompt files):
  entry points print its message as one ``error: ...`` line and exit with code 2 (see
  :func:`nemo_distill.config.cli.run_main`); any other exception is a bug and keeps its traceback.
* :class:`ConfigError` -- a config problem, always naming the key path.
* :class:`DataError` -- a problem in a data / prompt file, naming the file and the line, row or key.

Both concrete types are also ``ValueError`` so existing ``except ValueError`` handlers still work.
"""

from __future__ import annotations

import difflib


class UserError(Exception):
    """A mistake in what the user gave us (config, data, files); the message says what to fix."""


class ConfigError(UserError, ValueError):
    """A config problem, always naming the offending key path (``policy.optimizer.lr``)."""

    def __init__(self, key_path: str, message: str):
        self.key_path = key_path
        self.message = message
        super().__init__(f"config key '{key_path}': {message}" if key_path else message)

    def __reduce__(self):  # picklable (e.g. raised inside a Ray worker)
        return (type(self), (self.key_path, self.message))


class DataError(UserError, ValueError):
    """A data or prompt file that cannot be used; the message names the file and line / row / key."""


def did_you_mean(name: str, candidates: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or ``""`` when nothing is close."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
