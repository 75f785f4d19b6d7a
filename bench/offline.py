"""Offline-delivery benchmarks (issue 4): pending delivery on return, DHT traffic per message.

* :func:`pending_delivery`: real ``btchat up`` daemons (one process each) on a 1,000-node
  ``btchat sandbox`` swarm on 127.0.0.1. Per run, a fresh pair A and B (contacts both
  ways) come up, A sends one message by session (so each hands the other its prekeys),
  B goes down, A sends ``k`` messages, which go into the DHT mailbox, we wait until A's
  ``status`` shows every mailbox put finished, and A is killed (SIGKILL), so nothing can
  come by session. Then we start B's ``btchat up`` and time, from that process start, its
  API answering, its DHT join (its log), the first and the last of the ``k`` messages in
  B's history (its event stream and a 30 ms poll of its API, whichever saw it first) and
  when B's database stored each one.
* :func:`offline_traffic`: :class:`~btchat.sim.offline_world.OfflineWorld` on a
  :class:`~btchat.sim.dht_swarm.SimSwarm` with the long-run node configuration, 48
  simulated hours. Pairs of users side by side in one swarm: a sender of 1 message and a
  sender of 10 whose recipients stay offline until the messages expire, a sender with an
  offline contact who sends nothing (the cost of polling, which every user with an
  offline contact pays anyway), and two pairs whose recipient returns after 24.5 hours
  while the sender is gone (the recipient's cost to fetch). Every datagram to and from
  those users is counted at the simulated wire, sorted by what it was for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.lookups import summary
from bench.messenger import BTCHAT, _env, _log_times, _make_pair, _stop

SANDBOX_NODES = 1000
#: History poll period while waiting for the messages on B (seconds).
POLL = 0.03
#: Seconds from B's process start until a run without all messages counts as failed.
RETURN_TIMEOUT = {1: 30.0, 100: 120.0}
#: Seconds A may take to finish every mailbox put of the k messages.
STORE_TIMEOUT = 180.0
TARGET_S = 2.0  # issue 4: median <= 2 s for one pending message

# ===================================================================== pending delivery


async def _up(
    d: Path, bootstrap: str, env: dict[str, str], log: Path, timeout: float = 30.0
) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    """Start ``btchat up -v`` on ``d`` (stderr to ``log``); wait for its API line."""
    with open(log, "wb") as err:
        proc = await asyncio.create_subprocess_exec(
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
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
    except BaseException:
        await _stop(proc)
        raise
    if not line:
        await _stop(proc)
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        raise RuntimeError(f"daemon {d.name} died: {lines[-1] if lines else 'no output'}")
    info = json.loads(line)
    return proc, {"url": info["api"], "token": (d / "api.token").read_text().strip()}


async def _until(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll a blocking predicate (API calls) in a thread until it holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await asyncio.to_thread(pred)
        if value:
            return value
        await asyncio.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


async def _watch_in(
    url: str, token: str, ids: set[str], marks: dict[str, float], t0: float
) -> None:
    """Record when B's event stream shows the first and the last of ``ids``."""
    from btchat.api.client import watch_events

    seen: set[str] = set()
    with contextlib.suppress(Exception):
        async for event in watch_events(url, token):
            if event.get("type") != "message":
                continue
            msg = event.get("message", {})
            if msg.get("direction") != "in" or msg.get("id") not in ids:
                continue
            now = time.monotonic() - t0
            seen.add(msg["id"])
            marks.setdefault("first_event", now)
            if len(seen) == len(ids):
                marks.setdefault("all_event", now)
                return


