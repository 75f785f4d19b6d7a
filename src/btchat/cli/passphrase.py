"""Choosing a new passphrase at a terminal: a strength hint, the warning that it cannot
be recovered, and a second chance on a typo.

The dialogue takes its input and output as functions, so it is tested without a
terminal; :func:`btchat.cli.chat.ask_passphrase` hands it getpass and stderr.
"""

from __future__ import annotations

from collections.abc import Callable

from btchat.identity.strength import NO_RECOVERY, Strength, strength

__all__ = ["NO_RECOVERY", "Strength", "choose_passphrase", "strength"]

#: New passphrases offered before giving up.
TRIES = 3


def choose_passphrase(
    secret: Callable[[str], str], line: Callable[[str], str], say: Callable[[str], None]
) -> str | None:
    """Ask for a new passphrase until one is strong (or accepted as it is) and typed the
    same twice; None after :data:`TRIES` attempts."""
    say(NO_RECOVERY)
    for _ in range(TRIES):
        value = secret("New passphrase: ")
        if not value:
            say("An empty passphrase protects nothing (--no-passphrase says so plainly).")
            continue
        verdict = strength(value)
        say(verdict.line)
        if not verdict.ok and line("Use it anyway? [y/N] ").strip().lower() not in ("y", "yes"):
            continue
        if secret("Again: ") != value:
            say("The two differ; once more.")
            continue
        return value
    return None
