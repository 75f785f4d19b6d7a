"""What each identity we know (our own and our contacts') has said of its devices: the
highest ``seq`` seen of its device list and of its revocation list, and every device id
it has revoked.

Both are kept for good, in the message database (table ``device_lists``): a revoked id
never leaves the set (a stale device list replayed by a DHT node, or a certificate
remembered from an earlier session, cannot bring the device back), and a list older
than one already seen is ignored (rollback). See ``identity/devices.py`` for the items.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from btchat.codec.bencode import DecodeError, decode, encode
from btchat.identity.devices import MAX_REVOKED
from btchat.messaging.store import Store
from btchat.storage import register_migrations, sql_step

__all__ = ["DeviceLists", "Learned"]

log = logging.getLogger(__name__)

#: Revoked ids kept per identity: more than one list carries, so a reader that heard of
#: a revocation keeps it even after the publisher's list has moved on.
MAX_KEPT_REVOKED = 4 * MAX_REVOKED

MIGRATIONS = (
    sql_step(
        (
            """CREATE TABLE device_lists (
                pk BLOB PRIMARY KEY CHECK (length(pk) = 32),
                list_seq INTEGER NOT NULL DEFAULT -1,
                revoked_seq INTEGER NOT NULL DEFAULT -1,
                revoked BLOB NOT NULL
            ) WITHOUT ROWID""",
        )
    ),
)
register_migrations("device_lists", MIGRATIONS)


@dataclass(frozen=True)
class Learned:
    """What one read of an identity's lists taught us."""

    #: The device list was at least as new as any seen (False: a rollback, ignored).
    list_current: bool
    #: Ids revoked by this read that were not known to be revoked before.
    newly_revoked: frozenset[bytes]


class DeviceLists:
    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate()  # the table, if this database predates it
        self._cache: dict[bytes, tuple[int, int, frozenset[bytes]]] = {}

    def _row(self, pk: bytes) -> tuple[int, int, frozenset[bytes]]:
        row = self._cache.get(pk)
        if row is not None:
            return row
        rows = self.store.query(
            "SELECT list_seq, revoked_seq, revoked FROM device_lists WHERE pk = ?", (pk,)
        )
        if not rows:
            row = (-1, -1, frozenset())
        else:
            list_seq, revoked_seq, blob = rows[0]
            row = (int(list_seq), int(revoked_seq), _decode_ids(bytes(blob)))
        self._cache[pk] = row
        return row

    def revoked(self, pk: bytes) -> frozenset[bytes]:
        return self._row(pk)[2]

    def is_revoked(self, pk: bytes, device_id: bytes) -> bool:
        return device_id in self._row(pk)[2]

    def learn(
        self,
        pk: bytes,
        *,
        list_seq: int | None = None,
        revoked_seq: int | None = None,
        revoked: frozenset[bytes] = frozenset(),
    ) -> Learned:
        """Record a read of ``pk``'s lists (either may be absent: None). A revocation
        list older than one seen is ignored like a device list; revocations only add."""
        old_list, old_rev, old_ids = self._row(pk)
        list_current = list_seq is None or list_seq >= old_list
        new_list = old_list if list_seq is None else max(old_list, list_seq)
        ids = old_ids
        new_rev = old_rev
        if revoked_seq is not None and revoked_seq >= old_rev:
            new_rev = revoked_seq
            ids = old_ids | revoked
        elif revoked_seq is None and revoked:
            ids = old_ids | revoked  # our own revocation, before it is published
        if len(ids) > MAX_KEPT_REVOKED:  # what we knew stays; new ones as far as they fit
            room = max(0, MAX_KEPT_REVOKED - len(old_ids))
            ids = old_ids | frozenset(sorted(ids - old_ids)[:room])
        row = (new_list, new_rev, frozenset(ids))
        if row != (old_list, old_rev, old_ids):
            with self.store.transaction() as conn:
                conn.execute(
                    "INSERT INTO device_lists (pk, list_seq, revoked_seq, revoked)"
                    " VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (pk) DO UPDATE SET list_seq = excluded.list_seq,"
                    " revoked_seq = excluded.revoked_seq, revoked = excluded.revoked",
                    (pk, new_list, new_rev, encode(sorted(ids))),
                )
            self._cache[pk] = row
        return Learned(list_current, frozenset(ids - old_ids))


def _decode_ids(blob: bytes) -> frozenset[bytes]:
    try:
        items = decode(blob)
    except DecodeError:
        log.warning("a stored revocation list does not decode; treating it as empty")
        return frozenset()
    if not isinstance(items, list):
        return frozenset()
    return frozenset(i for i in items if isinstance(i, bytes) and len(i) == 16)