async def _return_of_b(
    b_dir: Path, bootstrap: str, env: dict[str, str], ids: set[str], timeout: float
) -> dict[str, Any]:
    """Start B at t0 and time what it shows until it holds every one of ``ids``."""
    from btchat.api.client import ApiClient
    from btchat.messaging.store import Store

    log = b_dir.parent / "b-return.log"
    marks: dict[str, float] = {}
    out: dict[str, Any] = {}
    proc = None
    watcher: asyncio.Task[None] | None = None
    wall0 = time.time()
    t0 = time.monotonic()
    try:
        proc, api = await _up(b_dir, bootstrap, env, log, timeout)
        marks["api_up"] = time.monotonic() - t0
        watcher = asyncio.create_task(_watch_in(api["url"], api["token"], ids, marks, t0))
        client = ApiClient(api["url"], api["token"], timeout=10)
        deadline = t0 + timeout
        while time.monotonic() < deadline and "all_event" not in marks:
            hist = await asyncio.to_thread(client.history, "a", 500)
            now = time.monotonic() - t0
            got = sum(1 for m in hist if m["id"] in ids)
            if got:
                marks.setdefault("first_polled", now)
            if got == len(ids):
                marks["all_polled"] = now
                break
            marks["polled_count"] = got
            await asyncio.sleep(POLL)
        out["b_cpu_s"] = _cpu_s(proc.pid)
        out["mailbox"] = (await asyncio.to_thread(client.status))["mailbox"]
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
        await _stop(proc)
    firsts = [marks[k] for k in ("first_event", "first_polled") if k in marks]
    alls = [marks[k] for k in ("all_event", "all_polled") if k in marks]
    out.update(marks)
    if firsts:
        out["first_shown"] = min(firsts)
    if alls:
        out["all_shown"] = min(alls)
    out["ok"] = bool(alls)
    logged = _log_times(log, wall0)
    if "joined" in logged:
        out["joined"] = logged["joined"]
    # When B's database stored each message (its own wall clock, ms).
    store = Store.open(b_dir / "messages.db", None)
    try:
        stored = [
            row.received_ms / 1000 - wall0
            for i in ids
            if (row := store.get_message(bytes.fromhex(i))) is not None
        ]
    finally:
        store.close()
    if stored:
        out["first_stored"] = min(stored)
        out["all_stored"] = max(stored) if len(stored) == len(ids) else None
    out["stored_count"] = len(stored)
    out["log_tail"] = _mailbox_log(log)
    return out


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _mailbox_log(path: Path) -> list[str]:
    """B's log lines about the mailbox or the DHT (for the report's reading)."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    keys = ("offline", "mailbox", "joined", "prekey", "DHT")
    return [ln for ln in lines if any(k in ln for k in keys)][:20]


async def _one_run(root: Path, k: int, bootstrap: str, env: dict[str, str]) -> dict[str, Any]:
    """Set the scene (k messages waiting in the DHT, A dead), then time B's return."""
    from btchat.api.client import ApiClient

    a_dir, b_dir = _make_pair(root)
    result: dict[str, Any] = {"k": k, "ok": False}
    a = b = None
    try:
        (a, api_a), (b, _) = await asyncio.gather(
            _up(a_dir, bootstrap, env, root / "a-1.log"),
            _up(b_dir, bootstrap, env, root / "b-1.log"),
        )
        ca = ApiClient(api_a["url"], api_a["token"], timeout=10)
        first = await asyncio.to_thread(ca.send_message, "b", "before B goes offline")

        def delivered() -> bool:
            states = [m["state"] for m in ca.history("b") if m["id"] == first["id"]]
            return bool(states) and states[0] in ("delivered", "read")

        await _until(delivered, 60, "the first message to be delivered by session")
        await _stop(b)
        b = None
        await _until(lambda: ca.status()["contacts_online"] == 0, 30, "A to see B offline")
        base = (await asyncio.to_thread(ca.status))["mailbox"]["stats"]
        t = time.monotonic()
        ids: list[str] = []
        states: Counter[str] = Counter()
        for j in range(k):
            msg = await asyncio.to_thread(ca.send_message, "b", f"offline message {j}")
            ids.append(msg["id"])
            states[msg["state"]] += 1
        result["send_api_s"] = time.monotonic() - t
        result["states_at_send"] = dict(states)

        def stored() -> dict[str, Any] | None:
            m = ca.status()["mailbox"]
            s = m["stats"]
            finished = s.get("puts_ok", 0) + s.get("puts_failed", 0) >= s.get("puts", 0)
            deposited = s.get("deposited", 0) - base.get("deposited", 0)
            return m if m["pending"] == k and deposited == k and finished else None

        mailbox = await _until(stored, STORE_TIMEOUT, "A's mailbox puts to finish", 0.05)
        result["a_stored_s"] = time.monotonic() - t
        s = mailbox["stats"]
        for key in ("puts", "puts_ok", "puts_failed"):
            result[f"a_{key}"] = s.get(key, 0) - base.get(key, 0)
        a.kill()  # SIGKILL: nothing more from A, by session or otherwise
        await a.wait()
        a = None
        result.update(await _return_of_b(b_dir, bootstrap, env, set(ids), RETURN_TIMEOUT[k]))
    except Exception as exc:  # a failed run is reported, not fatal
        result["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for proc in (a, b):
            await _stop(proc)
    return result


def _case(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if r.get("ok")]

    def series(key: str) -> dict[str, float]:
        return summary([r[key] for r in ok if r.get(key) is not None])

    return {
        "runs": len(runs),
        "complete_runs": len(ok),
        "all_shown_s": series("all_shown"),
        "first_shown_s": series("first_shown"),
        "api_up_s": series("api_up"),
        "joined_s": series("joined"),
        "first_stored_s": series("first_stored"),
        "all_stored_s": series("all_stored"),
        "a_stored_s": series("a_stored_s"),
        "a_puts": summary([float(r["a_puts"]) for r in runs if "a_puts" in r]),
        "a_puts_failed": sum(r.get("a_puts_failed", 0) for r in runs),
        "b_puts": summary([float(r["mailbox"]["stats"].get("puts", 0)) for r in ok]),
        "b_cpu_s": series("b_cpu_s"),
        "chunks_missing": sum(
            r.get("mailbox", {}).get("stats", {}).get("chunks_missing", 0) for r in runs
        ),
        "errors": [r["error"] for r in runs if "error" in r],
    }


async def _sandbox(env: dict[str, str], nodes: int) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        *BTCHAT,
        "sandbox",
        "--nodes",
        str(nodes),
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 180)
        return proc, json.loads(line)["bootstrap"]
    except BaseException:
        await _stop(proc)
        raise


