"""The outbox: signed envelopes not yet acknowledged by the recipient, replayed on every
session until they are (persist, then act; retried across restarts)."""

from __future__ import annotations

from btchat.messaging.envelope import Envelope, encode_envelope
from btchat.storage import Connection, StoreError, Table, id_chunks, placeholders

__all__ = ["Outbox"]


class Outbox(Table):
    @staticmethod
    def queue(conn: Connection, env: Envelope, now_ms: int) -> None:
        """Inside the caller's transaction (the one that saves the message): queue ``env``."""
        conn.execute(
            "INSERT INTO outbox (id, peer, lamport, envelope, queued_ms) VALUES (?, ?, ?, ?, ?)",
            (env.id, env.recipient, env.lamport, encode_envelope(env), now_ms),
        )

    def pending_outbox(self, peer: bytes) -> list[bytes]:
        """Encoded envelopes not yet acknowledged by ``peer``, in Lamport order."""
        rows = self.db.query(
            "SELECT envelope FROM outbox WHERE peer = ? ORDER BY lamport, id", (peer,)
        )
        return [bytes(r[0]) for r in rows]

    def replace_outbox(self, env: Envelope) -> bool:
        """Swap a queued envelope for a re-signed copy (same id, recipient and lamport).

        For messages queued longer than the receiver's time window: see
        :func:`btchat.messaging.envelope.resign`. False if the id is no longer queued.
        """
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT peer, lamport FROM outbox WHERE id = ?", (env.id,)
            ).fetchone()
            if row is None:
                return False
            if bytes(row[0]) != env.recipient or row[1] != env.lamport:
                raise StoreError("a replacement must keep the recipient and Lamport clock")
            conn.execute(
                "UPDATE outbox SET envelope = ? WHERE id = ?", (encode_envelope(env), env.id)
            )
            return True

    def ack_outbox(self, ids: list[bytes]) -> int:
        changed = 0
        with self.db.transaction() as conn:
            for chunk in id_chunks(ids):
                changed += conn.execute(
                    f"DELETE FROM outbox WHERE id IN ({placeholders(len(chunk))})", chunk
                ).rowcount
        return changed
