"""Turn decrypted offline packets into stored messages, and mailbox outcomes into states.

Shared by the daemon and the simulator so both take exactly the same path: a packet's
plaintext (already committed to ``mailbox_in`` with its ratchet state) is parsed and
verified as an envelope from that contact, saved idempotently by id (a message that
also came by session or another path is shown once), and only then removed from the
inbox. A crash in between replays it from the inbox at the next start.
"""

from __future__ import annotations

import logging

from btchat.messaging import envelope as env_mod
from btchat.messaging.envelope import Envelope, EnvelopeError
from btchat.messaging.store import Store
from btchat.offline.mailbox import Acked, Event, Expired
from btchat.offline.state import MailboxState

__all__ = ["apply_outcome", "drain_inbox"]

log = logging.getLogger(__name__)


def drain_inbox(
    state: MailboxState, store: Store, me: bytes, now: float
) -> list[tuple[Envelope, bool]]:
    """Store every decrypted packet waiting in the inbox.

    Returns (envelope, fresh) for each valid one; ``fresh`` is False when the message
    was already stored (it came another way first).
    """
    out = []
    for peer, n, plaintext in state.inbox():
        try:
            envelope = env_mod.parse_envelope(plaintext)
            env_mod.verify_envelope(envelope, expected_sender=peer, expected_recipient=me, now=now)
        except EnvelopeError as exc:
            log.warning("offline packet %d from %s refused: %s", n, peer.hex()[:16], exc)
            state.inbox_done(peer, n)
            continue
        store.next_lamport(peer, envelope.lamport)
        # Texts and file offers are messages of the history; the rest are not stored.
        stored = envelope.type in (env_mod.TEXT, env_mod.FILE)
        fresh = store.save_incoming(envelope, now) if stored else False
        state.inbox_done(peer, n)
        out.append((envelope, fresh))
    return out


def apply_outcome(store: Store, event: Event) -> str | None:
    """Record an acknowledgement or an expiry in the message states; returns the state."""
    if isinstance(event, Acked):
        store.mark_state(list(event.msg_ids), "delivered")
        store.ack_outbox(list(event.msg_ids))
        return "delivered"
    if isinstance(event, Expired):
        # Not delivered in its retention period: the user is told, and it is not
        # resent by a later session either (the sender was told it failed).
        store.mark_state(list(event.msg_ids), "failed")
        store.ack_outbox(list(event.msg_ids))
        return "failed"
    return None
