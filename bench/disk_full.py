"""Two daemons; the receiver's data directory fills up while the sender writes to it.

Issue 14 item 9: "a full disk makes ~42 failed sessions a second and 2 MB/min of
tracebacks, while status never says disk full". This measures, over ``seconds`` of a
full disk while Alice sends a message a second: the sessions Alice establishes to Bob
(her ``-v`` log), the bytes and lines Bob logs (at the default level, what a user
sees), what Bob's status says, and after the filler is deleted how long until every
message is delivered, and whether any is missing or twice.

Needs root (it mounts a tmpfs). ``python -m bench.disk_full [--src DIR]``: ``--src``
runs another checkout's code (e.g. the main branch, for a before/after).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler


class _Daemon:
    def __init__(self, name: str, folder: Path, env: dict[str, str], logs: Path) -> None:
        self.name, self.dir, self.env = name, folder / name, env
        self.log = logs / f"{name}.log"
        self.proc: subprocess.Popen[str] | None = None
        self.cli("init", "--no-passphrase")
        self.id = self.cli("id")["id"]

    def cli(self, *args: str) -> Any:
        out = subprocess.run(
            [sys.executable, "-m", "btchat.cli", *args, "--data-dir", str(self.dir), "--json"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if out.returncode != 0:
            raise RuntimeError(f"{self.name}: btchat {' '.join(args)}: {out.stderr}")
        return json.loads(out.stdout.splitlines()[-1]) if out.stdout.strip() else None

    def up(self, bootstrap: str, *extra: str) -> None:
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "btchat.cli", "up", "--data-dir", str(self.dir)),
                    *("--bootstrap", bootstrap, "--host", "127.0.0.1", "--dht-port", "0"),
                    *("--json", *extra),
                ],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline():
            raise RuntimeError(f"{self.name} did not start: {self.log.read_text()[-2000:]}")

    def down(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None

    def texts(self, other: str) -> list[str]:
        return [m["text"] for m in self.cli("history", other, "--limit", "500")["messages"]]


def _wait(pred: Any, timeout: float) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(0.3)
    return None


def run(seconds: float = 30.0) -> dict[str, Any]:
    if os.geteuid() != 0:
        return {"error": "not run: needs root to mount a tmpfs"}
    tmp = Path(tempfile.mkdtemp(prefix="btchat-diskfull-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTCHAT_")}
    env.update(HOME=str(tmp / "home"), BTCHAT_CONFIG=str(tmp / "config.toml"))
    (tmp / "config.toml").write_text('[dht]\nbootstrap = ["127.0.0.1:9"]\n')
    small = tmp / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)], check=True)
    swarm = subprocess.Popen(
        [sys.executable, "-m", "btchat.cli", "sandbox", "--nodes", "40", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    alice = bob = None
    try:
        assert swarm.stdout is not None
        bootstrap = json.loads(swarm.stdout.readline())["bootstrap"]
        alice = _Daemon("alice", tmp, env, tmp)
        bob = _Daemon("bob", small, env, tmp)
        alice.up(bootstrap, "-v")
        bob.up(bootstrap)
        alice.cli("contact", "add", bob.id, "bob")
        bob.cli("contact", "add", alice.id, "alice")
        alice.cli("send", "bob", "before")
        if _wait(lambda: bob.texts("alice") == ["before"], 60) is None:
            return {"error": "the first message never arrived"}
        filler = _fill(small)
        sessions0 = alice.log.read_text().count("established")
        bob_bytes0 = bob.log.stat().st_size
        bob_lines0 = len(bob.log.read_text().splitlines())
        sent = []
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            text = f"while full {len(sent)} " + "x" * 15000
            alice.cli("send", "bob", text)
            sent.append(text)
            time.sleep(max(0.0, start + len(sent) - time.monotonic()))
        elapsed = time.monotonic() - start
        status = bob.cli("status")
        stuck = sum(
            1
            for m in alice.cli("history", "bob", "--limit", "500")["messages"]
            if m["state"] not in ("delivered", "read")
        )
        sessions = alice.log.read_text().count("established") - sessions0
        bob_bytes = bob.log.stat().st_size - bob_bytes0
        bob_lines = len(bob.log.read_text().splitlines()) - bob_lines0
        filler.unlink()
        expected = ["before", *sent]
        took = _wait(lambda: bob.texts("alice") == expected, 180)
        got = bob.texts("alice")
        return {
            "full_seconds": round(elapsed, 1),
            "messages_sent_while_full": len(sent),
            "not_acknowledged_while_full": stuck,
            "sessions_per_second_while_full": round(sessions / elapsed, 2),
            "receiver_log_bytes_per_minute": round(bob_bytes * 60 / elapsed),
            "receiver_log_lines_while_full": bob_lines,
            "receiver_status_storage": status.get("storage", "(no such field)"),
            "delivered_all_after_freeing_s": None if took is None else round(took, 1),
            "missing": len([t for t in expected if t not in got]),
            "duplicates": len(got) - len(set(got)),
        }
    finally:
        for d in (alice, bob):
            if d is not None:
                d.down()
        swarm.send_signal(signal.SIGTERM)
        swarm.wait(timeout=20)
        subprocess.run(["umount", "-l", str(small)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--src", help="run this checkout's src/ instead (before/after)")
    args = parser.parse_args()
    if args.src:
        os.environ["PYTHONPATH"] = str(Path(args.src).resolve())
    print(json.dumps(run(args.seconds), indent=2))


if __name__ == "__main__":
    main()
