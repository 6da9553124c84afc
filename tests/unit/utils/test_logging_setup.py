"""configure_logging: the library's INFO lines reach stderr, the level comes from the environment,
an application's own logging setup is left alone, and a bad level is a clear user error."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_distill.config.errors import UserError
from nemo_distill.utils.logging_setup import LOG_LEVEL_ENV, configure_logging, log_level_from_env

REPO = Path(__file__).resolve().parents[3]

SCRIPT = """
import logging, sys
sys.path.insert(0, {repo!r})
from nemo_distill.utils.logging_setup import configure_logging
{setup}
configure_logging(); configure_logging()  # twice: still one handler
log = logging.getLogger("nemo_distill.some.module")
log.debug("a debug line"); log.info("an info line"); logging.getLogger("other").info("not ours")
"""


def _run(setup: str = "", level: str | None = None) -> str:
    env = {"PATH": "/usr/bin:/bin"} | ({LOG_LEVEL_ENV: level} if level else {})
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(repo=str(REPO), setup=setup)], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stderr


def test_info_lines_reach_stderr_once_by_default():
    stderr = _run()
    assert stderr.count("an info line") == 1 and "INFO nemo_distill.some.module" in stderr
    assert "a debug line" not in stderr and "not ours" not in stderr


def test_level_from_the_environment():
    assert "a debug line" in _run(level="debug")
    assert "an info line" not in _run(level="WARNING")


def test_an_application_with_its_own_logging_keeps_control():
    stderr = _run(setup="logging.basicConfig(format='APP %(message)s', level=logging.INFO)")
    assert stderr.count("an info line") == 1 and "APP an info line" in stderr


def test_a_bad_level_names_the_variable(monkeypatch):
    monkeypatch.setenv(LOG_LEVEL_ENV, "loud")
    with pytest.raises(UserError, match=f"{LOG_LEVEL_ENV}='loud' is not a log level"):
        log_level_from_env()
    monkeypatch.setenv(LOG_LEVEL_ENV, "error")
    assert log_level_from_env() == logging.ERROR


def test_in_process_under_pytest_no_handler_is_added(monkeypatch):
    monkeypatch.delenv(LOG_LEVEL_ENV, raising=False)
    logger = logging.getLogger("nemo_distill")
    before, level_before = list(logger.handlers), logger.level
    try:
        configure_logging()  # pytest's logging plugin owns the root logger here
        assert logger.handlers == before and logger.level == logging.INFO
    finally:
        logger.setLevel(level_before)