async def _pending_delivery(plan: dict[int, int], nodes: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="btchat-bench-offline-"))
    env = _env(root)
    sandbox = None
    runs: dict[int, list[dict[str, Any]]] = {k: [] for k in plan}
    t_all = time.monotonic()
    try:
        t = time.monotonic()
        sandbox, bootstrap = await _sandbox(env, nodes)
        sandbox_s = time.monotonic() - t
        await asyncio.sleep(1.0)  # let the swarm's first maintenance settle
        for k, count in plan.items():
            for i in range(count):
                runs[k].append(await _one_run(root / f"k{k}-{i}", k, bootstrap, env))
    finally:
        await _stop(sandbox)
        shutil.rmtree(root, ignore_errors=True)
    cases = {str(k): _case(v) for k, v in runs.items()}
    one = cases["1"]
    return {
        "nodes": nodes,
        "sandbox_start_s": sandbox_s,
        "wall_s": time.monotonic() - t_all,
        "cases": cases,
        "target_s": TARGET_S,
        "target_met": one["complete_runs"] == one["runs"] > 0
        and one["all_shown_s"]["median"] <= TARGET_S,
        "raw": {str(k): v for k, v in runs.items()},
    }


def pending_delivery(quick: bool = False) -> dict[str, Any]:
    plan = {1: 3, 100: 1} if quick else {1: 5, 100: 3}
    return asyncio.run(_pending_delivery(plan, SANDBOX_NODES))


# ======================================================================== DHT traffic

