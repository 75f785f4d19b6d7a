"""Crash safety: SIGKILL a process mid-write; every save that returned is still there."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from btchat.identity.keys import Identity
from btchat.messaging import envelope as E
from btchat.messaging.store import Store

PEER = Identity.from_seed(b"\x02" * 32).public_key

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

#: The child saves messages (incoming and outgoing, with outbox rows and replay ids) as
#: fast as it can and prints each id only after its save returned.
CHILD = r"""
import sys, time
from pathlib import Path
from btchat.identity.keys import Identity
from btchat.identity.keys import Identity
from btchat.messaging import envelope as E
from btchat.messaging.store import Store

path, key_hex, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = Store.open(Path(path), bytes.fromhex(key_hex) if key_hex else None)
me, peer = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
sys.stdout.write("ready\n")
sys.stdout.flush()
i = 0
while True:
    i += 1
    text = f"message {seed}.{i} " + "x" * (i * 37 % 2000)
    lamport = store.next_lamport(peer.public_key, None)
    if i % 2:
        env = E.create(peer, b"d" * 16, me.public_key, b"text", E.text_body(text),
                       lamport=lamport, now=time.time())
        store.save_incoming(env, time.time())
        line = "in " + env.id.hex()
    else:
        env = E.create(me, b"d" * 16, peer.public_key, b"text", E.text_body(text),
                       lamport=lamport, now=time.time())
        store.save_outgoing(env, time.time())
        line = "out " + env.id.hex()
    if i % 5 == 0:
        store.mark_state([env.id], "sent")
    sys.stdout.write(line + "\n")  # one short write: atomic on a pipe
    sys.stdout.flush()
"""


def _run_and_kill(path: Path, key: bytes | None, seed: int, rng: random.Random) -> list[str]:
    src = Path(__file__).resolve().parent.parent / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), key.hex() if key else "", str(seed)],
        stdout=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None
    lines: list[str] = []
    ready = threading.Event()

    def reader() -> None:  # keep the pipe drained so the child never blocks on it
        assert child.stdout is not None
        for raw in child.stdout:
            text = raw.decode()
            if text == "ready\n":
                ready.set()
            elif text.endswith("\n"):
                lines.append(text.strip())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        assert ready.wait(30), "child did not start"
        time.sleep(rng.uniform(0.05, 0.6))  # a random moment, mostly inside a save
        assert child.poll() is None, "child died on its own"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        thread.join(30)
    return lines


@pytest.mark.parametrize("key", [bytes(range(32)), None], ids=["encrypted", "plaintext"])
def test_sigkill_loses_nothing_that_was_acknowledged(tmp_path: Path, key: bytes | None) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    path = tmp_path / "crash.db"
    acknowledged: list[str] = []
    for seed in range(4):
        lines = _run_and_kill(path, key, seed, rng)
        assert lines, "the child saved nothing before it was killed"
        acknowledged += lines
        print(f"seed {seed}: {len(lines)} saves acknowledged before the kill")
        with Store.open(path, key) as store:  # opens: WAL recovery worked
            assert store.integrity_check() == ["ok"]
            conn = store.db._live()
            conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            queued = {E.parse_envelope(b).id for b in store.pending_outbox(PEER)}
            for line in acknowledged:
                direction, hex_id = line.split()
                msg_id = bytes.fromhex(hex_id)
                row = store.get_message(msg_id)
                assert row is not None, f"acknowledged message {hex_id} was lost"
                assert row.direction == direction and row.text is not None
                if direction == "in":
                    assert store.seen_before(msg_id)
                else:
                    assert msg_id in queued  # saved together with its outbox row
            # Atomicity: no message without its outbox row or replay id, whatever the
            # moment of the kill (rows whose id the child never got to print included).
            assert (
                conn.execute(
                    "SELECT count(*) FROM messages m WHERE direction = 'out'"
                    " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.id = m.id)"
                ).fetchone()[0]
                == 0
            )
            assert (
                conn.execute(
                    "SELECT count(*) FROM messages m WHERE direction = 'in'"
                    " AND NOT EXISTS (SELECT 1 FROM seen s WHERE s.id = m.id)"
                ).fetchone()[0]
                == 0
            )
