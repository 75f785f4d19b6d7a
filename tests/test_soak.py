"""The soak at CI size (issue 14): 200 DHT nodes with churn, 20 users, 3 simulated days.

The same :class:`~btchat.sim.soak.Soak` as ``python -m bench.soak``, with longer DHT
maintenance and mailbox poll periods so it fits CI. Every message is judged against
its retention (:meth:`Soak.judge`), and what must stay bounded is checked at the end.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from btchat.sim.soak import BOUNDED_TABLES, Soak, SoakConfig

pytestmark = pytest.mark.slow

CONFIG = SoakConfig(
    nodes=200,
    users=20,
    days=3.0,
    seed=5,
    contacts=2,
    maintenance_interval=1800.0,
    poll_interval=3600.0,
)


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Soak]:
    s = Soak(CONFIG, Path(tmp_path_factory.mktemp("soak")), log=lambda line: None)
    s.run()
    yield s
    s.close()


MISREPORT = "delivered but its sender was told it expired"


def test_no_message_is_lost_duplicated_or_left_unreported(soak: Soak) -> None:
    verdict = soak.judge()
    assert [p for p in verdict.problems if not p.startswith(MISREPORT)] == []
    # The run exercised both sides of the promise, and the swarm churned throughout.
    assert verdict.counts["covered"] > 50
    assert verdict.counts["expired_by_design"] >= 1
    assert verdict.counts["sender_failed"] >= 1
    assert soak.churns == 11  # every 6 h of the 72


@pytest.mark.xfail(
    strict=True,
    reason="seed 5, m69 and m79 (u004->u003): taken above a gap in the counters, so the "
    "recipient's head acknowledges them only once the gap closes, which the sender's "
    "expiry of the lower packet starts; the sender, back after the expiry, reports them",
)
def test_no_sender_is_told_expired_for_a_delivered_message(soak: Soak) -> None:
    # Seed 5 also found m58, fixed: a recipient took a packet in the 10 min grace after
    # its sender had reported it expired; and a sender back after the expiry reported
    # before its first look at the recipient's head.
    assert [p for p in soak.judge().problems if p.startswith(MISREPORT)] == []


def test_mailbox_rows_drain_and_stay_bounded(soak: Soak) -> None:
    first, last = soak.samples[0], soak.samples[-1]
    assert len(soak.samples) == 4  # one a simulated day
    # Nothing left queued, undecrypted or waiting for an answer once all have met.
    for table in ("outbox", "mailbox_out", "mailbox_in"):
        assert last["rows"][table] == 0, table
    # Friend-held packets and replay ids are bounded by retention, not by history.
    assert last["rows"]["held"] <= 2 * max(s["rows"]["held"] for s in soak.samples[:2]) + 10
    assert last["rows"]["seen"] <= last["rows"]["messages"]
    for s in soak.samples:
        assert s["rows"]["mailbox_out"] >= s["pending_in_retention"]
        assert set(BOUNDED_TABLES) <= set(s["rows"])
    # Departed nodes are not kept: what is attached is the swarm plus the users.
    assert last["nodes_attached"] == first["nodes_attached"]
