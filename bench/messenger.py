"""Messenger benchmarks (issue 3): first message, small-message throughput, bulk transfer.

* :func:`first_message`: real ``btchat up`` daemons (one process each) on a 1,000-node
  ``btchat sandbox`` swarm on 127.0.0.1. For each pair of fresh identities that already
  list each other as contacts, both daemons start at the same instant t0; A sends as soon
  as its API answers; we time until B has stored the message (B's event stream) and
  until A has the "delivered" receipt. The first start of a pair is *cold* (nobody has
  ever seen either identity online, so the device lists must be found in the DHT); the
  pair is then stopped and started again, which is the *warm* case of two contacts that
  have talked before (certificates cached, DHT state kept): the method of issue 3.
* :func:`session_throughput`: 100-byte text envelopes through one Noise session pair over
  loopback TCP, both ends in this process on one event loop (so one core does the work
  of both sides): unpersisted (sign, send, parse, verify) and persisted end to end
  through the daemon's own path (:class:`_ChatEnd`: the conversation core and its shell
  on each side, group commit per loop turn), and, for comparison in the same run, the
  persisted path as it was (``save_outgoing`` before sending, verify + ``save_incoming``
  before a signed "delivered" receipt, ``mark_state`` + ``ack_outbox`` on the receipt,
  every store call its own SQLCipher transaction); plus latency at a paced 1,000 msg/s.
  Also in the same run: group commit with the full-text index written in each insert
  (the trigger before deferred indexing, :data:`INLINE_FTS`), the idle-time indexer's
  own rate, and search latency with a backlog of rows still to index.
* :func:`bulk_ratio`: maximal DATA frames through a session vs the same payloads through
  a raw asyncio TCP stream, both over loopback, both ends in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.lookups import summary

BTCHAT = [sys.executable, "-m", "btchat.cli"]
SANDBOX_NODES = 1000
#: Seconds one first-message run may take before it counts as a failure.
RUN_TIMEOUT = 30.0
#: Wall-clock budget for all first-message runs (the sandbox start is extra).
FIRST_MESSAGE_BUDGET = 150.0
TEXT = "x" * 100  # the 100-byte message text
PACED_RATE = 1000.0  # messages per second for the latency runs


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the same convention as ``summary``'s p95)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def _fs_type(path: Path) -> str:
    """The file system under ``path`` (fsync cost depends on it)."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


# ============================================================================ first message


def _env(root: Path) -> dict[str, str]:
    """A private environment: no user config, no public bootstrap nodes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BTCHAT_")}
    env["HOME"] = str(root / "home")
    env["XDG_CONFIG_HOME"] = str(root / "home" / "config")
    env["XDG_DATA_HOME"] = str(root / "home" / "data")
    env["BTCHAT_CONFIG"] = str(root / "config.toml")
    (root / "config.toml").write_text('[dht]\nbootstrap = ["127.0.0.1:9"]\n')
    return env


def _make_pair(root: Path) -> tuple[Path, Path]:
    """Two fresh identities (``btchat init --no-passphrase``) listing each other as contacts.

    The contacts go straight into each message database (what ``btchat contact add``
    does through a running daemon), so no daemon runs before the measured start and
    nothing about either identity is in the DHT yet.
    """
    from btchat.identity.keystore import KeyStore
    from btchat.messaging.store import Store

    dirs = (root / "a", root / "b")
    keys = [KeyStore(d).create(None, now=int(time.time())) for d in dirs]
    for d, other, name in ((dirs[0], keys[1], "b"), (dirs[1], keys[0], "a")):
        store = Store.open(d / "messages.db", None)
        try:
            store.add_contact(other.identity.public_key, name, int(time.time() * 1000))
        finally:
            store.close()
    return dirs


async def _stop(proc: asyncio.subprocess.Process | None) -> None:
    if proc is None or proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.wait_for(proc.wait(), 10)


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def _log_times(path: Path, wall0: float) -> dict[str, Any]:
    """Milestones from a daemon's ``-v`` log, in seconds after ``wall0`` (wall clock)."""
    out: dict[str, Any] = {"device_list_misses": 0}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        m = _LOG_TIME.match(line)
        if not m:
            continue
        when = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
        t = when + int(m.group(2)) / 1000 - wall0
        if "joined the DHT" in line:
            out.setdefault("joined", t)
        elif "established" in line and "session with" in line:
            out.setdefault("session", t)
        elif "but not its device list yet" in line:
            out["device_list_misses"] += 1
    return out


async def _watch(url: str, token: str, marks: dict[str, float], t0: float, side: str) -> None:
    """Record when this daemon's event stream shows the milestones we time."""
    from btchat.api.client import watch_events

    with contextlib.suppress(Exception):
        async for event in watch_events(url, token):
            now = time.monotonic() - t0
            kind = event.get("type")
            if kind == "message" and event.get("message", {}).get("direction") == "in":
                marks.setdefault(f"{side}_received", now)
            elif kind == "receipt" and event.get("state") == "delivered":
                marks.setdefault(f"{side}_delivered", now)
            elif kind == "session" and event.get("state") == "up":
                marks.setdefault(f"{side}_session_up", now)


