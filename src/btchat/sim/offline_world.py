"""Messenger users with offline mailboxes on a simulated DHT swarm, in virtual time.

Each :class:`SimUser` has the real pieces of a daemon's offline path (message store,
ratchet, :class:`~btchat.offline.mailbox.Mailbox`, inbox handling) and its own DHT node
in a :class:`~btchat.sim.dht_swarm.SimSwarm`; the world carries out the mailbox's DHT
requests on that node and advances the clock. A live session between two users is
modelled by handing the backup bodies directly to the other user's mailbox, as the
daemon does when such an envelope arrives. Days of virtual time run in about a minute.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btchat.dht.node import DhtNode, NodeConfig, OperationDone
from btchat.identity.keys import Identity
from btchat.messaging import envelope as env_mod
from btchat.messaging.store import Store
from btchat.offline.inbox import apply_outcome, drain_inbox
from btchat.offline.mailbox import Event, Get, Mailbox, MailboxConfig, Put, Received
from btchat.offline.ratchet import Ratchet
from btchat.offline.state import MailboxState
from btchat.sim.dht_swarm import SimDht, SimSwarm

__all__ = ["LONG_RUN_CONFIG", "OfflineWorld", "SimUser"]

#: DHT nodes for multi-day runs: BEP 5 behaviour, but buckets refreshed every 4 h and
#: one questionable node pinged per minute, so idle days cost seconds to simulate. Item
#: expiry stays at two hours, so republishing is exercised as on the real network.
LONG_RUN_CONFIG = NodeConfig(
    maintenance_interval=60.0, max_maintenance_pings=1, refresh_interval=4 * 3600.0
)


@dataclass
class SimUser:
    name: str
    identity: Identity
    store: Store
    state: MailboxState
    mailbox: Mailbox
    addr: Any
    online: bool = True
    contacts: list[bytes] = field(default_factory=list)
    delivered: list[env_mod.Envelope] = field(default_factory=list)
    outcomes: list[tuple[str, tuple[bytes, ...]]] = field(default_factory=list)
    ops: dict[int, tuple[str, int]] = field(default_factory=dict)
    traffic: Counter[str] = field(default_factory=Counter)

    @property
    def pk(self) -> bytes:
        return self.identity.public_key


class OfflineWorld:
    def __init__(
        self, swarm: SimSwarm, data_dir: Path, config: MailboxConfig | None = None
    ) -> None:
        self.swarm = swarm
        self.net = swarm.net
        self.data_dir = data_dir
        self.config = config or MailboxConfig()
        self.users: list[SimUser] = []
        self.links: set[frozenset[bytes]] = set()
        self.rng = random.Random(7)

    @property
    def now(self) -> float:
        return self.net.now

    def add_user(self, name: str) -> SimUser:
        identity = Identity.generate()
        store = Store.open(self.data_dir / f"{name}.db", None)
        state = MailboxState(store)
        mailbox = Mailbox(identity, state, Ratchet(identity, state), self.config)
        (addr,) = self.swarm.add_nodes(1)
        user = SimUser(name, identity, store, state, mailbox, addr)
        self.users.append(user)
        self._publish_bundle(user)
        return user

    def befriend(self, a: SimUser, b: SimUser) -> None:
        for x, y in ((a, b), (b, a)):
            x.store.add_contact(y.pk, y.name, int(self.now * 1000))
            x.contacts.append(y.pk)

    def link(self, a: SimUser, b: SimUser) -> None:
        """A and B can hold a live session whenever both are online."""
        self.links.add(frozenset((a.pk, b.pk)))

    # ----------------------------------------------------------------- actions

    def send(self, a: SimUser, b: SimUser, text: str) -> bytes:
        """What the daemon does for a message to a contact with no session: persist the
        signed envelope, then deposit it in the mailbox."""
        envelope = env_mod.create(
            a.identity,
            os.urandom(16),
            b.pk,
            env_mod.TEXT,
            env_mod.text_body(text),
            lamport=a.store.next_lamport(b.pk, None),
            now=self.now,
        )
        a.store.save_outgoing(envelope, self.now)
        a.mailbox.deposit(b.pk, envelope.id, env_mod.encode_envelope(envelope), self.now)
        self._drive(a)
        self._sessions_changed(a)
        return envelope.id

    def churn(self, fraction: float) -> None:
        """Replace ``fraction`` of the swarm's other nodes: they vanish, newcomers join.

        Unlike :meth:`SimSwarm.churn` this never takes a user's own node away (a user
        goes offline only through :meth:`go_offline`, which the world keeps track of).
        """
        users = {u.addr for u in self.users}
        others = [a for a in self.swarm.online() if a not in users]
        gone = self.swarm.rng.sample(others, int(len(others) * fraction))
        for addr in gone:
            self.net.detach(addr)
        self.swarm.add_nodes(len(gone))

    def go_offline(self, user: SimUser) -> None:
        user.online = False
        user.ops.clear()
        self.net.detach(user.addr)

    def go_online(self, user: SimUser) -> None:
        """A restart: a fresh DHT node core at the same address, state from the store."""
        node = DhtNode(self.swarm.config, rng=random.Random(self.rng.getrandbits(64)), now=self.now)
        self.net.reattach(user.addr, SimDht(node))
        wrapper = self.net.endpoint(user.addr)
        seeds = self.rng.sample(self.swarm.online(), 3)
        wrapper.start(node.bootstrap(seeds, self.now), self.now)
        self.net.poke(user.addr)
        self.net.run_for(5.0)
        user.online = True
        state = MailboxState(user.store)
        user.mailbox = Mailbox(user.identity, state, Ratchet(user.identity, state), self.config)
        self._publish_bundle(user)
        self._deliver(user)  # anything decrypted before a crash
        self._sessions_changed(user)

    # --------------------------------------------------------------- the loop

    def run_for(self, seconds: float, *, step: float = 1.0) -> None:
        end = self.now + seconds
        while self.now < end:
            busy = False
            for user in self.users:
                if not user.online:
                    continue
                if self.now >= user.mailbox.next_deadline():
                    user.mailbox.tick(self.now, user.contacts)
                self._drive(user)
                busy = busy or bool(user.ops)
            if busy:
                self.net.run_for(min(step, end - self.now))
                for user in self.users:
                    self._collect(user)
            else:
                deadlines = [u.mailbox.next_deadline() for u in self.users if u.online]
                self.net.run_until(min([end, *deadlines]) if deadlines else end)

    def settle(self, timeout: float = 300.0) -> None:
        """Run until no user has DHT work outstanding."""
        end = self.now + timeout
        while self.now < end and any(u.ops for u in self.users if u.online):
            self.run_for(1.0)

    def _publish_bundle(self, user: SimUser) -> None:
        item = user.mailbox.bundle_item(self.now)
        self._start(user, "bundle", 0, lambda node, now: node.put_mutable(item, now))

    def _start(self, user: SimUser, kind: str, token: int, start: Any) -> None:
        wrapper = self.net.endpoint(user.addr)
        op_id = wrapper.start(start(wrapper.node, self.now), self.now)
        user.ops[op_id] = (kind, token)
        self.net.poke(user.addr)

    def _drive(self, user: SimUser) -> None:
        for request in user.mailbox.take_requests(self.now):
            if isinstance(request, Get):
                user.traffic["gets"] += 1
                self._start(
                    user,
                    "get",
                    request.token,
                    lambda node, now, r=request: node.get_mutable(r.public_key, now, salt=r.salt),
                )
            elif isinstance(request, Put):
                user.traffic["puts"] += 1
                self._start(
                    user,
                    "put",
                    request.token,
                    lambda node, now, r=request: node.put_mutable(r.item, now),
                )
        self._handle(user, user.mailbox.take_events())

    def _collect(self, user: SimUser) -> None:
        if not user.online:
            return
        wrapper: SimDht = self.net.endpoint(user.addr)
        for op_id in [o for o in user.ops if o in wrapper.outcomes]:
            kind, token = user.ops.pop(op_id)
            outcome = wrapper.outcomes.pop(op_id)
            result = outcome.result if isinstance(outcome, OperationDone) else None
            user.traffic["rpcs"] += getattr(result, "queries", 0) or 0
            if kind == "get":
                value = getattr(result, "value", None)
                deposited = user.mailbox.stats["deposited"]
                user.mailbox.on_get(token, value, self.now)
                if user.mailbox.stats["deposited"] != deposited:
                    # A deposit that waited for the contact's prekeys is queued only now:
                    # hand it to online friends as send() does for an immediate one.
                    self._sessions_changed(user)
            elif kind == "put":
                user.mailbox.on_put(token, result is not None)
            self._drive(user)

    def _handle(self, user: SimUser, events: list[Event]) -> None:
        for event in events:
            state = apply_outcome(user.store, event)
            if state is not None:
                user.outcomes.append((state, event.msg_ids))  # type: ignore[union-attr]
            elif isinstance(event, Received):
                self._deliver(user)
            else:
                user.outcomes.append((type(event).__name__, ()))

    def _deliver(self, user: SimUser) -> None:
        for envelope, fresh in drain_inbox(user.state, user.store, user.pk, self.now):
            if fresh:
                user.delivered.append(envelope)

    def _sessions_changed(self, user: SimUser) -> None:
        """Exchange backups over every live session of ``user``, as the daemon does."""
        for other in self.users:
            if other is user or not (user.online and other.online):
                continue
            if frozenset((user.pk, other.pk)) not in self.links:
                continue
            for giver, holder in ((user, other), (other, user)):
                packets = giver.mailbox.backup_for(holder.pk, self.now)
                if packets:
                    holder.mailbox.accept_hold(giver.pk, packets, set(holder.contacts), self.now)
                held = giver.mailbox.held_for(holder.pk)
                if held:
                    release = holder.mailbox.take_held(giver.pk, held, self.now)
                    giver.mailbox.release_held(holder.pk, release)
                    self._handle(holder, holder.mailbox.take_events())
