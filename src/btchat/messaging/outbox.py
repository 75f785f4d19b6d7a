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

    def outbox_envelopes(self, ids: list[bytes]) -> dict[bytes, bytes]:
        """The queued envelopes among ``ids`` (id -> encoded envelope)."""
        out: dict[bytes, bytes] = {}
        for chunk in id_chunks(ids):
            rows = self.db.query(
                f"SELECT id, envelope FROM outbox WHERE id IN ({placeholders(len(chunk))})", chunk
            )
            out.update((bytes(r[0]), bytes(r[1])) for r in rows)
        return out

    def adopt_outbox(self, envs: list[Envelope], now_ms: int, limit: int) -> list[Envelope]:
        """Queue envelopes another of our devices still has unacknowledged, so this one
        offers and deposits them too. Only for our outgoing messages stored here and not
        yet delivered, read or failed, not queued already, and while this outbox holds
        fewer than ``limit``; returns those queued."""
        adopted = []
        with self.db.transaction() as conn:
            room = limit - conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
            for env in envs:
                if room <= 0:
                    break
                row = conn.execute(
                    "SELECT 1 FROM messages WHERE id = ? AND peer = ? AND direction = 'out'"
                    " AND state IN ('pending', 'sent')"
                    " AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.id = messages.id)",
                    (env.id, env.recipient),
                ).fetchone()
                if row is not None:
                    Outbox.queue(conn, env, now_ms)
                    adopted.append(env)
                    room -= 1
        return adopted

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