#: Simulated swarm size for the traffic benchmark (quick: smaller).
TRAFFIC_NODES = 300
TRAFFIC_NODES_QUICK = 200
#: Virtual hours after the sends: retention (48 h) plus time for the expiry to be seen.
RETENTION_H = 48
RETURN_AFTER_H = 24.5
#: (pair name, messages sent, recipient returns at RETURN_AFTER_H with the sender gone)
PAIRS = (("idle", 0, False), ("one", 1, False), ("ten", 10, False))
BACK_PAIRS = (("one_back", 1, True), ("ten_back", 10, True))


#: What a user's BEP 44 queries were for, by the item's target (see :class:`_Wire`).
MAILBOX_PURPOSES = ("publish", "poll", "fetch", "prekeys")


class _Wire:
    """A :class:`SimNetwork` tracer: datagrams to and from chosen users, by purpose.

    A user's BEP 44 ``get``/``put`` queries (and the answers to them) are sorted by the
    item they are for, computed from the pair's secret as the mailbox does: *publish*,
    its own heads and chunks for a contact (a put's lookup and its stores); *poll*, a
    contact's head for it; *fetch*, a contact's chunks for it; *prekeys*, a contact's
    prekey bundle; *bundle*, its own. Its other queries are *maintenance* (``find_node``,
    ``ping``, joining); queries from other nodes and its answers are *serving*. Sent bytes
    are counted when a datagram is handed to the wire, received bytes when delivered.
    """

    DAYS = range(-1, 4)  # the UTC days a 48-hour run from t=0 touches (and the day before)
    COUNTERS = range(0, 16)  # packet counters n per direction
    PARTS = range(0, 4)  # chunks per packet

    def __init__(self, users: list[Any]) -> None:
        from btchat.dht.bep44 import mutable_target
        from btchat.identity.rendezvous import pairwise_secret
        from btchat.offline import packet as pkt
        from btchat.offline.ratchet import PREKEY_SALT

        def target(slot: Any) -> bytes:
            return mutable_target(slot.public_key)

        self.users = {u.addr: u for u in users}
        self.targets: dict[Any, dict[bytes, str]] = {}
        for u in users:
            t = self.targets[u.addr] = {mutable_target(u.pk, PREKEY_SALT): "bundle"}
            for peer in u.contacts:
                secret = pairwise_secret(u.identity, peer)
                t[mutable_target(peer, PREKEY_SALT)] = "prekeys"
                for d in self.DAYS:
                    t[target(pkt.head_slot(secret, u.pk, peer, d))] = "publish"
                    t[target(pkt.head_slot(secret, peer, u.pk, d))] = "poll"
                for n in self.COUNTERS:
                    for i in self.PARTS:
                        t[target(pkt.chunk_slot(secret, u.pk, peer, n, i))] = "publish"
                        t[target(pkt.chunk_slot(secret, peer, u.pk, n, i))] = "fetch"
        self.counts: dict[str, Counter[str]] = {u.name: Counter() for u in users}
        self._asked: dict[tuple[Any, bytes, Any], str] = {}

    def snapshot(self, name: str) -> Counter[str]:
        return Counter(self.counts[name])

    def __call__(self, event: Any) -> None:
        if event.kind == "send":
            if event.src in self.users:
                self._out(event.src, event.dst, event.data)
        elif event.kind == "deliver" and event.dst in self.users:
            self._in(event.dst, event.src, event.data)

    def _purpose(self, me: Any, method: bytes, args: dict[bytes, Any]) -> str:
        from btchat.dht.bep44 import mutable_target

        if method == b"get":
            target = args.get(b"target")
        elif method == b"put" and isinstance(args.get(b"k"), bytes):
            target = mutable_target(args[b"k"], args.get(b"salt", b""))
        else:
            return "maintenance"
        return self.targets[me].get(target, "other_item")  # type: ignore[arg-type]

    def _out(self, me: Any, dst: Any, data: bytes) -> None:
        from btchat.dht.krpc import KrpcError, Query, parse_message

        c = self.counts[self.users[me].name]
        try:
            msg = parse_message(data)
        except (KrpcError, ValueError):
            c["other_bytes_out"] += len(data)
            return
        if isinstance(msg, Query):
            what = self._purpose(me, msg.method, msg.args)
            c[f"{what}_queries"] += 1
            c[f"{what}_bytes_out"] += len(data)
            self._asked[(me, msg.tid, dst)] = what
        else:
            c["serving_answers"] += 1
            c["serving_bytes_out"] += len(data)

    def _in(self, me: Any, src: Any, data: bytes) -> None:
        from btchat.dht.krpc import KrpcError, Query, parse_message

        c = self.counts[self.users[me].name]
        try:
            msg = parse_message(data)
        except (KrpcError, ValueError):
            c["other_bytes_in"] += len(data)
            return
        if isinstance(msg, Query):
            c["serving_queries_in"] += 1
            c["serving_bytes_in"] += len(data)
        else:
            what = self._asked.pop((me, msg.tid, src), "unmatched")
            c[f"{what}_responses"] += 1
            c[f"{what}_bytes_in"] += len(data)


