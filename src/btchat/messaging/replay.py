"""Replay protection: the id of every envelope accepted, kept for the envelope age window."""

from __future__ import annotations

from btchat.storage import Connection, Table

__all__ = ["ReplayIds"]


class ReplayIds(Table):
    @staticmethod
    def record_seen(conn: Connection, msg_id: bytes, now_ms: int) -> bool:
        """Inside the caller's transaction: remember ``msg_id``; False if it was known."""
        return (
            conn.execute(
                "INSERT OR IGNORE INTO seen (id, seen_ms) VALUES (?, ?)", (msg_id, now_ms)
            ).rowcount
            > 0
        )

    def seen_before(self, msg_id: bytes) -> bool:
        return bool(
            self.db.query(
                "SELECT 1 FROM seen WHERE id = ? UNION ALL SELECT 1 FROM messages WHERE id = ?",
                (msg_id, msg_id),
            )
        )

    def prune_seen(self, older_than_ms: int) -> int:
        """Forget replay ids seen before ``older_than_ms``.

        Safe once older than the envelope age window (``verify_envelope``'s ``max_age``
        plus skew): such envelopes are refused as too old anyway, and stored messages
        keep their ids unique in ``messages``.
        """
        return self.db.write("DELETE FROM seen WHERE seen_ms < ?", (int(older_than_ms),))
