"""Check a run's logged metrics against threshold expressions; exit 1 naming each failure.

    python tests/check_metrics.py RUN_DIR/metrics.jsonl \
        "last('train/loss') < first('train/loss')" \
        "max('train/grad_norm') < 100" \
        "mean('train/reward_mean', 2, 5) >= 0"

Functions over a metric (steps where it was logged, optionally limited to start..end inclusive):
``first``, ``last``, ``min``, ``max``, ``mean``, ``value(name, step)``, ``count``. Expressions are
evaluated with nothing else in scope.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load_metrics(path: str | Path) -> dict[str, dict[int, float]]:
    """``{metric: {step: value}}`` from a ``metrics.jsonl`` (later lines win for a repeated step)."""
    series: dict[str, dict[int, float]] = {}
    for line_number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{line_number}: not JSON ({err})") from err
        step = int(row["step"])
        for name, value in row.items():
            if name != "step" and isinstance(value, (int, float)):
                series.setdefault(name, {})[step] = float(value)
            elif name != "step" and value is None:  # a non-finite value (Logger.log_metrics writes null): fails every bound
                series.setdefault(name, {})[step] = float("nan")
    return series


def make_namespace(series: dict[str, dict[int, float]]) -> dict:
    def values(name: str, start: int | None = None, end: int | None = None) -> list[float]:
        if name not in series:
            raise KeyError(f"metric '{name}' was never logged; logged: {sorted(series)}")
        picked = [v for s, v in sorted(series[name].items()) if (start is None or s >= start) and (end is None or s <= end)]
        if not picked:
            raise ValueError(f"metric '{name}' has no values in steps {start}..{end}")
        return picked

    return {
        "__builtins__": {},
        "first": lambda name, start=None, end=None: values(name, start, end)[0],
        "last": lambda name, start=None, end=None: values(name, start, end)[-1],
        "min": lambda name, start=None, end=None: min(values(name, start, end)),
        "max": lambda name, start=None, end=None: max(values(name, start, end)),
        "mean": lambda name, start=None, end=None: sum(values(name, start, end)) / len(values(name, start, end)),
        "count": lambda name: len(series.get(name, {})),
        "value": lambda name, step: series[name][step],
        "abs": abs,
    }


def check(path: str | Path, expressions: list[str]) -> list[str]:
    """The failed expressions, each with the reason; empty when all hold."""
    namespace = make_namespace(load_metrics(path))
    failures = []
    for expression in expressions:
        try:
            ok = bool(eval(expression, namespace))  # noqa: S307 -- a restricted namespace, our own test files
        except Exception as err:  # a missing metric is a failure, reported with its cause
            failures.append(f"{expression}: error {err}")
            continue
        if not ok:
            failures.append(f"{expression}: false")
    return failures


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    failures = check(argv[0], argv[1:])
    for expression in argv[1:]:
        status = "FAIL" if any(f.startswith(expression + ":") for f in failures) else "ok"
        print(f"[{status}] {expression}")
    for failure in failures:
        print(f"failed: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