async def _one_run(dirs: tuple[Path, Path], bootstrap: str, env: dict[str, str]) -> dict[str, Any]:
    """Start both daemons at t0, send from A once its API answers, time the delivery."""
    import json

    from btchat.api.client import ApiClient

    procs: list[asyncio.subprocess.Process | None] = [None, None]
    logs = [d.parent / f"{d.name}-{time.monotonic_ns()}.log" for d in dirs]
    tasks: list[asyncio.Task[Any]] = []
    marks: dict[str, float] = {}
    result: dict[str, Any] = {"ok": False}
    wall0 = time.time()
    t0 = time.monotonic()
    try:
        for i, d in enumerate(dirs):
            with open(logs[i], "wb") as err:
                procs[i] = await asyncio.create_subprocess_exec(
                    *BTCHAT,
                    "up",
                    "-v",
                    "--data-dir",
                    str(d),
                    "--bootstrap",
                    bootstrap,
                    "--host",
                    "127.0.0.1",
                    "--dht-port",
                    "0",
                    "--json",
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=err,
                )

        async def ready(i: int) -> dict[str, Any]:
            proc = procs[i]
            assert proc is not None and proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), RUN_TIMEOUT)
            if not line:
                raise RuntimeError(f"daemon {dirs[i].name} died: {logs[i].read_text()[-500:]}")
            marks[f"{'ab'[i]}_api"] = time.monotonic() - t0
            info = json.loads(line)
            token = (dirs[i] / "api.token").read_text().strip()
            tasks.append(asyncio.create_task(_watch(info["api"], token, marks, t0, "ab"[i])))
            return {"url": info["api"], "token": token}

        api_b_task = asyncio.create_task(ready(1))
        tasks.append(api_b_task)  # cancelled in ``finally`` if A fails first
        api_a = await ready(0)
        client_a = ApiClient(api_a["url"], api_a["token"], timeout=10)
        sent = await asyncio.to_thread(client_a.send_message, "b", TEXT)
        marks["a_sent"] = time.monotonic() - t0
        api_b = await api_b_task
        client_b = ApiClient(api_b["url"], api_b["token"], timeout=10)
        deadline = t0 + RUN_TIMEOUT
        polls = 0
        while time.monotonic() < deadline:
            if "b_received" in marks and "a_delivered" in marks:
                break
            await asyncio.sleep(0.05)
            polls += 1
            if polls % 20 == 0:
                # Safety net in case an event fired before its stream was subscribed.
                now = time.monotonic() - t0
                if "b_received" not in marks:
                    hist = await asyncio.to_thread(client_b.history, "a")
                    if any(m["id"] == sent["id"] for m in hist):
                        marks["b_received"] = now
                        result["received_by_poll"] = True
                if "a_delivered" not in marks:
                    hist = await asyncio.to_thread(client_a.history, "b")
                    states = [m["state"] for m in hist if m["id"] == sent["id"]]
                    if states and states[0] in ("delivered", "read"):
                        marks["a_delivered"] = now
                        result["delivered_by_poll"] = True
        result["ok"] = "b_received" in marks
    except Exception as exc:  # a failed run is reported, not fatal
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        for proc in procs:
            await _stop(proc)
    result.update(marks)
    for i, side in enumerate("ab"):
        for key, value in _log_times(logs[i], wall0).items():
            result[f"{side}_{key}"] = value
    return result


def _breakdown(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r.get("ok")]

    def series(fn: Callable[[dict[str, Any]], float | None]) -> dict[str, float]:
        values = [v for r in ok if (v := fn(r)) is not None]
        return summary(values)

    def both(r: dict[str, Any], key: str) -> float | None:
        vals = [r.get(f"a_{key}"), r.get(f"b_{key}")]
        return None if None in vals else max(v for v in vals if v is not None)

    return {
        "runs": len(runs),
        "delivered_runs": len(ok),
        "received_s": series(lambda r: r.get("b_received")),
        "delivered_receipt_s": series(lambda r: r.get("a_delivered")),
        "api_up_s": series(lambda r: both(r, "api")),
        "dht_joined_s": series(lambda r: both(r, "joined")),
        "session_up_s": series(
            lambda r: min(
                [v for v in (r.get("a_session"), r.get("b_session")) if v is not None],
                default=None,
            )
        ),
        "device_list_misses": sum(
            r.get("a_device_list_misses", 0) + r.get("b_device_list_misses", 0) for r in runs
        ),
    }


