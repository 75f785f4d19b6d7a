"""The messaging tables (contacts, messages + FTS, replay ids, outbox, clocks, requests,
settings) and their migrations, registered with :mod:`btchat.storage`.

Full-text indexing is deferred (step 2): storing a message only notes its ``seq`` in
``fts_pending``; :meth:`~btchat.messaging.messages.Messages.index_pending` adds pending
rows to ``messages_fts`` later (in idle time, and before every search). The delete and
text-update triggers take a row out of the index only if it is in it (not pending), so
the index never holds an entry whose row is gone or whose text changed.

Append a step to ``MIGRATIONS`` to change the schema; never edit a released one.
"""

from __future__ import annotations

from btchat.storage import register_migrations, sql_step

__all__ = ["MIGRATIONS"]

_SCHEMA_V1 = (
    """CREATE TABLE contacts (
        pk BLOB PRIMARY KEY CHECK (length(pk) = 32),
        name TEXT NOT NULL,
        added_ms INTEGER NOT NULL,
        verified INTEGER NOT NULL DEFAULT 0 CHECK (verified IN (0, 1)),
        blocked INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1)),
        certs BLOB,
        presence TEXT NOT NULL DEFAULT 'offline',
        last_seen_ms INTEGER
    ) WITHOUT ROWID""",
    # seq is the FTS rowid; ids are random, so they make a poor clustered key.
    """CREATE TABLE messages (
        seq INTEGER PRIMARY KEY,
        id BLOB NOT NULL UNIQUE CHECK (length(id) = 16),
        peer BLOB NOT NULL CHECK (length(peer) = 32),
        sender BLOB NOT NULL CHECK (length(sender) = 32),
        direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        ts_ms INTEGER NOT NULL,
        lamport INTEGER NOT NULL,
        type TEXT NOT NULL,
        text TEXT,
        state TEXT NOT NULL
            CHECK (state IN ('pending', 'sent', 'delivered', 'read', 'failed')),
        received_ms INTEGER NOT NULL
    )""",
    "CREATE INDEX messages_order ON messages (peer, lamport, sender, id)",
    """CREATE VIRTUAL TABLE messages_fts USING fts5 (
        text, content = 'messages', content_rowid = 'seq',
        tokenize = 'unicode61 remove_diacritics 2'
    )""",
    """CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
        WHEN new.text IS NOT NULL BEGIN
        INSERT INTO messages_fts (rowid, text) VALUES (new.seq, new.text);
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
        WHEN old.text IS NOT NULL BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text)
            VALUES ('delete', old.seq, old.text);
    END""",
    """CREATE TRIGGER messages_fts_update_old AFTER UPDATE OF text ON messages
        WHEN old.text IS NOT NULL BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text)
            VALUES ('delete', old.seq, old.text);
    END""",
    """CREATE TRIGGER messages_fts_update_new AFTER UPDATE OF text ON messages
        WHEN new.text IS NOT NULL BEGIN
        INSERT INTO messages_fts (rowid, text) VALUES (new.seq, new.text);
    END""",
    # Replay protection: ids of every envelope accepted, kept for the envelope age window.
    """CREATE TABLE seen (
        id BLOB PRIMARY KEY,
        seen_ms INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX seen_age ON seen (seen_ms)",
    # Signed envelopes not yet acknowledged by the recipient, replayed on every session.
    """CREATE TABLE outbox (
        id BLOB PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
        peer BLOB NOT NULL,
        lamport INTEGER NOT NULL,
        envelope BLOB NOT NULL,
        queued_ms INTEGER NOT NULL
    ) WITHOUT ROWID""",
    "CREATE INDEX outbox_order ON outbox (peer, lamport, id)",
    # Lamport clock per conversation.
    """CREATE TABLE clocks (
        peer BLOB PRIMARY KEY,
        lamport INTEGER NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE contact_requests (
        id BLOB PRIMARY KEY CHECK (length(id) = 16),
        pk BLOB NOT NULL CHECK (length(pk) = 32),
        direction TEXT NOT NULL CHECK (direction IN ('in', 'out')),
        name TEXT,
        note TEXT,
        state TEXT NOT NULL
            CHECK (state IN ('pending', 'accepted', 'declined', 'cancelled')),
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        payload BLOB
    ) WITHOUT ROWID""",
    "CREATE INDEX contact_requests_pk ON contact_requests (pk)",
    """CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL
    ) WITHOUT ROWID""",
)


# Step 2: the insert trigger only marks the row pending (one append to a small table),
# instead of indexing it in the same statement; deletes and edits of a pending row
# only touch fts_pending (an FTS5 'delete' of a row never indexed would corrupt it).
# Written to be re-runnable (IF [NOT] EXISTS): a file whose bookkeeping was rebuilt
# from an old user_version may already have it.
_DEFERRED_FTS = (
    "CREATE TABLE IF NOT EXISTS fts_pending (seq INTEGER PRIMARY KEY)",
    "DROP TRIGGER IF EXISTS messages_fts_insert",
    "DROP TRIGGER IF EXISTS messages_fts_delete",
    "DROP TRIGGER IF EXISTS messages_fts_update_old",
    "DROP TRIGGER IF EXISTS messages_fts_update_new",
    "DROP TRIGGER IF EXISTS messages_fts_pending",
    "DROP TRIGGER IF EXISTS messages_fts_update",
    """CREATE TRIGGER messages_fts_pending AFTER INSERT ON messages
        WHEN new.text IS NOT NULL BEGIN
        INSERT INTO fts_pending (seq) VALUES (new.seq);
    END""",
    """CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
        WHEN old.text IS NOT NULL BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text)
            SELECT 'delete', old.seq, old.text
            WHERE NOT EXISTS (SELECT 1 FROM fts_pending WHERE seq = old.seq);
        DELETE FROM fts_pending WHERE seq = old.seq;
    END""",
    """CREATE TRIGGER messages_fts_update AFTER UPDATE OF text ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, text)
            SELECT 'delete', old.seq, old.text
            WHERE old.text IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM fts_pending WHERE seq = old.seq);
        DELETE FROM fts_pending WHERE seq = old.seq AND new.text IS NULL;
        INSERT OR IGNORE INTO fts_pending (seq) SELECT new.seq WHERE new.text IS NOT NULL;
    END""",
)


#: Ordered steps: ``MIGRATIONS[i]`` takes the messaging tables from version i to i + 1.
MIGRATIONS = (
    sql_step(_SCHEMA_V1),  # 1: the initial schema
    sql_step(_DEFERRED_FTS),  # 2: full-text indexing off the insert path
)
register_migrations("messaging", MIGRATIONS)
