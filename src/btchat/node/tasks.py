"""Background task ownership lives in :mod:`btchat.tasks`; node code imports it from here."""

from btchat.tasks import TaskOwner

__all__ = ["TaskOwner"]