def _part(wire: Counter[str], *what: str) -> dict[str, int]:
    out_b = sum(wire[f"{w}_bytes_out"] for w in what)
    in_b = sum(wire[f"{w}_bytes_in"] for w in what)
    rpcs = sum(wire[f"{w}_queries"] for w in what)
    return {"rpcs": rpcs, "bytes_out": out_b, "bytes_in": in_b, "bytes": out_b + in_b}


def _cost(wire: Counter[str], ops: Counter[str], hours: float) -> dict[str, Any]:
    """One user's figures over a window: its mailbox's RPCs and bytes by purpose (the
    world's op counts alongside), and what its DHT node spent on everything else."""
    out: dict[str, Any] = {w: _part(wire, w) for w in MAILBOX_PURPOSES}
    out["mailbox"] = _part(wire, *MAILBOX_PURPOSES)
    out.update(
        gets=ops["gets"],
        puts=ops["puts"],
        rpcs_of_completed_ops=ops["rpcs"],
        hours=hours,
        node_bytes_per_h={
            k: (wire[f"{k}_bytes_out"] + wire[f"{k}_bytes_in"]) / hours if hours else 0.0
            for k in ("maintenance", "serving", "bundle", "other_item")
        },
        raw=dict(wire),
    )
    return out


def _per(a: dict[str, int], per: float, minus: dict[str, int] | None = None) -> dict[str, float]:
    return {k: (v - (minus[k] if minus else 0)) / per for k, v in a.items()}


def _head_seen(world: Any, sender: Any, recipient: Any) -> dict[str, int] | None:
    """The head of sender -> recipient as a random node's lookup finds it now."""
    from btchat.dht.node import OperationDone
    from btchat.identity.rendezvous import pairwise_secret
    from btchat.offline import packet as pkt
    from btchat.offline.mailbox import day_of

    secret = pairwise_secret(sender.identity, recipient.pk)
    slot = pkt.head_slot(secret, sender.pk, recipient.pk, day_of(world.now))
    addr = world.rng.choice(world.swarm.online())
    outcome, _, _ = world.swarm.run_op(
        addr, lambda node, now: node.get_mutable(slot.public_key, now)
    )
    value = outcome.result.value if isinstance(outcome, OperationDone) else None
    if value is None:
        return None
    head = pkt.Head.from_payload(pkt.open_item(slot, value))
    return {
        "lo": head.lo,
        "hi": head.hi,
        "sender_next_out": sender.state.peer(recipient.pk).next_out,
    }


