"""The one local database: open it (with or without a key), configure it, run transactions.

With a key the database is SQLCipher (encrypted and authenticated at rest, including the
WAL and the full-text index); without one it is plain SQLite, for users who chose not to
protect their identity with a passphrase. Either way:

* ``synchronous=FULL`` in WAL mode: a method that returned has its data on disk, so the
  daemon may acknowledge a message (or report it queued) right after saving it;
* every multi-row change is one ``BEGIN IMMEDIATE`` transaction (:meth:`Database.transaction`),
  so a crash leaves either all of it or none;
* group commit: transactions opened inside an outer one join it, so a batch of saves
  costs one fsync; then "on disk" holds once the outer block returned, and only then
  may the caller acknowledge any of them;
* the schema is migrated forward at open, where each package registers its own
  numbered steps (see "Migrations" below).

The tables themselves belong to the packages (``messaging``, ``offline``, ``channels``);
this module knows none of them.

Migrations. A package that keeps tables in the database calls :func:`register_migrations` at
import with its name and its ordered steps (``steps[i]`` takes the package from version i
to i + 1; append only, never edit a released step). The versions reached are kept per
package in the table ``schema_versions``; ``PRAGMA user_version`` only says which layout
of that bookkeeping the file uses (:data:`LAYOUT`), so an older btchat refuses the file
("newer than this btchat") instead of misreading it.

Files written before the registry (``user_version`` 1 to 3) numbered the same steps in
one global sequence: :data:`LEGACY` maps those numbers to (package, version), so such a
file is adopted as is, its data untouched, and only the steps it lacks run.

Every step runs in its own ``BEGIN IMMEDIATE`` transaction that re-reads the version
under the write lock, so two processes opening one file at once never apply a step twice,
and a step that fails leaves nothing half-done.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from btchat.errors import (
    DiskFull,
    ReadOnlyStorage,
    StorageError,
    StorageIOError,
)

__all__ = [
    "BUSY_TIMEOUT_MS",
    "LAYOUT",
    "LEGACY",
    "WRONG_KEY",
    "Connection",
    "Database",
    "Step",
    "StoreError",
    "StoreFull",
    "StoreIOError",
    "StoreReadOnly",
    "Table",
    "classify",
    "id_chunks",
    "placeholders",
    "register_migrations",
    "registered_migrations",
    "sql_step",
]

#: How long a writer waits for another connection's lock before failing.
BUSY_TIMEOUT_MS = 5000

WRONG_KEY = "cannot open the message database: wrong key or corrupt file"
NOT_A_DATABASE = (
    "cannot open the message database: not a readable SQLite file "
    "(damaged, or encrypted and opened without its key)"
)
DAMAGED = "the message database is damaged"
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _open_failure(path: Path, key: bytes | None, exc: BaseException) -> str:
    """Why a file failed its first read, as precisely as its first bytes tell."""
    try:
        with open(path, "rb") as f:
            plaintext = f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        plaintext = False
    if key is None:
        return f"{DAMAGED}: {exc}" if plaintext else NOT_A_DATABASE
    if plaintext:
        return "cannot open the message database: it is not encrypted but a key was given"
    return WRONG_KEY


#: A sqlite3 or sqlcipher3 connection; the two modules share the DB-API but no classes.
Connection = Any


class StoreError(StorageError):
    """The database cannot be opened or a change was refused; the message says why."""


class StoreFull(StoreError, DiskFull):
    """SQLITE_FULL: no room for the change; nothing of it was written."""


class StoreIOError(StoreError, StorageIOError):
    """SQLITE_IOERR: the disk failed a read or a write."""


class StoreReadOnly(StoreError, ReadOnlyStorage):
    """SQLITE_READONLY: the file or its mount refuses writes."""


#: SQLite's primary result codes (sqlite3.h) that are a condition of the machine.
_FAULT_CODES: dict[int, type[StoreError]] = {
    13: StoreFull,  # SQLITE_FULL
    10: StoreIOError,  # SQLITE_IOERR (and its extended codes, e.g. IOERR_WRITE 778)
    8: StoreReadOnly,  # SQLITE_READONLY
}
#: The same, by message, for a driver that does not carry the code.
_FAULT_TEXT: tuple[tuple[str, type[StoreError]], ...] = (
    ("database or disk is full", StoreFull),
    ("disk i/o error", StoreIOError),
    ("readonly database", StoreReadOnly),
)


def classify(exc: BaseException) -> type[StoreError]:
    """The :class:`StoreError` subclass for a driver error: a :class:`StorageFault`
    (full, I/O, read-only) when it is one, so the node can back off, else StoreError."""
    code = getattr(exc, "sqlite_errorcode", None)
    if type(code) is int and (code & 0xFF) in _FAULT_CODES:
        return _FAULT_CODES[code & 0xFF]
    text = str(exc).lower()
    for needle, cls in _FAULT_TEXT:
        if needle in text:
            return cls
    return StoreError


def _store_error(message: str, exc: BaseException) -> StoreError:
    return classify(exc)(f"{message}: {exc}")


def _create_private(path: Path) -> None:
    """Create the file owner-only before SQLite does (the WAL inherits its mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _driver(
    key: bytes | None,
) -> tuple[Any, tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """The DB-API module, its errors, and the errors that mean "cannot open the file"."""
    if key is None:
        return sqlite3, (sqlite3.Error,), (sqlite3.OperationalError,)
    try:
        from sqlcipher3 import dbapi2 as sqlcipher
    except ImportError:  # pragma: no cover - a declared dependency
        raise StoreError("an encrypted database needs the sqlcipher3 package") from None
    return (
        sqlcipher,
        (sqlcipher.Error, sqlite3.Error),
        (sqlcipher.OperationalError, sqlite3.OperationalError),
    )


# --------------------------------------------------------------------------- migrations

#: One migration step: runs inside the transaction it is given.
Step = Callable[[Connection], None]

#: ``user_version`` of a file whose versions live in ``schema_versions``.
LAYOUT = 4
#: The pre-registry global sequence: ``user_version`` n meant LEGACY[:n] were applied.
LEGACY: tuple[tuple[str, int], ...] = (("messaging", 1), ("offline", 1), ("channels", 1))

_REGISTRY: dict[str, tuple[Step, ...]] = {}


def register_migrations(package: str, steps: Sequence[Step]) -> None:
    """Declare ``package``'s migrations (all of them, in order); called once at import."""
    if not steps:
        raise ValueError("a package registers at least one migration")
    _REGISTRY[package] = tuple(steps)


def sql_step(statements: Sequence[str]) -> Step:
    """A migration step that runs these statements, in order (the usual kind)."""

    def step(conn: Connection) -> None:
        for statement in statements:
            conn.execute(statement)

    return step


def registered_migrations() -> dict[str, tuple[Step, ...]]:
    """A copy of the registry (for tests and for tools that list the schema)."""
    return dict(_REGISTRY)


def _versions(conn: Connection) -> dict[str, int]:
    return {str(p): int(v) for p, v in conn.execute("SELECT package, version FROM schema_versions")}


def _adopt_layout(conn: Connection) -> None:
    """Bring the bookkeeping to :data:`LAYOUT`; refuse a file from a newer btchat."""
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == LAYOUT:
        return
    if version > LAYOUT or version > len(LEGACY):
        raise StoreError(
            f"the message database has schema version {version}, newer than "
            f"this btchat ({LAYOUT}); upgrade btchat"
        )
    conn.execute(
        "CREATE TABLE schema_versions (package TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        " WITHOUT ROWID"
    )
    for package, reached in LEGACY[:version]:
        conn.execute(
            "INSERT INTO schema_versions (package, version) VALUES (?, ?)"
            " ON CONFLICT (package) DO UPDATE SET version = max(version, excluded.version)",
            (package, reached),
        )
    conn.execute(f"PRAGMA user_version = {LAYOUT}")


def _pending(versions: dict[str, int]) -> list[str]:
    """Packages with steps not yet applied; refuses one that is ahead of this code."""
    pending = []
    for package, steps in _REGISTRY.items():
        have = versions.get(package, 0)
        if have > len(steps):
            raise StoreError(
                f"the message database has {package} schema version {have}, newer than "
                f"this btchat ({len(steps)}); upgrade btchat"
            )
        if have < len(steps):
            pending.append(package)
    return pending


def _up_to_date(db: Database) -> bool:
    """A lock-free first look: the common case (nothing to do) takes no write lock."""
    if db.schema_version != LAYOUT:
        return False
    rows = db.query("SELECT package, version FROM schema_versions")
    return not _pending({str(p): int(v) for p, v in rows})


def _run_migrations(db: Database) -> None:
    """Apply every registered step the file lacks, one transaction each."""
    if _up_to_date(db):
        return
    with db.transaction() as conn:
        _adopt_layout(conn)
    while True:
        with db.transaction() as conn:
            pending = _pending(_versions(conn))
            if not pending:
                return
            package = pending[0]
            have = _versions(conn).get(package, 0)
            _REGISTRY[package][have](conn)
            conn.execute(
                "INSERT INTO schema_versions (package, version) VALUES (?, ?)"
                " ON CONFLICT (package) DO UPDATE SET version = excluded.version",
                (package, have + 1),
            )


# --------------------------------------------------------------------------- database


class Database:
    """One open connection. Not thread-safe: use it from the thread that opened it."""

    def __init__(self, conn: Connection, errors: tuple[type[BaseException], ...]) -> None:
        self._conn: Connection | None = conn
        self._errors = errors
        self._key: bytes | None = None
        self._depth = 0  # open transaction() blocks: 0, 1, or more when nested
        self._doomed = False  # a nested block failed: the outer one must roll back

    @classmethod
    def open(cls, path: Path, key: bytes | None, *, migrate: bool = True) -> Database:
        """Open (creating and migrating as needed); ``key`` is 32 bytes or None."""
        path = Path(path)
        if key is not None and (type(key) is not bytes or len(key) != 32):
            raise StoreError("the message database key must be 32 bytes")
        try:
            _create_private(path)
        except OSError as exc:
            raise StoreError(f"cannot create the message database: {exc}") from None
        module, errors, cant_open = _driver(key)
        try:
            conn = module.connect(str(path), isolation_level=None)
        except errors as exc:
            raise StoreError(f"cannot open the message database: {exc}") from None
        try:
            if key is not None:
                # A wrong key is an expected user error, reported below: keep SQLCipher's
                # own logging from writing decryption failures over the terminal.
                conn.execute("PRAGMA cipher_log_level = NONE")
                # A raw key (no KDF): the 32 bytes already come from the key file.
                conn.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            # The first read decrypts page 1 and checks its HMAC: a wrong key fails here.
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except cant_open as exc:  # permissions, a directory, a missing volume...
            conn.close()
            raise StoreError(f"cannot open the message database: {exc}") from None
        except errors as exc:  # SQLITE_NOTADB: undecryptable page 1 (wrong key) or not SQLite
            conn.close()
            raise StoreError(_open_failure(path, key, exc)) from None
        db = cls(conn, errors)
        db._key = key
        try:
            db._configure()
            if migrate:
                db.migrate()
        except BaseException:
            db.close()
            raise
        return db

    def _configure(self) -> None:
        conn = self._live()
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot use write-ahead logging (journal mode {mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA secure_delete = ON")  # deleted messages are overwritten
            conn.execute("PRAGMA temp_store = MEMORY")  # no plaintext temp files
        except self._errors as exc:
            raise StoreError(f"cannot configure the message database: {exc}") from None

    def migrate(self) -> None:
        """Apply every registered package's pending migrations (cheap when up to date).

        Called at open, and again by a package's store when it attaches, so a package
        imported after the database was opened still gets its tables.
        """
        _run_migrations(self)

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(*self._errors):
                conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _live(self) -> Connection:
        if self._conn is None:
            raise StoreError("the message database is closed")
        return self._conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction: committed if the block returns, rolled back otherwise.

        Group commit: a transaction opened inside another joins it, and reaches the
        disk (one fsync) only when the outermost one commits, so a caller batching many
        saves acts on them (acknowledges, sends) only after the outermost block has
        returned. A nested block that fails dooms the whole transaction: the outermost
        one then rolls back and raises even if the failure was caught in between, so a
        batch is stored whole or not at all. (Savepoints would undo only the nested
        part, but cost two statements each, half as much again as the saves they guard.)
        """
        conn = self._live()
        if self._depth:
            self._depth += 1
            try:
                yield conn
            except self._errors as exc:
                self._doomed = True
                raise StoreError(f"message database error: {exc}") from exc
            except BaseException:
                self._doomed = True
                raise
            finally:
                self._depth -= 1
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._depth, self._doomed = 1, False
            try:
                yield conn
                if self._doomed:
                    raise StoreError("a change inside this transaction failed")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(*self._errors):
                        conn.execute("ROLLBACK")
                raise
            finally:
                self._depth = 0
        except self._errors as exc:
            raise _store_error("message database error", exc) from exc

    @property
    def in_transaction(self) -> bool:
        """A :meth:`transaction` is open: what is written now is not yet durable."""
        return self._depth > 0

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """All rows of one read."""
        try:
            return list(self._live().execute(sql, tuple(params)).fetchall())
        except self._errors as exc:
            raise _store_error("message database error", exc) from exc

    def write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; returns the number of rows changed."""
        with self.transaction() as conn:
            return int(conn.execute(sql, tuple(params)).rowcount)

    @property
    def schema_version(self) -> int:
        return int(self.query("PRAGMA user_version")[0][0])

    def integrity_check(self, *, quick: bool = False) -> list[str]:
        """``PRAGMA integrity_check`` rows: ``["ok"]`` for a sound database. ``quick``
        skips the index-content checks (O(N) instead of O(N log N))."""
        pragma = "quick_check" if quick else "integrity_check"
        return [str(r[0]) for r in self.query(f"PRAGMA {pragma}")]

    def backup_to(self, path: Path) -> None:
        """A consistent copy at ``path`` (SQLite's online backup), under the same key."""
        module, errors, _ = _driver(self._key)
        _create_private(path)
        try:
            dest = module.connect(str(path), isolation_level=None)
            try:
                if self._key is not None:
                    dest.execute(f"PRAGMA key = \"x'{self._key.hex()}'\"")
                self._live().backup(dest)
            finally:
                dest.close()
        except errors as exc:
            raise _store_error("cannot back up the message database", exc) from exc


class Table:
    """Base of a per-domain store: the tables of one concern, over a shared :class:`Database`.

    A domain store holds no state of its own besides the database, so several can be
    combined into one object (``messaging.store.Store``) or used alone.
    """

    def __init__(self, db: Database) -> None:
        self.db = db


# --------------------------------------------------------------------------- SQL helpers

#: Ids per ``IN (...)`` list, far below SQLite's bound-parameter limit.
CHUNK = 500


def id_chunks(ids: Sequence[bytes]) -> Iterator[list[bytes]]:
    """``ids`` without repeats, in lists short enough for one ``IN (...)`` each."""
    items = list(dict.fromkeys(ids))
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def placeholders(n: int) -> str:
    """``?, ?, ...`` for ``n`` bound parameters."""
    return ", ".join("?" * n)
