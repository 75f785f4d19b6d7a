"""Fuzz every target in turn and write docs/FUZZING.md: ``scripts/fuzz [SECONDS] [NAME ...]``.

Each target runs in its own process (``python -m fuzz.run``) for the given time; the
figures are libFuzzer's own: inputs executed, edges covered, crashes. ``tests/test_fuzz.py``
uses :func:`fuzz_one` for the short pass that CI runs.
"""

from __future__ import annotations

import datetime as dt
import platform
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "FUZZING.md"


@dataclass(frozen=True)
class Outcome:
    target: str
    inputs: int
    coverage: int
    seconds: float
    crashed: bool
    output: str


def fuzz_one(name: str, *, seconds: float, runs: int | None = None) -> Outcome:
    with tempfile.TemporaryDirectory(prefix=f"fuzz-{name}-") as out:
        flags = [f"-max_total_time={max(1, int(seconds))}", "-print_final_stats=1"]
        if runs is not None:
            flags.append(f"-runs={runs}")
        proc = subprocess.run(
            [sys.executable, "-m", "fuzz.run", name, "--out", out, *flags],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=seconds + 120,
        )
        crashed = proc.returncode != 0 or any(Path(out).glob("crash-*"))
    err = proc.stderr
    done = re.findall(r"Done (\d+) runs in (\d+) second", err)
    cov = re.findall(r"cov: (\d+)", err)
    return Outcome(
        name,
        int(done[-1][0]) if done else 0,
        int(cov[-1]) if cov else 0,
        float(done[-1][1]) if done else 0.0,
        crashed,
        err[-4000:],
    )


def main() -> None:
    args = sys.argv[1:]
    seconds = float(args.pop(0)) if args and args[0].replace(".", "").isdigit() else 60.0
    from fuzz.targets import TARGETS

    names = args or sorted(TARGETS)
    outcomes = []
    for name in names:
        print(f"fuzzing {name} for {seconds:.0f} s ...", file=sys.stderr, flush=True)
        o = fuzz_one(name, seconds=seconds)
        print(f"  {o.inputs} inputs, cov {o.coverage}, crashed: {o.crashed}", file=sys.stderr)
        if o.crashed:
            print(o.output, file=sys.stderr)
        outcomes.append(o)
    rows = [
        f"| {o.target} | {o.inputs:,} | {o.coverage} | {o.seconds:.0f} | "
        f"{'CRASHED' if o.crashed else 0} |"
        for o in outcomes
    ]
    if set(names) != set(TARGETS):
        # A partial run must not drop the other targets' figures: print its rows only.
        print("\n".join(rows))
        print(f"partial run: {DOC.name} left as it is", file=sys.stderr)
        sys.exit(1 if any(o.crashed for o in outcomes) else 0)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    ).stdout.strip()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Fuzzing",
        "",
        f"Measured {when} (`{commit}`) on {platform.machine()}, Python "
        f"{platform.python_version()}: `scripts/fuzz {seconds:.0f}` (atheris, libFuzzer; "
        "each target in its own process, starting from its seed corpus in `fuzz/corpus/`).",
        "",
        "Every parser that remote input reaches has a target (`fuzz/targets.py`); a target "
        "lets through only the error type its parser promises, so any other exception is a "
        "crash. CI runs a short pass of every target (`tests/test_fuzz.py`).",
        "",
        "| target | inputs | edges covered | seconds | crashes |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    DOC.write_text("\n".join(lines))
    sys.exit(1 if any(o.crashed for o in outcomes) else 0)


if __name__ == "__main__":
    main()
