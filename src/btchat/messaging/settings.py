"""A small string-keyed settings table (profile, account pickles, flags) in the database."""

from __future__ import annotations

from btchat.storage import Table

__all__ = ["Settings"]


class Settings(Table):
    def kv_get(self, key: str) -> bytes | None:
        rows = self.db.query("SELECT value FROM kv WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    def kv_set(self, key: str, value: bytes) -> None:
        self.db.write(
            "INSERT INTO kv (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, bytes(value)),
        )

    def kv_delete(self, key: str) -> bool:
        return self.db.write("DELETE FROM kv WHERE key = ?", (key,)) > 0