async def _first_message(pairs: int, nodes: int) -> dict[str, Any]:
    import json

    root = Path(tempfile.mkdtemp(prefix="btchat-bench-msg-"))
    env = _env(root)
    sandbox: asyncio.subprocess.Process | None = None
    cold: list[dict[str, Any]] = []
    warm: list[dict[str, Any]] = []
    try:
        t = time.monotonic()
        sandbox = await asyncio.create_subprocess_exec(
            *BTCHAT,
            "sandbox",
            "--nodes",
            str(nodes),
            "--json",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert sandbox.stdout is not None
        line = await asyncio.wait_for(sandbox.stdout.readline(), 180)
        bootstrap = json.loads(line)["bootstrap"]
        sandbox_s = time.monotonic() - t
        await asyncio.sleep(1.0)  # let the swarm's first maintenance settle
        start = time.monotonic()
        for i in range(pairs):
            if time.monotonic() - start > FIRST_MESSAGE_BUDGET:
                break
            dirs = _make_pair(root / f"pair{i}")
            cold.append(await _one_run(dirs, bootstrap, env))
            warm.append(await _one_run(dirs, bootstrap, env))
    finally:
        await _stop(sandbox)
        shutil.rmtree(root, ignore_errors=True)
    warm_sum = _breakdown(warm)
    return {
        "nodes": nodes,
        "sandbox_start_s": sandbox_s,
        "warm": warm_sum,
        "cold": _breakdown(cold),
        "target_s": 1.0,
        "target_met": warm_sum["delivered_runs"] == len(warm) > 0
        and warm_sum["received_s"]["median"] <= 1.0,
        "raw_warm": warm,
        "raw_cold": cold,
    }


def first_message(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_first_message(3 if quick else 5, SANDBOX_NODES))


# ============================================================================ session pair


class _Pair:
    """Two identities with one established session between them over loopback TCP."""

    def __init__(self) -> None:
        from btchat.identity.keys import DeviceKey, Identity

        self.id_a, self.id_b = Identity.generate(), Identity.generate()
        self.dev_a, self.dev_b = DeviceKey.generate(), DeviceKey.generate()
        now = int(time.time())
        self.cert_a = self.id_a.certify(self.dev_a, now)
        self.cert_b = self.id_b.certify(self.dev_b, now)
        self.on_a: Callable[[Any], None] = lambda event: None
        self.on_b: Callable[[Any], None] = lambda event: None
        self.tasks: list[asyncio.Task[Any]] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> _Pair:
        from btchat.session.connection import SessionConnection, run_session
        from btchat.session.core import Session

        loop = asyncio.get_running_loop()
        accepted: asyncio.Future[SessionConnection] = loop.create_future()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            session = Session(
                "responder",
                self.dev_b,
                self.cert_b,
                lambda ident, cert: ident == self.id_a.public_key,
                now=loop.time(),
            )
            conn = SessionConnection(reader, writer, session)
            accepted.set_result(conn)
            await run_session(reader, writer, session, lambda e: self.on_b(e), connection=conn)

        self.server = await asyncio.start_server(accept, "127.0.0.1", 0, limit=1 << 17)
        port = self.server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 17)
        session = Session(
            "initiator",
            self.dev_a,
            self.cert_a,
            lambda ident, cert: ident == self.id_b.public_key,
            remote_static=self.dev_b.public_key,
            now=loop.time(),
        )
        self.a = SessionConnection(reader, writer, session)
        self.tasks.append(
            loop.create_task(
                run_session(reader, writer, session, lambda e: self.on_a(e), connection=self.a)
            )
        )
        await asyncio.wait_for(self.a.wait_established(), 10)
        self.b = await asyncio.wait_for(accepted, 10)
        await asyncio.wait_for(self.b.wait_established(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for conn in (getattr(self, "a", None), getattr(self, "b", None)):
            if conn is not None:
                conn.close("done")
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 10)
        for task in self.tasks:
            task.cancel()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)


