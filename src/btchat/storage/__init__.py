"""The local database: one module (:mod:`btchat.storage.database`) opens, migrates and
runs transactions; each package that keeps tables registers its own migrations there."""

from btchat.storage.database import (
    WRONG_KEY,
    Connection,
    Database,
    StoreError,
    Table,
    classify,
    id_chunks,
    placeholders,
    register_migrations,
    sql_step,
)

__all__ = [
    "WRONG_KEY",
    "Connection",
    "Database",
    "StoreError",
    "Table",
    "classify",
    "id_chunks",
    "placeholders",
    "register_migrations",
    "sql_step",
]