def _offline_traffic(nodes: int) -> dict[str, Any]:
    from btchat.sim.dht_swarm import SimSwarm
    from btchat.sim.offline_world import LONG_RUN_CONFIG, OfflineWorld

    t_all = time.perf_counter()
    swarm = SimSwarm(nodes, seed=4, config=LONG_RUN_CONFIG)
    build_s = time.perf_counter() - t_all
    root = Path(tempfile.mkdtemp(prefix="btchat-bench-traffic-"))
    world = OfflineWorld(swarm, root)
    try:
        pairs: dict[str, tuple[Any, Any, int, bool]] = {}
        for name, k, back in PAIRS + BACK_PAIRS:
            s, r = world.add_user(f"{name}-s"), world.add_user(f"{name}-r")
            world.befriend(s, r)
            pairs[name] = (s, r, k, back)
        world.settle()
        for _, r, _, _ in pairs.values():
            world.go_offline(r)
        wire = _Wire(world.users)
        swarm.net.tracer = wire
        t_send = world.now
        ops0 = {u.name: Counter(u.traffic) for u in world.users}
        for s, r, k, _ in pairs.values():
            for j in range(k):
                world.send(s, r, f"offline message {j}")
        world.settle()
        head_after_burst = _head_seen(world, *pairs["ten"][:2])

        # Half way: the "back" senders vanish, their recipients come back and fetch.
        world.run_for(t_send + RETURN_AFTER_H * 3600 - world.now)
        back = {n: p for n, p in pairs.items() if p[3]}
        fetch0 = {}
        for s, _, _, _ in back.values():
            world.go_offline(s)
        for name, (_, r, _, _) in back.items():
            fetch0[name] = (wire.snapshot(r.name), Counter(r.traffic))
            world.go_online(r)
        t_back = world.now
        shown_at: dict[str, float] = {}
        done_at: dict[str, float] = {}  # shown, and its acknowledging head put
        while world.now < t_back + 600 and len(done_at) < len(back):
            world.run_for(1.0)
            for name, (_, r, k, _) in back.items():
                if len(r.delivered) >= k:
                    shown_at.setdefault(name, world.now)
                    if not r.ops:
                        done_at.setdefault(name, world.now)
        fetch = {}
        for name, (_, r, k, _) in back.items():
            w0, o0 = fetch0[name]
            cost = _cost(wire.snapshot(r.name) - w0, Counter(r.traffic) - o0, 1.0)
            cost.pop("node_bytes_per_h")
            cost["messages"] = k
            cost["delivered"] = len(r.delivered)
            cost["shown_s"] = shown_at.get(name, world.now) - t_back
            cost["settled_s"] = done_at.get(name, world.now) - t_back
            raw = cost["raw"]
            cost["join_bytes"] = raw["maintenance_bytes_out"] + raw["maintenance_bytes_in"]
            fetch[name] = cost

        world.run_for(t_send + RETENTION_H * 3600 + 20 * 60 - world.now)
        hours = (world.now - t_send) / 3600
        senders = {}
        for name, (s, _, k, back_) in pairs.items():
            if back_:
                continue
            cost = _cost(wire.snapshot(s.name), Counter(s.traffic) - ops0[s.name], hours)
            cost["messages"] = k
            cost["outcomes"] = Counter(state for state, _ in s.outcomes)
            senders[name] = cost
    finally:
        for user in world.users:
            user.store.close()
        shutil.rmtree(root, ignore_errors=True)
    idle, one, ten = senders["idle"], senders["one"], senders["ten"]
    return {
        "nodes": nodes,
        "retention_h": RETENTION_H,
        "window_h": hours,
        "senders": senders,
        "per_message_1": _per(one["publish"], 1),
        "per_message_10": _per(ten["publish"], 10),
        "marginal_message": _per(ten["publish"], 9, one["publish"]),
        "polling_per_contact": idle["poll"],
        "fetch": fetch,
        "head_after_burst": head_after_burst,
        "build_wall_s": build_s,
        "wall_s": time.perf_counter() - t_all,
        "sim_stats": swarm.net.stats.as_dict(),
    }


def offline_traffic(quick: bool = False) -> dict[str, Any]:
    return _offline_traffic(TRAFFIC_NODES_QUICK if quick else TRAFFIC_NODES)


if __name__ == "__main__":
    import sys

    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    quick = "--quick" in sys.argv
    for name, fn in (("offline_traffic", offline_traffic), ("pending_delivery", pending_delivery)):
        if which in ("all", name):
            print(name, json.dumps(fn(quick), indent=1, default=str)[:6000])