def _stages_us(n: int = 2000) -> dict[str, float]:
    """CPU cost of each step of one small message, microseconds, on this core."""
    from btchat.identity.keys import DeviceKey, Identity, verify_signature
    from btchat.messaging import envelope as E
    from btchat.session.core import DataReceived, Session

    a, b = Identity.generate(), Identity.generate()
    da, db = DeviceKey.generate(), DeviceKey.generate()
    body = E.text_body(TEXT)
    out: dict[str, float] = {}
    t = time.perf_counter()
    envs = [
        E.create(a, da.device_id, b.public_key, b"text", body, lamport=i, now=time.time())
        for i in range(n)
    ]
    out["create_and_sign"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    blobs = [E.encode_envelope(e) for e in envs]
    out["encode"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    parsed = [E.parse_envelope(x) for x in blobs]
    out["parse"] = (time.perf_counter() - t) / n * 1e6
    now = time.time()
    t = time.perf_counter()
    for env in parsed:
        E.verify_envelope(
            env, expected_sender=a.public_key, expected_recipient=b.public_key, now=now
        )
    out["verify"] = (time.perf_counter() - t) / n * 1e6
    msg = parsed[0].signed_bytes()
    sig = a.sign(msg)
    t = time.perf_counter()
    for _ in range(n):
        a.sign(msg)
    out["ed25519_sign_only"] = (time.perf_counter() - t) / n * 1e6
    t = time.perf_counter()
    for _ in range(n):
        verify_signature(a.public_key, sig, msg)
    out["ed25519_verify_only"] = (time.perf_counter() - t) / n * 1e6
    # The session's own cost per frame: encrypt, frame, deframe, decrypt (sans I/O).
    ca, cb = a.certify(da, int(now)), b.certify(db, int(now))
    sa = Session("initiator", da, ca, lambda i, c: True, remote_static=db.public_key, now=0.0)
    sb = Session("responder", db, cb, lambda i, c: True, now=0.0)
    for _ in range(3):
        sb.receive_data(sa.data_to_send(), 0.0)
        sa.receive_data(sb.data_to_send(), 0.0)
    assert sa.established and sb.established
    while sa.next_event() or sb.next_event():
        pass
    t = time.perf_counter()
    for blob in blobs:
        sa.send(blob, 1.0)
        sb.receive_data(sa.data_to_send(), 1.0)
        event = sb.next_event()
        assert isinstance(event, DataReceived)
    out["session_frame"] = (time.perf_counter() - t) / n * 1e6
    out["envelope_bytes"] = float(len(blobs[0]))
    return out


class _Persist:
    """The per-message store work of both sides, each call timed."""

    def __init__(self, root: Path) -> None:
        from btchat.messaging.store import Store

        self.a = Store.open(root / "a.db", os.urandom(32))
        self.b = Store.open(root / "b.db", os.urandom(32))
        self.us: dict[str, float] = {
            k: 0.0 for k in ("save_outgoing", "save_incoming", "mark_state", "ack_outbox")
        }

    def timed(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.us[name] += (time.perf_counter() - t) * 1e6

    def close(self) -> None:
        self.a.close()
        self.b.close()


async def _small_messages(
    pair: _Pair,
    n: int,
    persist: _Persist | None,
    rate: float | None,
    timeout: float,
) -> dict[str, Any]:
    """Send ``n`` text envelopes A -> B (as fast as possible, or paced at ``rate``/s).

    Without ``persist``: A signs and sends, B parses and verifies. With it: A saves
    before sending; B verifies, saves, and only then sends a signed "delivered" receipt;
    A verifies the receipt and applies it (mark_state, ack_outbox). Done when every
    message is stored at B and (persisted) every receipt is applied at A.
    """
    from btchat.messaging import envelope as E
    from btchat.session.core import DataReceived

    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    a_pk, b_pk = pair.id_a.public_key, pair.id_b.public_key
    body = E.text_body(TEXT)
    sent_at: dict[bytes, float] = {}
    latencies: list[float] = []
    counts = {"stored": 0, "acked": 0, "errors": 0}
    need_acks = persist is not None

    def check_done() -> None:
        finished = counts["stored"] >= n and (not need_acks or counts["acked"] >= n)
        if finished and not done.done():
            done.set_result(None)

    def on_b(event: Any) -> None:
        if not isinstance(event, DataReceived):
            return
        try:
            env = E.parse_envelope(event.payload)
            E.verify_envelope(env, expected_sender=a_pk, expected_recipient=b_pk, now=time.time())
        except E.EnvelopeError:
            counts["errors"] += 1
            return
        if persist is not None:
            persist.timed("save_incoming", persist.b.save_incoming, env, time.time())
        stored = time.perf_counter()
        latencies.append(stored - sent_at.pop(env.id))
        counts["stored"] += 1
        if persist is not None:  # stored, now acknowledge
            receipt = E.create(
                pair.id_b,
                pair.dev_b.device_id,
                a_pk,
                b"receipt",
                E.receipt_body([env.id], b"delivered"),
                lamport=counts["stored"],
                now=time.time(),
            )
            pair.b.send(E.encode_envelope(receipt))
        check_done()

    def on_a(event: Any) -> None:
        if persist is None or not isinstance(event, DataReceived):
            return
        try:
            env = E.parse_envelope(event.payload)
            E.verify_envelope(env, expected_sender=b_pk, expected_recipient=a_pk, now=time.time())
            ids, state = E.decode_receipt(env)
        except E.EnvelopeError:
            counts["errors"] += 1
            return
        persist.timed("mark_state", persist.a.mark_state, ids, state.decode())
        persist.timed("ack_outbox", persist.a.ack_outbox, ids)
        counts["acked"] += len(ids)
        check_done()

    pair.on_a, pair.on_b = on_a, on_b
    t0 = time.perf_counter()
    deadline = t0 + timeout
    sent = 0
    try:
        while sent < n and time.perf_counter() < deadline:
            if rate is not None:
                due = t0 + sent / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            # Latency counts from when the message was due (paced), so a sender that falls
            # behind shows its queueing; unpaced, from when A starts on it.
            start = t0 + sent / rate if rate is not None else time.perf_counter()
            env = E.create(
                pair.id_a,
                pair.dev_a.device_id,
                b_pk,
                b"text",
                body,
                lamport=sent + 1,
                now=time.time(),
            )
            sent_at[env.id] = start
            if persist is not None:  # persist, then act
                persist.timed("save_outgoing", persist.a.save_outgoing, env, time.time())
            pair.a.send(E.encode_envelope(env))
            sent += 1
            if rate is not None or sent % 64 == 0:
                await pair.a.drain()
                await asyncio.sleep(0)  # let the receiving end's pump run
        send_s = time.perf_counter() - t0
        await asyncio.wait_for(done, max(0.1, deadline - time.perf_counter()))
        complete = True
    except TimeoutError:
        complete = False
        send_s = time.perf_counter() - t0
    finally:
        pair.on_a = pair.on_b = lambda event: None
    elapsed = time.perf_counter() - t0
    out: dict[str, Any] = {
        "messages": counts["stored"],
        "sent": sent,
        "complete": complete,
        "errors": counts["errors"],
        "seconds": elapsed,
        "msgs_per_s": counts["stored"] / elapsed if elapsed else 0.0,
    }
    if rate is not None:
        out["rate"] = rate
        out["achieved_send_rate"] = sent / send_s if send_s else 0.0
        out["latency_ms"] = {
            "p50": pct(latencies, 0.50) * 1000,
            "p99": pct(latencies, 0.99) * 1000,
            "max": max(latencies, default=float("nan")) * 1000,
        }
    if persist is not None:
        out["acked"] = counts["acked"]
        if counts["stored"]:
            out["store_us_per_msg"] = {k: v / counts["stored"] for k, v in persist.us.items()}
        for k in persist.us:
            persist.us[k] = 0.0
    return out


#: The full-text index as it was kept before deferred indexing (messaging migration 2):
#: indexed by the insert trigger, inside the transaction that stores the message.
INLINE_FTS = (
    "DROP TRIGGER messages_fts_pending",
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
        WHEN new.text IS NOT NULL BEGIN
        INSERT INTO messages_fts (rowid, text) VALUES (new.seq, new.text);
    END""",
)


class _ChatEnd:
    """One side as the daemon runs it: the conversation core over a SQLCipher store and
    its asyncio shell (:class:`btchat.node.chat.Chat`), fed by the session's events, and
    the shell's idle-time indexer running as the daemon runs it. ``inline_fts``: the
    index written in each insert instead (before deferred indexing; no indexer)."""

    def __init__(self, path: Path, identity: Any, device: Any, *, inline_fts: bool = False) -> None:
        from btchat.messaging.conversation import Conversations
        from btchat.messaging.store import Store
        from btchat.node.chat import Chat

        self.store = Store.open(path, os.urandom(32))
        if inline_fts:
            with self.store.transaction() as conn:
                for statement in INLINE_FTS:
                    conn.execute(statement)
        self.core = Conversations(identity, device.device_id, self.store)
        self.conn: Any = None
        self.on_json: Callable[[dict[str, Any]], None] = lambda event: None
        self.chat = Chat(self.core, self.store, send=self._send, emit=lambda e: self.on_json(e))
        self.indexer = (
            None if inline_fts else asyncio.get_running_loop().create_task(self.chat.index_loop())
        )

    def _send(self, peer: bytes, data: bytes) -> bool:
        self.conn.send(data)
        return True

    def attach(self, conn: Any, peer: bytes, peer_device: bytes) -> Callable[[Any], None]:
        """Bind to a live session; returns its event callback."""
        from btchat.session.core import DataReceived

        self.conn = conn
        self.core.session_up(peer, time.time())
        self.chat.drive()

        def on_event(event: Any) -> None:
            if isinstance(event, DataReceived):
                self.chat.receive(peer, peer_device, event.payload)

        return on_event

    @property
    def commits(self) -> int:
        return int(self.core.stats["batches"])

    def close(self) -> None:
        if self.indexer is not None:
            self.indexer.cancel()
        self.chat.close()
        self.store.close()


async def _chat_messages(
    pair: _Pair, ends: tuple[_ChatEnd, _ChatEnd], n: int, rate: float | None, timeout: float
) -> dict[str, Any]:
    """``n`` texts A -> B through the daemon's path (``Chat.send_text``, the pump's
    payloads to ``Chat.receive``), as fast as possible or paced at ``rate``/s.

    Latency: from A starting to send to B's "message" event (stored, committed). Done
    when every text is stored at B and every receipt applied at A."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    a, b = ends
    b_pk = pair.id_b.public_key
    indexed0 = a.chat.stats["indexed"] + b.chat.stats["indexed"]
    starts: list[float] = []  # one session delivers in order: the k-th stored is the k-th sent
    latencies: list[float] = []
    counts = {"stored": 0, "acked": 0}
    commits0 = a.commits + b.commits

    def check_done() -> None:
        if counts["stored"] >= n and counts["acked"] >= n and not done.done():
            done.set_result(None)

    def on_b(event: dict[str, Any]) -> None:
        if event["type"] == "message" and event["message"]["direction"] == "in":
            latencies.append(time.perf_counter() - starts[counts["stored"]])
            counts["stored"] += 1
            check_done()

    def on_a(event: dict[str, Any]) -> None:
        if event["type"] == "receipt" and event["state"] == "delivered":
            counts["acked"] += len(event["ids"])
            check_done()

    a.on_json, b.on_json = on_a, on_b
    futures: list[asyncio.Future[Any]] = []
    t0 = time.perf_counter()
    deadline = t0 + timeout
    sent = 0
    try:
        while sent < n and time.perf_counter() < deadline:
            if rate is not None:
                delay = t0 + sent / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            # Paced: every text due by now is handed over before yielding, as a daemon
            # busy with a commit finds every API request that arrived meanwhile waiting.
            due = n if rate is None else min(n, 1 + int((time.perf_counter() - t0) * rate))
            while sent < due:
                starts.append(t0 + sent / rate if rate is not None else time.perf_counter())
                futures.append(a.chat.send_text(b_pk, TEXT))
                sent += 1
                if rate is None and sent % 64 == 0:
                    break
            await pair.a.drain()
            await asyncio.sleep(0)  # let the receiving end's pump run
        send_s = time.perf_counter() - t0
        await asyncio.wait_for(done, max(0.1, deadline - time.perf_counter()))
        complete = True
    except TimeoutError:
        complete = False
        send_s = time.perf_counter() - t0
    finally:
        a.on_json = b.on_json = lambda event: None
    errors = sum(1 for f in futures if f.done() and f.exception() is not None)
    elapsed = time.perf_counter() - t0
    commits = a.commits + b.commits - commits0
    out: dict[str, Any] = {
        "messages": counts["stored"],
        "sent": sent,
        "acked": counts["acked"],
        "complete": complete,
        "errors": errors,
        "seconds": elapsed,
        "msgs_per_s": counts["stored"] / elapsed if elapsed else 0.0,
        "commits_per_message": commits / max(1, counts["stored"]),
        # The idle-time indexer during the run, and what it left pending at the end.
        "indexed_during": a.chat.stats["indexed"] + b.chat.stats["indexed"] - indexed0,
        "pending_after": a.store.pending_index() + b.store.pending_index(),
    }
    if rate is not None:
        out["rate"] = rate
        out["achieved_send_rate"] = sent / send_s if send_s else 0.0
        out["latency_ms"] = {
            "p50": pct(latencies, 0.50) * 1000,
            "p99": pct(latencies, 0.99) * 1000,
            "max": max(latencies, default=float("nan")) * 1000,
        }
    return out


def _index_costs(root: Path, identity: Any, device: Any, to: bytes, n: int) -> dict[str, Any]:
    """The deferred index's own costs on a SQLCipher store holding ``n`` messages stored
    by group commit (batches of 100; texts of 16 words) and none indexed: a search with
    that backlog (it indexes all of it first), the same search again (nothing pending),
    and the indexer's rate in the shell's steps (:data:`INDEX_BATCH` rows each)."""
    from btchat.messaging import envelope as E
    from btchat.messaging.store import Store
    from btchat.node.chat import INDEX_BATCH

    now = time.time()
    # Words, not TEXT (one 100-letter token): about 16 tokens per row, as people write.
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "near",
        "our",
        "old",
        "red",
        "barn",
    ]

    def text(i: int) -> str:
        return " ".join(words[(i * 7 + k) % len(words)] for k in range(15)) + f" w{i}"

    envs = [
        E.create(
            identity,
            device.device_id,
            to,
            E.TEXT,
            E.text_body(text(i)),
            lamport=i + 1,
            now=now,
        )
        for i in range(2 * n)
    ]
    out: dict[str, Any] = {"backlog": n, "step_rows": INDEX_BATCH}
    with Store.open(root / "index.db", os.urandom(32)) as store:

        def fill(batch: list[Any]) -> None:
            for start in range(0, len(batch), 100):
                with store.transaction():
                    for env in batch[start : start + 100]:
                        store.save_outgoing(env, now)

        fill(envs[:n])
        t0 = time.perf_counter()
        found = store.search("w7")
        out["search_backlog_ms"] = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        again = store.search("w7")
        out["search_ms"] = (time.perf_counter() - t0) * 1000
        out["found"] = [len(found), len(again)]
        fill(envs[n:])
        steps: list[float] = []
        while True:
            t0 = time.perf_counter()
            rows = store.index_pending(INDEX_BATCH)
            steps.append(time.perf_counter() - t0)
            if rows < INDEX_BATCH:
                break
        out["indexer_rows_per_s"] = n / sum(steps)
        out["step_ms_max"] = max(steps) * 1000
        out["step_ms_median"] = pct(steps, 0.5) * 1000
        out["integrity"] = store.integrity_check()
    return out


async def _session_throughput(quick: bool) -> dict[str, Any]:
    n_fast = 3000 if quick else 8000
    n_persist = 1000 if quick else 2000
    paced = int(PACED_RATE * (1.5 if quick else 3.0))
    n_chat = 3000 if quick else 8000
    root = Path(tempfile.mkdtemp(prefix="btchat-bench-store-"))
    persist = None
    ends: tuple[_ChatEnd, _ChatEnd] | None = None
    inline: tuple[_ChatEnd, _ChatEnd] | None = None
    try:
        persist = _Persist(root)
        async with _Pair() as pair:
            await _small_messages(pair, 200, None, None, 10)  # warm-up
            fast = await _small_messages(pair, n_fast, None, None, 60)
            # Before: every store call its own transaction (the daemon until group commit).
            stored = await _small_messages(pair, n_persist, persist, None, 60)
            lat_fast = await _small_messages(pair, paced, None, PACED_RATE, 30)
            lat_stored = await _small_messages(pair, paced, persist, PACED_RATE, 30)
            # The persisted path at a rate it sustains, for its latency without queueing.
            lat_low = await _small_messages(pair, 150, persist, 100.0, 10)
            # Group commit with the full-text index in each insert (before deferred
            # indexing), then the daemon's path as it is now; same pair, same run.
            inline = (
                _ChatEnd(root / "inline-a.db", pair.id_a, pair.dev_a, inline_fts=True),
                _ChatEnd(root / "inline-b.db", pair.id_b, pair.dev_b, inline_fts=True),
            )
            pair.on_a = inline[0].attach(pair.a, pair.id_b.public_key, pair.dev_b.device_id)
            pair.on_b = inline[1].attach(pair.b, pair.id_a.public_key, pair.dev_a.device_id)
            await asyncio.sleep(0.1)  # presence both ways
            await _chat_messages(pair, inline, 200, None, 10)  # warm-up
            chat_inline = await _chat_messages(pair, inline, n_chat, None, 60)
            lat_inline = await _chat_messages(pair, inline, paced, PACED_RATE, 30)
            # After: the daemon's path, group commit, deferred indexing.
            ends = (
                _ChatEnd(root / "chat-a.db", pair.id_a, pair.dev_a),
                _ChatEnd(root / "chat-b.db", pair.id_b, pair.dev_b),
            )
            pair.on_a = ends[0].attach(pair.a, pair.id_b.public_key, pair.dev_b.device_id)
            pair.on_b = ends[1].attach(pair.b, pair.id_a.public_key, pair.dev_a.device_id)
            await asyncio.sleep(0.1)  # presence both ways
            await _chat_messages(pair, ends, 200, None, 10)  # warm-up
            chat = await _chat_messages(pair, ends, n_chat, None, 60)
            lat_chat = await _chat_messages(pair, ends, paced, PACED_RATE, 30)
            pair.on_a = pair.on_b = lambda event: None
            # The indexer catches up once the runs are over (idle time).
            t0 = time.perf_counter()
            while ends[0].store.pending_index() + ends[1].store.pending_index():
                await asyncio.sleep(0.01)
            catch_up_s = time.perf_counter() - t0
        integrity = persist.a.integrity_check() + persist.b.integrity_check()
        for end in (*ends, *inline):
            integrity += end.store.integrity_check()
        found = [len(end.store.search("x", limit=1000)) for end in ends]
        index = _index_costs(
            root, pair.id_a, pair.dev_a, pair.id_b.public_key, 2000 if quick else 10000
        )
        integrity += index["integrity"]
    finally:
        if persist is not None:
            persist.close()
        for end in (*(ends or ()), *(inline or ())):
            end.close()
        shutil.rmtree(root, ignore_errors=True)
    stages = _stages_us()
    # Issue 16 item 2: Ed25519 alone (sign at A, verify at B, the same envelope bytes)
    # bounds what one core can do; the rest of the per-message cost is ours to remove.
    bound = 1e6 / (stages["ed25519_sign_only"] + stages["ed25519_verify_only"])
    return {
        "sign_verify_bound_per_s": bound,
        "unpersisted_of_bound": fast["msgs_per_s"] / bound,
        "text_bytes": len(TEXT),
        "envelope_bytes": int(stages["envelope_bytes"]),
        "unpersisted": fast,
        "persisted_per_call": stored,
        "persisted": chat,
        "persisted_of_unpersisted": chat["msgs_per_s"] / fast["msgs_per_s"],
        "persisted_inline_fts": chat_inline,
        "paced_persisted_inline_fts": lat_inline,
        "inline_fts_of_unpersisted": chat_inline["msgs_per_s"] / fast["msgs_per_s"],
        "index_catch_up_s": catch_up_s,
        "search_found_after_runs": found,
        "index": index,
        "paced_unpersisted": lat_fast,
        "paced_persisted_per_call": lat_stored,
        "paced_persisted": lat_chat,
        "paced_persisted_per_call_100": lat_low,
        "stages_us": stages,
        "store": f"SQLCipher (raw 32-byte key), WAL, synchronous=FULL, on {_fs_type(root)}",
        "commits_per_message_per_call": 4,
        "integrity": sorted(set(integrity)),
        "target_unpersisted": 20_000,
        "target_persisted": 5_000,
    }


def session_throughput(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_session_throughput(quick))


# ============================================================================ bulk


async def _bulk_session(pair: _Pair, payload: bytes, seconds: float) -> dict[str, float]:
    from btchat.session.core import DataReceived

    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    got = {"bytes": 0}
    target: list[int] = []

    def on_b(event: Any) -> None:
        if isinstance(event, DataReceived):
            got["bytes"] += len(event.payload)
            if target and got["bytes"] >= target[0] and not done.done():
                done.set_result(time.perf_counter())

    pair.on_b = on_b
    total = 0
    t0 = time.perf_counter()
    try:
        while time.perf_counter() - t0 < seconds:
            pair.a.send(payload)
            total += len(payload)
            await pair.a.drain()
        target.append(total)
        if got["bytes"] >= total and not done.done():
            done.set_result(time.perf_counter())
        end = await asyncio.wait_for(done, 30)
    finally:
        pair.on_b = lambda event: None
    return {"bytes": float(total), "seconds": end - t0, "mb_per_s": total / (end - t0) / 1e6}


async def _bulk_raw(payload: bytes, seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()
    got = {"bytes": 0}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Read as the session pump does: up to READ_SIZE bytes per call.
        while data := await reader.read(1 << 16):
            got["bytes"] += len(data)
        if not done.done():
            done.set_result(time.perf_counter())
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=1 << 17)
    writer = None
    try:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 17)
        total = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            writer.write(payload)
            total += len(payload)
            await writer.drain()
        writer.write_eof()
        end = await asyncio.wait_for(done, 30)
        assert got["bytes"] == total
    finally:
        if writer is not None:
            writer.close()
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
    return {"bytes": float(total), "seconds": end - t0, "mb_per_s": total / (end - t0) / 1e6}


# Two processes: the receiving end in a child process (its own core, as a real peer has).


async def _receiver_main() -> None:
    """Child: accept connections one after another; for each, print bytes and end time.

    The first line out is ``port device_key_hex identity_hex``. A connection whose first
    byte is ``R`` is a raw stream; anything else is the initiator's handshake.
    """
    import json

    from btchat.identity.keys import DeviceKey, Identity
    from btchat.session.connection import run_session
    from btchat.session.core import DataReceived, Session, SessionClosed, SessionFailed

    ident, dev = Identity.generate(), DeviceKey.generate()
    cert = ident.certify(dev, int(time.time()))
    loop = asyncio.get_running_loop()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = {"bytes": 0, "end": 0.0}
        first = await reader.readexactly(1)
        if first == b"R":
            while data := await reader.read(1 << 16):
                got["bytes"] += len(data)
            got["end"] = time.monotonic()
            writer.close()
        else:
            session = Session("responder", dev, cert, lambda i, c: True, now=loop.time())
            session.receive_data(first, loop.time())

            def on_event(event: Any) -> None:
                if isinstance(event, DataReceived):
                    got["bytes"] += len(event.payload)
                elif isinstance(event, SessionClosed | SessionFailed):
                    got["end"] = time.monotonic()

            await run_session(reader, writer, session, on_event)
        print(json.dumps(got), flush=True)

    server = await asyncio.start_server(serve, "127.0.0.1", 0, limit=1 << 17)
    port = server.sockets[0].getsockname()[1]
    print(port, dev.public_key.hex(), ident.public_key.hex(), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    server.close()


async def _bulk_two_process(payload: bytes, seconds: float, rounds: int) -> dict[str, Any]:
    """Sender here, receiver in a child process: each end has a core, as real peers do."""
    import json

    from btchat.identity.keys import DeviceKey, Identity
    from btchat.session.connection import SessionConnection, run_session
    from btchat.session.core import Session

    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.messenger",
        "--bulk-receiver",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert child.stdout is not None and child.stdin is not None
    raw: list[float] = []
    sess: list[float] = []
    try:
        port_s, dev_hex, id_hex = (await asyncio.wait_for(child.stdout.readline(), 30)).split()
        port, remote_dev, remote_id = int(port_s), bytes.fromhex(dev_hex.decode()), id_hex
        ident, dev = Identity.generate(), DeviceKey.generate()
        cert = ident.certify(dev, int(time.time()))

        async def report(t0: float) -> float:
            line = await asyncio.wait_for(child.stdout.readline(), 60)  # type: ignore[union-attr]
            got = json.loads(line)
            return got["bytes"] / (got["end"] - t0) / 1e6

        async def one_raw(secs: float) -> float:
            _, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 17)
            writer.write(b"R")
            t0 = time.monotonic()
            while time.monotonic() - t0 < secs:
                writer.write(payload)
                await writer.drain()
            writer.write_eof()
            rate = await report(t0)
            writer.close()
            return rate

        async def one_session(secs: float) -> float:
            loop = asyncio.get_running_loop()
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 17)
            session = Session(
                "initiator",
                dev,
                cert,
                lambda i, c: i.hex() == remote_id.decode(),
                remote_static=remote_dev,
                now=loop.time(),
            )
            conn = SessionConnection(reader, writer, session)
            task = loop.create_task(
                run_session(reader, writer, session, lambda e: None, connection=conn)
            )
            try:
                await asyncio.wait_for(conn.wait_established(), 10)
                t0 = time.monotonic()
                while time.monotonic() - t0 < secs:
                    conn.send(payload)
                    await conn.drain()
                conn.close("done")
                return await report(t0)
            finally:
                await asyncio.wait_for(task, 10)

        await one_raw(0.3)  # warm-up
        await one_session(0.3)
        for _ in range(rounds):
            raw.append(await one_raw(seconds))
            sess.append(await one_session(seconds))
    finally:
        with contextlib.suppress(Exception):
            child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 10)
        except TimeoutError:
            child.kill()
            await child.wait()
    raw_m, sess_m = summary(raw)["median"], summary(sess)["median"]
    return {
        "raw_mb_per_s": raw_m,
        "session_mb_per_s": sess_m,
        "raw_rounds": raw,
        "session_rounds": sess,
        "ratio": sess_m / raw_m if raw_m else 0.0,
    }


