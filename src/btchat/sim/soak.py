"""A soak in virtual time: users chatting and going away for days on a churning swarm.

:class:`Soak` plans a run from a seed (who is whose contact, with what retention, when
each user is away and when each message is sent), drives an
:class:`~btchat.sim.offline_world.OfflineWorld` (the daemon's real message path,
mailbox, courier and DHT node cores) through it while part of the swarm is replaced
every few hours, and at the end judges every message against what retention promised:
one that could be fetched before it expired arrives exactly once; one whose recipient
was away for its whole retention is reported expired to its sender and never shown.
Each simulated day it samples the structures that must stay bounded (routing tables,
item stores, rate limiters, mailbox and store rows) so a slope can show they are flat.
``python -m bench.soak`` runs it at scale; ``tests/test_soak.py`` runs a CI-sized one.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btchat.identity.keys import Identity
from btchat.offline.mailbox import EXPIRY_GRACE_MS, MailboxConfig
from btchat.sim.dht_swarm import SimSwarm
from btchat.sim.offline_world import LONG_RUN_CONFIG, OfflineWorld, SimUser

__all__ = ["Message", "Soak", "SoakConfig", "Verdict", "slope"]

HOUR = 3600.0
DAY = 86400.0
#: Both ends online together for a poll period plus this margin, starting at least
#: that long before expiry, is what "retention covered the absence" means (a sender
#: republishes and a recipient polls as each comes up, then every period).
OVERLAP_MARGIN = 30 * 60
#: Rows of a user's store that grow with history by design (not checked for flatness).
HISTORY_TABLES = ("messages",)
#: Rows that must stay bounded whatever the run's length.
BOUNDED_TABLES = ("outbox", "seen", "mailbox_out", "mailbox_in", "held", "olm_sessions")


@dataclass(frozen=True)
class SoakConfig:
    nodes: int = 5000
    users: int = 200
    days: float = 14.0
    seed: int = 1
    #: Each user has at least this many contacts (a ring plus random friends).
    contacts: int = 3
    #: Fraction of contact pairs that hold a live session whenever both are online
    #: (the rest only ever meet through the mailbox), so friend backup takes part.
    linked: float = 0.25
    messages_per_day: float = 4.0
    churn_every: float = 6 * HOUR
    churn: float = 0.05
    #: A sender's retention for a contact, drawn per direction.
    retentions: tuple[int, ...] = (int(DAY), int(2 * DAY), int(4 * DAY))
    #: Everyone is online for the last part of the run, so whatever is still in
    #: retention then is delivered and every report has reached its sender.
    tail: float = 6 * HOUR
    tracemalloc: bool = False
    #: The DHT nodes' maintenance tick (one questionable node pinged per tick) and the
    #: mailbox's poll period. The defaults are the long-run node configuration and the
    #: daemon's; the CI-sized run takes longer ones, since pings cost most of its time.
    maintenance_interval: float = LONG_RUN_CONFIG.maintenance_interval
    poll_interval: float = MailboxConfig.poll_interval


@dataclass
class Message:
    key: str
    sender: SimUser
    recipient: SimUser
    id: bytes
    sent: float
    expires: float


@dataclass
class Verdict:
    """Every message judged; ``problems`` lists each broken promise, empty if none."""

    counts: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (0 for fewer than two points)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


class Soak:
    """One planned run; :meth:`run` carries it out, :meth:`judge` checks it."""

    def __init__(self, config: SoakConfig, data_dir: Path, *, log: Callable[[str], None] = print):
        self.config = config
        self.log = log
        self.rng = random.Random(config.seed)
        node_config = dataclasses.replace(
            LONG_RUN_CONFIG, maintenance_interval=config.maintenance_interval
        )
        self.swarm = SimSwarm(config.nodes, seed=config.seed, config=node_config)
        self.world = OfflineWorld(
            self.swarm, data_dir, MailboxConfig(poll_interval=config.poll_interval)
        )
        self.world.rng = random.Random(config.seed + 1)
        self.users = [
            self.world.add_user(f"u{i:03d}", Identity.from_seed(self.rng.randbytes(32)))
            for i in range(config.users)
        ]
        self.pairs = self._befriend()
        self.messages: list[Message] = []
        self._undeposited: list[Message] = []  # sent to the mailbox, expiry not yet known
        #: Per user, the (start, end) of each stretch it was online.
        self.online: dict[str, list[list[float]]] = {}
        self.samples: list[dict[str, Any]] = []
        self.churns = 0
        self._wall0 = time.perf_counter()
        self.t0 = 0.0
        self.end = 0.0

    # ---------------------------------------------------------------- planning

    def _befriend(self) -> list[tuple[SimUser, SimUser]]:
        n = len(self.users)
        edges: set[tuple[int, int]] = set()
        if n > 1:
            edges |= {(min(i, (i + 1) % n), max(i, (i + 1) % n)) for i in range(n)}
        degree = Counter(i for e in edges for i in e)
        for i in range(n):
            while degree[i] < min(self.config.contacts, n - 1):
                j = self.rng.randrange(n)
                e = (min(i, j), max(i, j))
                if i != j and e not in edges:
                    edges.add(e)
                    degree[i] += 1
                    degree[j] += 1
        pairs = []
        for i, j in sorted(edges):
            a, b = self.users[i], self.users[j]
            self.world.befriend(a, b)
            if self.rng.random() < self.config.linked:
                self.world.link(a, b)
            for x, y in ((a, b), (b, a)):
                x.state.set_retention(y.pk, self.rng.choice(self.config.retentions))
            pairs.append((a, b))
        return pairs

    def _absences(self, start: float, stop: float) -> list[tuple[float, float]]:
        """Offline stretches for one user: mostly hours, some a day or so, a few days."""
        out = []
        t = start + self.rng.uniform(0, 6 * HOUR)
        while t < stop:
            r = self.rng.random()
            if r < 0.6:
                away = self.rng.uniform(1 * HOUR, 12 * HOUR)
            elif r < 0.9:
                away = self.rng.uniform(12 * HOUR, 1.5 * DAY)
            else:
                away = self.rng.uniform(2 * DAY, 5 * DAY)
            back = min(t + away, stop)
            out.append((t, back))
            t = back + self.rng.uniform(1 * HOUR, 10 * HOUR)
        return out

    def _send_times(self, start: float, stop: float) -> list[float]:
        """Poisson arrivals, thinned at night (a daily pattern: 08:00-22:00 busiest)."""
        rate = self.config.messages_per_day / DAY * 2.0  # thinning keeps about half
        out = []
        t = start
        while True:
            t += self.rng.expovariate(rate)
            if t >= stop:
                return out
            hour = (t % DAY) / HOUR
            if self.rng.random() < (0.85 if 8 <= hour < 22 else 0.15):
                out.append(t)

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        cfg = self.config
        world = self.world
        if cfg.tracemalloc:
            tracemalloc.start()
        world.settle()
        # Warm-up with everyone online: one message to each contact, so each pair's
        # prekeys are known before anyone goes away (as after a first conversation).
        for a, b in self.pairs:
            self._send(a, b)
            self._send(b, a)
        world.settle()
        world.run_for(HOUR)
        self.t0 = world.now
        self.end = self.t0 + cfg.days * DAY
        quiet = self.end - cfg.tail
        for u in self.users:
            self.online[u.name] = [[self.t0, math.inf]]
        events: list[tuple[float, int, str, Any]] = []
        seq = itertools.count()
        for u in self.users:
            for away, back in self._absences(self.t0, quiet):
                events.append((away, next(seq), "offline", u))
                events.append((back, next(seq), "online", u))
            for t in self._send_times(self.t0, quiet):
                events.append((t, next(seq), "send", u))
        t = self.t0 + cfg.churn_every
        while t < self.end:
            events.append((t, next(seq), "churn", None))
            t += cfg.churn_every
        for d in range(1, math.ceil(cfg.days) + 1):
            events.append((min(self.t0 + d * DAY, self.end), next(seq), "sample", d))
        heapq.heapify(events)
        self._sample(0)
        while events:
            when, _, kind, arg = heapq.heappop(events)
            if when > world.now:
                world.run_for(when - world.now)
                self._resolve()
            if kind == "offline" and arg.online:
                world.go_offline(arg)
                self.online[arg.name][-1][1] = world.now
            elif kind == "online" and not arg.online:
                world.go_online(arg)
                self.online[arg.name].append([world.now, math.inf])
            elif kind == "send" and arg.online:
                peer = self.rng.choice([p for p in self.users if p.pk in arg.contacts])
                self._send(arg, peer)
            elif kind == "churn":
                world.churn(cfg.churn)
                self.churns += 1
            elif kind == "sample":
                self._sample(arg)
        world.settle()
        for spans in self.online.values():
            if spans[-1][1] == math.inf:
                spans[-1][1] = world.now

    def _send(self, a: SimUser, b: SimUser) -> None:
        key = f"m{len(self.messages)}"
        msg_id = self.world.send(a, b, key)
        row = a.store.get_message(msg_id)
        assert row is not None
        sent = row.received_ms / 1000
        m = Message(key, a, b, msg_id, sent, sent + a.mailbox.retention_of(b.pk))
        self.messages.append(m)
        if self._state(m) == "pending":
            self._undeposited.append(m)
        self._resolve()

    def _resolve(self) -> None:
        """Take each deposited message's expiry from its mailbox packet: a deposit that
        waited for the contact's prekeys expires a retention after it was queued."""
        left = []
        for m in self._undeposited:
            out = next(
                (p for p in m.sender.state.pending(m.recipient.pk) if p.msg_id == m.id), None
            )
            if out is not None:
                m.expires = out.expires_ms / 1000
            elif self._state(m) == "pending":
                left.append(m)
        self._undeposited = left

    # ----------------------------------------------------------------- sampling

    def _sample(self, day: int) -> None:
        world = self.world
        nodes = [world.net.endpoint(a).node for a in self.swarm.online()]
        rows: Counter[str] = Counter()
        for u in self.users:
            for table in (*HISTORY_TABLES, *BOUNDED_TABLES):
                rows[table] += u.store.query(f"SELECT count(*) FROM {table}")[0][0]
        now = world.now
        states = Counter(self._state(m) for m in self.messages)
        # What should be pending in the mailboxes now: sent, not expired, not acknowledged.
        in_retention = sum(
            1 for m in self.messages if m.expires > now and self._state(m) == "pending"
        )
        sample: dict[str, Any] = {
            "day": day,
            "virtual_s": now - self.t0 if self.t0 else 0.0,
            "nodes_online": len(nodes),
            "nodes_attached": len(world.net.addresses()),
            "routing_entries": sum(len(t) for n in nodes for t in n.tables.values()),
            "dht_items": sum(len(n.items) for n in nodes),
            "dht_peers": sum(len(s) for n in nodes for s in n.peer_stores.values()),
            "dht_pending_rpcs": sum(len(n._pending) for n in nodes),
            "dht_timers": sum(len(n._timers) for n in nodes),
            "rate_limit_sources": sum(len(n.limiter._buckets) for n in nodes),
            "net_events_queued": world.net.pending_events,
            "messages_sent": len(self.messages),
            "states": dict(states),
            "pending_in_retention": in_retention,
            "rows": dict(rows),
            "users_online": sum(u.online for u in self.users),
        }
        if tracemalloc.is_tracing():
            sample["traced_bytes"] = tracemalloc.get_traced_memory()[0]
        sample["rss_bytes"] = _rss()
        sample["wall_s"] = time.perf_counter() - self._wall0
        self.samples.append(sample)
        self.log(
            f"day {day}: {len(self.messages)} sent, states {dict(states)}, "
            f"rows {dict(rows)}, routing {sample['routing_entries']}, "
            f"items {sample['dht_items']}, rss {sample['rss_bytes'] / 2**20:.0f} MiB, "
            f"wall {sample['wall_s']:.0f} s"
        )

    def _state(self, m: Message) -> str:
        row = m.sender.store.get_message(m.id)
        return row.state if row is not None else "missing"

    # ------------------------------------------------------------------ judging

    def covered(self, m: Message) -> bool:
        """Sender and recipient were online together long enough, early enough."""
        overlap = self.config.poll_interval + OVERLAP_MARGIN
        latest = m.expires - overlap
        for a0, a1 in self.online[m.sender.name]:
            for b0, b1 in self.online[m.recipient.name]:
                start, stop = max(a0, b0, m.sent), min(a1, b1)
                if start <= latest and stop - start >= overlap:
                    return True
        return False

    def absent_throughout(self, m: Message) -> bool:
        """The recipient was offline from the send until the packet could not be taken."""
        stop = m.expires + EXPIRY_GRACE_MS / 1000
        return not any(b0 < stop and b1 > m.sent for b0, b1 in self.online[m.recipient.name])

    def _spans(self, user: SimUser) -> list[tuple[int, int]]:
        return [(round(a - self.t0), round(b - self.t0)) for a, b in self.online[user.name]]

    def judge(self) -> Verdict:
        v = Verdict()
        for m in self.messages:
            got = sum(1 for e in m.recipient.delivered if e.id == m.id)
            stored = m.recipient.store.get_message(m.id) is not None
            state = self._state(m)
            told = sum(1 for s, ids in m.sender.outcomes if s == "failed" and m.id in ids)
            covered, absent = self.covered(m), self.absent_throughout(m)
            kind = "covered" if covered else "expired_by_design" if absent else "either"
            v.counts[kind] += 1
            v.counts[f"{kind}_delivered"] += got >= 1
            v.counts[f"sender_{state}"] += 1
            what = f"{m.key} {m.sender.name}->{m.recipient.name} sent at +{m.sent - self.t0:.0f}s"
            if got > 1:
                v.problems.append(f"duplicate ({got}x): {what}")
            if got != stored:
                v.problems.append(f"shown {got}x but stored={stored}: {what}")
            if covered and got == 0:
                v.problems.append(f"lost (retention covered it): {what}, sender state {state}")
            if absent and got:
                # Replayed over a live session that came up before the sender's mailbox
                # expired it (the sender was away past the expiry too): delivered, and
                # the sender says so; the offline mailbox itself refuses it by then.
                v.counts["delivered_after_retention"] += 1
            if got == 0 and (state != "failed" or told != 1):
                v.problems.append(f"not delivered, sender told {told}x, state {state}: {what}")
            if got and (state == "failed" or told):
                row = m.recipient.store.get_message(m.id)
                at = (row.received_ms / 1000 - self.t0) if row is not None else math.nan
                v.problems.append(
                    f"delivered but its sender was told it expired: {what}, expired "
                    f"+{m.expires - self.t0:.0f}s, stored +{at:.0f}s, sender online "
                    f"{self._spans(m.sender)}, recipient online {self._spans(m.recipient)}"
                )
            if got and state == "pending":
                v.counts["delivered_sender_still_pending"] += 1
        return v

    def flatness(self, from_day: int = 2) -> dict[str, dict[str, float]]:
        """Per bounded figure: its slope per day from ``from_day`` on, and that slope
        as a fraction of the mean (``rel``), e.g. 0.01 = grows 1% of its size a day."""
        picked = [s for s in self.samples if s["day"] >= from_day]
        xs = [s["virtual_s"] / DAY for s in picked]
        series: dict[str, list[float]] = {}
        for key in (
            "routing_entries",
            "dht_items",
            "dht_peers",
            "dht_pending_rpcs",
            "rate_limit_sources",
            "net_events_queued",
            "nodes_attached",
            "pending_in_retention",
            "traced_bytes",
            "rss_bytes",
        ):
            if all(key in s for s in picked):
                series[key] = [float(s[key]) for s in picked]
        for table in BOUNDED_TABLES + HISTORY_TABLES:
            series[f"rows_{table}"] = [float(s["rows"].get(table, 0)) for s in picked]
        series["mailbox_out_minus_pending"] = [
            float(s["rows"].get("mailbox_out", 0) - s["pending_in_retention"]) for s in picked
        ]
        out = {}
        for key, ys in series.items():
            k = slope(xs, ys)
            mean = sum(ys) / len(ys) if ys else 0.0
            out[key] = {"slope_per_day": k, "mean": mean, "rel": k / mean if mean else 0.0}
        return out

    def close(self) -> None:
        for u in self.users:
            u.store.close()
        if tracemalloc.is_tracing():
            tracemalloc.stop()


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096
    except OSError:
        return 0
