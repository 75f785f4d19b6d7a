"""Offline delivery over days on a simulated swarm of real DHT nodes, with churn.

One three-day run of an :class:`OfflineWorld` on 200 nodes (5% of them replaced every
six simulated hours) carries every scenario, because simulating the swarm is what
costs time; each test below checks one scenario from what the run recorded.

Timeline (``t0`` is when the first messages are sent):

* t0: Bob, Dave, Frank and Hank go offline. Alice writes three messages to Bob
  (retention 4 days) and one to Dave (retention 1 day). Erin writes two to Frank,
  they are handed to Carol (a friend of both), and Erin goes offline for good. Gina
  writes three to Hank.
* t0 + 4 h: Frank comes back (the DHT has forgotten Erin's items) and gets Erin's
  messages from Carol. Hank comes back, gets Gina's, and answers once.
* t0 + 5 h: Gina goes offline; Hank writes twice more. t0 + 8 h: Gina comes back,
  gets them, answers.
* t0 + 1 day: Alice's message to Dave expires; she is told once a look at Dave's
  head after the grace found no acknowledgement.
* t0 + 3 days: Bob and Dave come back. Bob gets his three messages, Dave nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from btchat.messaging import envelope as env_mod
from btchat.sim.dht_swarm import SimSwarm
from btchat.sim.offline_world import LONG_RUN_CONFIG, OfflineWorld, SimUser

pytestmark = pytest.mark.slow

HOUR = 3600.0
DAY = 86400.0
CHURN_EVERY = 6 * HOUR
CHURN = 0.05


@dataclass
class Run:
    world: OfflineWorld
    users: dict[str, SimUser]
    ids: dict[str, bytes] = field(default_factory=dict)
    t0: float = 0.0
    churns: int = 0
    replaced: int = 0
    seen: dict[str, Any] = field(default_factory=dict)
    _next_churn: float = 0.0

    def run_until(self, when: float) -> None:
        """Run the world to ``when``, replacing part of the swarm every CHURN_EVERY."""
        while self.world.now < when:
            self.world.run_for(min(when, self._next_churn) - self.world.now)
            if self.world.now >= self._next_churn:
                before = set(self.world.swarm.online())
                self.world.churn(CHURN)
                self.churns += 1
                self.replaced += len(before - set(self.world.swarm.online()))
                self._next_churn += CHURN_EVERY

    def send(self, key: str, a: str, b: str) -> None:
        self.ids[key] = self.world.send(self.users[a], self.users[b], key)


def texts(user: SimUser) -> list[str]:
    return [env_mod.decode_text(e) for e in user.delivered]


def history(user: SimUser, peer: SimUser) -> list[tuple[bytes, str | None]]:
    return [(m.id, m.text) for m in user.store.history(peer.pk, limit=100)]


def states(user: SimUser, ids: list[bytes]) -> list[str]:
    rows = [user.store.get_message(i) for i in ids]
    return [r.state if r is not None else "missing" for r in rows]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    swarm = SimSwarm(200, seed=3, config=LONG_RUN_CONFIG)
    world = OfflineWorld(swarm, Path(tmp_path_factory.mktemp("offline-world")))
    names = ("alice", "bob", "dave", "erin", "frank", "carol", "gina", "hank")
    users = {name: world.add_user(name) for name in names}
    u = users
    world.befriend(u["alice"], u["bob"])
    world.befriend(u["alice"], u["dave"])
    world.befriend(u["erin"], u["frank"])
    world.befriend(u["erin"], u["carol"])
    world.befriend(u["frank"], u["carol"])
    world.befriend(u["gina"], u["hank"])
    world.link(u["erin"], u["carol"])
    world.link(u["frank"], u["carol"])
    u["alice"].state.set_retention(u["bob"].pk, 4 * int(DAY))
    u["alice"].state.set_retention(u["dave"].pk, int(DAY))
    world.settle()
    world.run_for(60)
    r = Run(world, users)
    r.t0 = world.now
    r._next_churn = r.t0 + CHURN_EVERY

    for name in ("bob", "dave", "frank", "hank"):
        world.go_offline(u[name])
    for key in ("b1", "b2", "b3"):
        r.send(key, "alice", "bob")
    r.send("d1", "alice", "dave")
    r.send("e1", "erin", "frank")
    r.send("e2", "erin", "frank")
    for key in ("g1", "g2", "g3"):
        r.send(key, "gina", "hank")
    world.settle()
    r.seen["erin_pending"] = len(u["erin"].state.pending(u["frank"].pk))
    r.seen["carol_held_before"] = len(u["carol"].state.held_for(u["frank"].pk))
    world.go_offline(u["erin"])

    # --- t0 + 4 h: Frank (Erin's messages, via Carol) and Hank (Gina's) come back.
    r.run_until(r.t0 + 4 * HOUR)
    world.go_online(u["frank"])
    world.go_online(u["hank"])
    r.seen["frank_right_after"] = texts(u["frank"])
    r.run_until(r.t0 + 4.5 * HOUR)
    r.seen["frank_texts"] = texts(u["frank"])
    r.seen["frank_stats"] = dict(u["frank"].mailbox.stats)
    r.seen["carol_held_after"] = len(u["carol"].state.held_for(u["frank"].pk))
    r.seen["hank_texts_4h"] = texts(u["hank"])
    r.send("h1", "hank", "gina")
    r.run_until(r.t0 + 5 * HOUR)
    r.seen["gina_texts_5h"] = texts(u["gina"])
    r.seen["gina_states_5h"] = states(u["gina"], [r.ids[k] for k in ("g1", "g2", "g3")])

    # --- t0 + 5 h: Gina goes offline; Hank writes on.
    world.go_offline(u["gina"])
    r.send("h2", "hank", "gina")
    r.send("h3", "hank", "gina")
    r.run_until(r.t0 + 8 * HOUR)
    world.go_online(u["gina"])
    r.run_until(r.t0 + 8.5 * HOUR)
    r.send("g4", "gina", "hank")

    # --- t0 + 1 day: the message to Dave expires.
    sent_d1 = u["alice"].store.get_message(r.ids["d1"])
    assert sent_d1 is not None
    expiry = sent_d1.received_ms / 1000 + DAY
    r.run_until(expiry - 60)
    r.seen["d1_before_expiry"] = (
        states(u["alice"], [r.ids["d1"]]),
        list(u["alice"].outcomes),
    )
    r.run_until(expiry + 50 * 60)  # a head look after the grace found no ack
    r.seen["d1_after_expiry"] = (
        states(u["alice"], [r.ids["d1"]]),
        list(u["alice"].outcomes),
        [p.msg_id for p in u["alice"].state.pending(u["dave"].pk)],
    )

    # --- t0 + 3 days: Bob and Dave come back.
    r.run_until(r.t0 + 3 * DAY)
    r.seen["bob_before"] = texts(u["bob"])
    r.seen["alice_b_states_before"] = states(u["alice"], [r.ids[k] for k in ("b1", "b2", "b3")])
    world.go_online(u["bob"])
    world.go_online(u["dave"])
    r.run_until(r.t0 + 3 * DAY + HOUR)
    return r


def test_swarm_churned_while_running(run: Run) -> None:
    assert run.churns == 12
    assert run.replaced >= 12 * 9
    assert len(run.world.swarm.online()) >= 200
    # Every user's node survived the churn.
    for user in run.users.values():
        assert run.world.net.is_online(user.addr) == (user.name != "erin")


def test_message_to_a_contact_offline_for_three_days_arrives_once(run: Run) -> None:
    alice, bob = run.users["alice"], run.users["bob"]
    ids = [run.ids[k] for k in ("b1", "b2", "b3")]
    assert run.seen["bob_before"] == []
    assert run.seen["alice_b_states_before"] == ["pending"] * 3
    # Each once; arrival order may vary (chunks come in parallel), stored order does not.
    assert sorted(texts(bob)) == ["b1", "b2", "b3"]
    assert sorted(e.id for e in bob.delivered) == sorted(ids)
    assert bob.mailbox.stats["received"] == 3
    assert [m.id for m in bob.store.history(alice.pk)] == ids
    # The sender sees it delivered, told by Bob's head.
    assert states(alice, ids) == ["delivered"] * 3
    delivered = [i for state, batch in alice.outcomes if state == "delivered" for i in batch]
    assert sorted(delivered) == sorted(ids)
    assert alice.state.pending(bob.pk) == []
    assert alice.store.pending_outbox(bob.pk) == []


def test_message_past_its_retention_expires_and_the_sender_is_told(run: Run) -> None:
    alice, dave = run.users["alice"], run.users["dave"]
    d1 = run.ids["d1"]
    before_states, before_outcomes = run.seen["d1_before_expiry"]
    assert before_states == ["pending"]
    assert all(d1 not in ids for _, ids in before_outcomes)
    after_states, after_outcomes, still_pending = run.seen["d1_after_expiry"]
    assert after_states == ["failed"]
    assert [o for o in after_outcomes if d1 in o[1]] == [("failed", (d1,))]
    assert still_pending == []
    assert alice.mailbox.stats["expired"] == 1
    assert alice.store.pending_outbox(dave.pk) == []
    # Dave, back after three days, gets nothing, and it stays failed.
    assert dave.delivered == []
    assert dave.store.history(alice.pk) == []
    assert states(alice, [d1]) == ["failed"]


def test_mutual_friend_delivers_when_the_sender_is_gone(run: Run) -> None:
    erin, frank, carol = run.users["erin"], run.users["frank"], run.users["carol"]
    assert run.seen["erin_pending"] == 2
    assert run.seen["carol_held_before"] == 2
    # Handed over by Carol as soon as Frank came online, before any DHT poll.
    assert run.seen["frank_right_after"] == ["e1", "e2"]
    assert run.seen["frank_texts"] == ["e1", "e2"]
    stats = run.seen["frank_stats"]
    assert stats["received"] == 2
    assert stats.get("heads", 0) == 0  # Erin's head was gone from the DHT
    assert run.seen["carol_held_after"] == 0
    # Still exactly once at the end.
    assert texts(frank) == ["e1", "e2"]
    assert [m.id for m in frank.store.history(erin.pk)] == [run.ids["e1"], run.ids["e2"]]
    assert carol.state.held_for(frank.pk) == []
    assert not erin.online


def test_messages_sent_while_one_side_is_offline_keep_their_order(run: Run) -> None:
    gina, hank = run.users["gina"], run.users["hank"]
    order = ["g1", "g2", "g3", "h1", "h2", "h3", "g4"]
    assert sorted(run.seen["hank_texts_4h"]) == ["g1", "g2", "g3"]
    assert run.seen["gina_texts_5h"] == ["h1"]
    assert run.seen["gina_states_5h"] == ["delivered"] * 3
    assert sorted(texts(hank)) == ["g1", "g2", "g3", "g4"]
    assert sorted(texts(gina)) == ["h1", "h2", "h3"]
    expected = [(run.ids[k], k) for k in order]
    assert history(gina, hank) == expected
    assert history(hank, gina) == expected
    assert states(gina, [run.ids[k] for k in ("g1", "g2", "g3", "g4")]) == ["delivered"] * 4
    assert states(hank, [run.ids[k] for k in ("h1", "h2", "h3")]) == ["delivered"] * 3
