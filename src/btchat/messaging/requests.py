"""Contact requests, sent (``out``) and received (``in``), with their answers."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from btchat.storage import StoreError, Table

__all__ = ["REQUEST_STATES", "RequestRow", "Requests"]

REQUEST_STATES = ("pending", "accepted", "declined", "cancelled")

_REQUEST_COLUMNS = "id, pk, direction, name, note, state, created_ms, updated_ms, payload"


@dataclass(frozen=True)
class RequestRow:
    """A contact request, sent (``out``) or received (``in``)."""

    id: bytes
    pk: bytes
    direction: str
    name: str | None
    note: str | None
    state: str
    created_ms: int
    updated_ms: int
    payload: bytes | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id.hex(),
            "public_key": self.pk.hex(),
            "direction": self.direction,
            "name": self.name,
            "note": self.note,
            "state": self.state,
            "created": self.created_ms,
            "updated": self.updated_ms,
        }


def _request(row: Sequence[Any]) -> RequestRow:
    return RequestRow(*row)


class Requests(Table):
    def add_request(
        self,
        req_id: bytes,
        pk: bytes,
        direction: str,
        note: str | None,
        now_ms: int,
        *,
        name: str | None = None,
        payload: bytes | None = None,
    ) -> bool:
        """Record a pending contact request; False if this request id is already known."""
        if direction not in ("in", "out"):
            raise StoreError("a request's direction is 'in' or 'out'")
        if len(req_id) != 16 or len(pk) != 32:
            raise StoreError("a request id is 16 bytes and a key 32")
        return (
            self.db.write(
                f"INSERT OR IGNORE INTO contact_requests ({_REQUEST_COLUMNS})"
                " VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)",
                (req_id, pk, direction, name, note, now_ms, now_ms, payload),
            )
            > 0
        )

    def get_request(self, req_id: bytes) -> RequestRow | None:
        rows = self.db.query(
            f"SELECT {_REQUEST_COLUMNS} FROM contact_requests WHERE id = ?", (req_id,)
        )
        return _request(rows[0]) if rows else None

    def list_requests(self) -> list[RequestRow]:
        rows = self.db.query(
            f"SELECT {_REQUEST_COLUMNS} FROM contact_requests ORDER BY created_ms, id"
        )
        return [_request(r) for r in rows]

    def set_request_state(self, req_id: bytes, state: str, now_ms: int | None = None) -> bool:
        """Answer a request; only a pending request changes state (answers are final)."""
        if state not in REQUEST_STATES:
            raise StoreError(f"unknown request state {state!r}")
        when = int(time.time() * 1000) if now_ms is None else now_ms
        return (
            self.db.write(
                "UPDATE contact_requests SET state = ?, updated_ms = ?"
                " WHERE id = ? AND state = 'pending'",
                (state, when, req_id),
            )
            > 0
        )