async def _bulk_ratio(quick: bool) -> dict[str, Any]:
    from btchat.session.core import MAX_PAYLOAD

    seconds = 1.5 if quick else 3.0
    rounds = 2 if quick else 3
    payload = os.urandom(MAX_PAYLOAD)
    raw: list[float] = []
    sess: list[float] = []
    async with _Pair() as pair:
        await _bulk_session(pair, payload, 0.3)  # warm-up
        await _bulk_raw(payload, 0.3)
        for _ in range(rounds):  # interleaved, so drift in machine load hits both
            raw.append((await _bulk_raw(payload, seconds))["mb_per_s"])
            sess.append((await _bulk_session(pair, payload, seconds))["mb_per_s"])
    raw_m, sess_m = summary(raw)["median"], summary(sess)["median"]
    one = {
        "raw_mb_per_s": raw_m,
        "session_mb_per_s": sess_m,
        "raw_rounds": raw,
        "session_rounds": sess,
        "ratio": sess_m / raw_m if raw_m else 0.0,
    }
    two = await _bulk_two_process(payload, seconds, rounds)
    return {
        "payload_bytes": len(payload),
        "seconds_per_round": seconds,
        "rounds": rounds,
        "one_process": one,
        "two_processes": two,
        "target_ratio": 0.5,
        "target_met_one_process": one["ratio"] >= 0.5,
        "target_met_two_processes": two["ratio"] >= 0.5,
    }


def bulk_ratio(quick: bool = False) -> dict[str, Any]:
    return asyncio.run(_bulk_ratio(quick))


if __name__ == "__main__":
    import json

    if "--bulk-receiver" in sys.argv:
        asyncio.run(_receiver_main())
        sys.exit(0)
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    quick = "--quick" in sys.argv
    for name, fn in (
        ("session_throughput", session_throughput),
        ("bulk_ratio", bulk_ratio),
        ("first_message", first_message),
    ):
        if which in ("all", name):
            print(name, json.dumps(fn(quick), indent=1, default=str)[:3000])
