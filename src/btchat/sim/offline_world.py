"""Messenger users with offline mailboxes on a simulated DHT swarm, in virtual time.

Each :class:`SimUser` has the real pieces of a daemon's message path (message store,
the :class:`~btchat.messaging.conversation.Conversations` core, ratchet,
:class:`~btchat.offline.mailbox.Mailbox`, :class:`~btchat.offline.courier.Courier`,
inbox handling) and its own DHT node in a :class:`~btchat.sim.dht_swarm.SimSwarm`; the
world carries out the mailbox's DHT requests on that node and advances the clock. A
live session between two linked users that are both online is modelled by handing one
core's :class:`~btchat.messaging.conversation.Transmit` bytes to the other's
``receive``, so friend backup takes the daemon's own path. Days of virtual time run in
about a minute.
"""

from __future__ import annotations

import functools
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btchat.dht.node import DhtNode, NodeConfig, OperationDone
from btchat.identity.keys import Identity
from btchat.messaging import conversation as conv
from btchat.messaging import envelope as env_mod
from btchat.messaging.conversation import Conversations
from btchat.messaging.store import Store
from btchat.offline.courier import BACKUP_TYPES, Courier
from btchat.offline.inbox import apply_outcome, drain_inbox
from btchat.offline.mailbox import Get, Mailbox, MailboxConfig, Outcome, Put, Received
from btchat.offline.ratchet import Ratchet
from btchat.offline.state import MailboxState
from btchat.sansio import drain_events
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
    addr: Any
    state: MailboxState = field(init=False)
    mailbox: Mailbox = field(init=False)
    courier: Courier = field(init=False)
    conversations: Conversations = field(init=False)
    online: bool = True
    contacts: list[bytes] = field(default_factory=list)
    delivered: list[env_mod.Envelope] = field(default_factory=list)
    outcomes: list[tuple[str, tuple[bytes, ...]]] = field(default_factory=list)
    ops: dict[int, tuple[str, int]] = field(default_factory=dict)
    traffic: Counter[str] = field(default_factory=Counter)
    device: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def pk(self) -> bytes:
        return self.identity.public_key

    def restart(self, config: MailboxConfig) -> None:
        """Fresh cores over the same store, as a restarted daemon builds them."""
        self.state = MailboxState(self.store)
        self.mailbox = Mailbox(
            self.identity, self.state, Ratchet(self.identity, self.state), config
        )
        self.courier = Courier(self.mailbox)
        self.conversations = Conversations(self.identity, self.device, self.store)


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
        self.sessions: set[frozenset[bytes]] = set()  # live sessions (linked, both online)
        self.rng = random.Random(7)

    @property
    def now(self) -> float:
        return self.net.now

    def add_user(self, name: str, identity: Identity | None = None) -> SimUser:
        identity = identity or Identity.generate()
        store = Store.open(self.data_dir / f"{name}.db", None)
        (addr,) = self.swarm.add_nodes(1)
        user = SimUser(name, identity, store, addr)
        user.restart(self.config)
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
        """What the daemon does for a message: the conversation core persists the signed
        envelope, then sends it over a live session or has it deposited in the mailbox."""
        envelope = a.conversations.send_text(b.pk, text, self.now)
        self._converse()
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
            self.net.forget(addr)  # gone for good: not kept in memory through a long run
            self.swarm.addrs.pop(addr, None)
        left = set(gone)
        self.swarm.members = [a for a in self.swarm.members if a not in left]
        self.swarm.add_nodes(len(gone))

    def go_offline(self, user: SimUser) -> None:
        user.online = False
        user.ops.clear()
        self.net.detach(user.addr)
        for other in self.users:
            pair = frozenset((user.pk, other.pk))
            if pair in self.sessions:
                self.sessions.discard(pair)
                other.conversations.session_down(user.pk, self.now)

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
        user.restart(self.config)
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
                timer = user.mailbox.get_timer()
                if timer is not None and self.now >= timer:
                    user.mailbox.set_contacts(user.contacts)
                    user.mailbox.handle_timer(self.now)
                self._drive(user)
                busy = busy or bool(user.ops)
            if busy:
                self.net.run_for(min(step, end - self.now))
                for user in self.users:
                    self._collect(user)
            else:
                deadlines = [u.mailbox.get_timer() or end for u in self.users if u.online]
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
        """Start the mailbox's DHT requests on the user's node; handle its outcomes."""
        for event in drain_events(user.mailbox):
            if isinstance(event, Get | Put):
                kind = "get" if isinstance(event, Get) else "put"
                user.traffic[f"{kind}s"] += 1
                self._start(user, kind, event.token, functools.partial(_dht_operation, event))
            else:
                self._handle(user, event)

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

    def _handle(self, user: SimUser, event: Outcome) -> None:
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

    # ----------------------------------------------------------- live sessions

    def _sessions_changed(self, user: SimUser) -> None:
        """Open the sessions ``user`` can hold now, and hand backups over the live ones,
        as the daemon does when a session comes up or a deposit is queued."""
        for other in self.users:
            if other is user or not (user.online and other.online):
                continue
            pair = frozenset((user.pk, other.pk))
            if pair not in self.links:
                continue
            fresh = pair not in self.sessions
            if fresh:
                self.sessions.add(pair)
                user.conversations.session_up(other.pk, self.now)
                other.conversations.session_up(user.pk, self.now)
            for giver, holder in ((user, other), (other, user)):
                if fresh:
                    bodies = giver.courier.session_up(holder.pk, self.now)
                else:
                    bodies = giver.courier.backups_for(holder.pk, self.now)
                for kind, body in bodies:
                    giver.conversations.send_body(holder.pk, kind, body, self.now)
            self._converse()

    def _by_pk(self, pk: bytes) -> SimUser:
        return next(u for u in self.users if u.pk == pk)

    def _converse(self) -> None:
        """Carry out what every user's conversation core asks until all are quiet."""
        busy = True
        while busy:
            busy = False
            for user in self.users:
                for event in drain_events(user.conversations):
                    busy = True
                    self._on_conversation(user, event)

    def _on_conversation(self, user: SimUser, event: conv.Event) -> None:
        if isinstance(event, conv.Transmit):
            other = self._by_pk(event.peer)
            if frozenset((user.pk, other.pk)) in self.sessions:
                other.conversations.receive(user.pk, user.device, event.data, self.now)
        elif isinstance(event, conv.ReceiptReceived):
            user.mailbox.acknowledged(list(event.ids))  # as the daemon's chat shell does
        elif isinstance(event, conv.MessageStored) and event.envelope.sender != user.pk:
            user.delivered.append(event.envelope)  # a new message that came by session
        elif isinstance(event, conv.Deposit):
            user.mailbox.deposit(event.peer, event.envelope.id, event.data, self.now)
            self._drive(user)
        elif isinstance(event, conv.Unhandled) and event.envelope.type in BACKUP_TYPES:
            envelope = event.envelope
            replies = user.courier.on_envelope(
                event.peer, envelope.type, envelope.body, set(user.contacts), self.now
            )
            self._drive(user)  # what a friend held for us is stored before we release it
            for kind, body in replies:
                user.conversations.send_body(event.peer, kind, body, self.now)


def _dht_operation(request: Get | Put, node: DhtNode, now: float) -> int:
    """Start on ``node`` the DHT operation a mailbox request asks for; its op id."""
    if isinstance(request, Get):
        return node.get_mutable(request.public_key, now, salt=request.salt)
    return node.put_mutable(request.item, now)
