"""Check reproduced metrics against a committed revision: identical bytes, or numbers within a tolerance.

    python -m mnist_pipeline.compare --against HEAD --tolerance 0.002

On the machine that produced the committed files they must be byte-identical (tolerance 0);
other CPUs round differently, so elsewhere test_accuracy and test_loss (final and per epoch)
may differ by up to the tolerance.
"""

import argparse
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from mnist_pipeline import cli
from mnist_pipeline.errors import PipelineError

FILES = ("metrics/history.json", "metrics/eval.json")
GATED = ("test_accuracy", "test_loss")  # the robustness summary moves with them; reported only


def gated_numbers(data: object, prefix: str = "") -> dict[str, float]:
    """{'49.test_accuracy': 0.91, 'test_loss': 0.29, ...}: the gated metrics wherever they appear."""
    items: Iterable[tuple[str, object]]
    if isinstance(data, list):
        items = ((str(i), v) for i, v in enumerate(data))
    elif isinstance(data, dict):
        items = ((str(k), v) for k, v in data.items())
    else:
        return {}
    found = {}
    for key, value in items:
        if key in GATED and isinstance(value, int | float):
            found[prefix + key] = float(value)
        else:
            found.update(gated_numbers(value, f"{prefix}{key}."))
    return found


def compare(path: str, committed: bytes, current: bytes, tolerance: float) -> list[str]:
    """Problems found in one file; empty when it passes."""
    if committed == current:
        print(f"{path}: identical")
        return []
    if tolerance == 0:
        return [f"{path}: differs from the committed file (tolerance 0: bytes must match)"]
    old, new = gated_numbers(json.loads(committed)), gated_numbers(json.loads(current))
    if old.keys() != new.keys():
        return [f"{path}: metrics differ in shape ({len(old)} committed values, {len(new)} now)"]
    worst = max(old, key=lambda k: abs(old[k] - new[k]))
    gap = abs(old[worst] - new[worst])
    print(f"{path}: largest difference {gap:.6f} at {worst} ({old[worst]} -> {new[worst]})")
    return [f"{path}: {worst} moved by {gap:.6f} > {tolerance}"] if gap > tolerance else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", default="HEAD", help="git revision holding the reference metrics")
    parser.add_argument("--tolerance", type=float, default=0.0, help="largest allowed absolute difference")
    args = parser.parse_args(argv)
    return cli.run(lambda: _compare_all(args.against, args.tolerance))


def _compare_all(against: str, tolerance: float) -> int:
    problems = []
    for path in FILES:
        problems += compare(path, _committed(against, path), _current(path), tolerance)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0


def _committed(against: str, path: str) -> bytes:
    shown = subprocess.run(["git", "show", f"{against}:{path}"], capture_output=True)
    if shown.returncode != 0:
        raise PipelineError(f"{against}:{path}: {shown.stderr.decode(errors='replace').strip() or 'not in git'}")
    return shown.stdout


def _current(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise PipelineError(f"{path}: file not found; run `dvc repro` first") from None


if __name__ == "__main__":
    raise SystemExit(main())
