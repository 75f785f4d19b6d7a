"""Fuzz one target with atheris: ``python -m fuzz.run NAME [libFuzzer flags]``.

The seed corpus ``fuzz/corpus/NAME/`` is read, never written: what the fuzzer finds goes
to a temporary folder (or ``--out DIR``), so a run leaves the repo as it was. libFuzzer
prints its figures on stderr (``DONE cov: ...``, ``Done N runs``); a crash exits
non-zero and leaves its input as ``crash-*`` in the output folder.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

CORPUS = Path(__file__).resolve().parent / "corpus"


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        sys.exit("usage: python -m fuzz.run NAME [--out DIR] [libFuzzer flags]")
    name, flags = args[0], args[1:]
    out = None
    if "--out" in flags:
        i = flags.index("--out")
        out = flags[i + 1]
        del flags[i : i + 2]
    out = out or tempfile.mkdtemp(prefix=f"fuzz-{name}-")
    with atheris.instrument_imports(include=["btchat"]):
        from fuzz.targets import TARGETS
    if name not in TARGETS:
        sys.exit(f"unknown target {name!r}; targets: {', '.join(sorted(TARGETS))}")
    seeds = CORPUS / name
    argv = [sys.argv[0], *flags, f"-artifact_prefix={out}/", out]
    if seeds.is_dir():
        argv.append(str(seeds))

    atheris.Setup(argv, TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
