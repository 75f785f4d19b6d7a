"""Before and after in one run: 1:1 file transfer on an earlier commit's code and on this
tree's, alternating, so both see the same machine noise.

``python -m bench.files_ab --base REV [--rounds N] [--mib M]``: ``git archive REV src``
is unpacked in a temporary folder; each round runs the file transfer of
:mod:`bench.files` (this tree's harness, both ends in one process, then the receiving
end in a second process) once on REV's ``src`` and once on this tree's, each in a fresh
process, and prints every figure and the medians. The harness only drives the shells'
public calls, so an older ``src`` runs under it unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

_ONE = """
import json, os, sys, tempfile
from pathlib import Path
from bench import files
from btchat.net import eventloop
tmp = Path(tempfile.mkdtemp(prefix="btchat-bench-ab-"))
src = tmp / "payload.bin"
with src.open("wb") as f:
    for _ in range(int(sys.argv[1]) // 16):
        f.write(os.urandom(16 << 20))
run = files._run_two if sys.argv[2] == "two" else files._run
out = eventloop.run(run(src))
src.unlink()
tmp.rmdir()
print(json.dumps(out))
"""

KEYS = ("file_mb_per_s", "cpu_s_per_gb", "chat_p99_ms")
TWO_KEYS = ("sender_cpu_s_per_gb", "receiver_cpu_s_per_gb")


def _one(src: Path, mode: str, mib: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{src}")
    done = subprocess.run(
        [sys.executable, "-c", _ONE, str(mib), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        return {"error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.files_ab")
    parser.add_argument("--base", required=True, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mib", type=int, default=128, help="file size (a multiple of 16)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="btchat-bench-base-"))
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", args.base, "src"],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        sides = {"base": tmp / "src", "this": ROOT / "src"}
        results: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for _ in range(args.rounds):
            for mode in ("one", "two"):
                for side, src in sides.items():
                    r = _one(src, mode, args.mib)
                    results.setdefault((mode, side), []).append(r)
                    shown = {k: round(v, 2) for k, v in r.items() if k in KEYS + TWO_KEYS}
                    print(f"{mode} process(es), {side}: {r.get('error') or shown}", flush=True)
        print(f"medians of {args.rounds} rounds, {args.mib} MiB, base {args.base}:")
        for (mode, side), rs in results.items():
            ok = [r for r in rs if "error" not in r]
            if not ok:
                print(f"  {mode} {side}: every run failed")
                continue
            keys = KEYS + (TWO_KEYS if mode == "two" else ())
            med = {k: round(statistics.median(r[k] for r in ok), 2) for k in keys}
            print(f"  {mode} {side}: {med} ({len(ok)} of {len(rs)} runs)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
