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


def _run_child_and_kill(
    code: str, args: list[str], rng: random.Random, wait: tuple[float, float]
) -> list[str]:
    """Start ``code`` as a child, SIGKILL it at a random moment, return its whole lines."""
    src = Path(__file__).resolve().parent.parent / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, env=env)
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
        time.sleep(rng.uniform(*wait))  # a random moment, mostly inside a batch
        assert child.poll() is None, "child died on its own"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        thread.join(30)
    return lines


def _run_and_kill(path: Path, key: bytes | None, seed: int, rng: random.Random) -> list[str]:
    args = [str(path), key.hex() if key else "", str(seed)]
    return _run_child_and_kill(CHILD, args, rng, (0.05, 0.6))


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
            # The index is deferred: what the kill left pending (committed with its
            # row) is indexed now, and then the index holds exactly the stored texts.
            assert store.pending_index() > 0
            store.index_all()
            assert store.pending_index() == 0
            conn.execute(
                "INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)"
            )
            last = bytes.fromhex(acknowledged[-1].split()[1])
            assert last in {m.id for m in store.search(f"message {seed}", limit=1000)}


#: Group commit: the child is Bob's conversation core over the store, receiving Alice's
#: texts in batches of 1 to 40 (one transaction each), mixed with resends of texts it
#: was given before (her outbox replayed after his restart). It prints each envelope
#: before handing it over, and each id of a "delivered" receipt once the core has
#: released it (after the commit): what Alice would take as acknowledged.
BATCH_CHILD = r"""
import random, sys, time
from pathlib import Path
from btchat.identity.keys import Identity
from btchat.messaging import conversation as conv, envelope as E
from btchat.messaging.conversation import Conversations
from btchat.messaging.store import Store

path, key_hex, seed, old_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
store = Store.open(Path(path), bytes.fromhex(key_hex) if key_hex else None)
alice, bob = Identity.from_seed(b"\x02" * 32), Identity.from_seed(b"\x01" * 32)
core = Conversations(bob, b"b" * 16, store)
old = [bytes.fromhex(h) for h in Path(old_file).read_text().split()]
rng = random.Random(seed)
sys.stdout.write("ready\n")
sys.stdout.flush()
i = 0
while True:
    batch = []
    for _ in range(rng.randint(1, 40)):
        if old and rng.random() < 0.2:
            batch.append(rng.choice(old))  # a resend: acknowledged again, stored once
            continue
        i += 1
        text = f"batched {seed}.{i} " + "x" * (i * 37 % 500)
        env = E.create(alice, b"a" * 16, bob.public_key, b"text", E.text_body(text),
                       lamport=seed * 10**6 + i, now=time.time())
        data = E.encode_envelope(env)
        batch.append(data)
        sys.stdout.write(f"sent {len(batch)} {data.hex()}\n")
    sys.stdout.write("batch\n")
    sys.stdout.flush()
    with core.batch(time.time()):
        for data in batch:
            core.receive(alice.public_key, b"a" * 16, data, time.time())
    for event in iter(core.next_event, None):
        if isinstance(event, conv.Transmit):
            ids, _ = E.decode_receipt(E.parse_envelope(event.data))
            sys.stdout.write("ack " + " ".join(x.hex() for x in ids) + "\n")
    sys.stdout.flush()
"""


@pytest.mark.parametrize("key", [bytes(range(32)), None], ids=["encrypted", "plaintext"])
def test_sigkill_mid_batch_loses_nothing_acknowledged_and_stores_batches_whole(
    tmp_path: Path, key: bytes | None
) -> None:
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    path, old_file = tmp_path / "batch.db", tmp_path / "old.txt"
    sent: list[bytes] = []  # every envelope handed to the core, in order
    acked: set[bytes] = set()
    old_file.write_text("")
    for seed in range(1, 5):
        args = [str(path), key.hex() if key else "", str(seed), str(old_file)]
        lines = _run_child_and_kill(BATCH_CHILD, args, rng, (0.3, 1.2))
        batches: list[list[bytes]] = [[]]
        for line in lines:
            kind, _, rest = line.partition(" ")
            if kind == "sent":
                batches[-1].append(bytes.fromhex(rest.split()[1]))
            elif kind == "batch":
                batches.append([])
            elif kind == "ack":
                acked.update(bytes.fromhex(h) for h in rest.split())
        fresh = [E.parse_envelope(b) for batch in batches for b in batch]
        assert fresh, "the child sent nothing before it was killed"
        print(f"seed {seed}: {len(fresh)} texts in {len(batches)} batches, {len(acked)} acked")
        sent += [E.encode_envelope(e) for e in fresh]
        with Store.open(path, key) as store:
            assert store.integrity_check() == ["ok"]
            conn = store.db._live()
            stored = {bytes(r[0]) for r in conn.execute("SELECT id FROM messages")}
            for msg_id in acked:  # acknowledged means on disk, with its replay id
                assert msg_id in stored, f"acknowledged message {msg_id.hex()} was lost"
                assert store.seen_before(msg_id)
            for batch in batches:  # all of a batch or none of it, whatever the moment
                ids = {E.parse_envelope(b).id for b in batch}
                assert ids <= stored or not ids & stored, "a batch was stored in part"
            # Resends of acknowledged texts stored nothing twice.
            texts = [r[0] for r in conn.execute("SELECT text FROM messages")]
            assert len(texts) == len(set(texts)) == len(stored)
        # Alice resends whatever was not acknowledged, and some that was (lost receipts).
        old_file.write_text(" ".join(b.hex() for b in sent))
    assert acked, "no batch was ever acknowledged"
