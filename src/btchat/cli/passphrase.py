"""Choosing a new passphrase at a terminal: a strength hint, the warning that it cannot
be recovered, and a second chance on a typo.

The dialogue takes its input and output as functions, so it is tested without a
terminal; :func:`btchat.cli.chat.ask_passphrase` hands it getpass and stderr.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["NO_RECOVERY", "Strength", "choose_passphrase", "strength"]

NO_RECOVERY = (
    "Choose a passphrase for your identity key and your history. Nobody can recover it "
    "for you: there is no server and no reset. Several uncommon words are strong and "
    "easy to type."
)
#: zxcvbn's score from 0 (guessed at once) to 4; below this we ask before using it.
GOOD_SCORE = 3
#: New passphrases offered before giving up.
TRIES = 3


@dataclass(frozen=True)
class Strength:
    ok: bool
    line: str  # what the user is told


def strength(value: str) -> Strength:
    """zxcvbn's verdict in one line: the score in words and its advice."""
    from zxcvbn import zxcvbn  # ~0.3 s to load its dictionaries: only when choosing

    verdict = zxcvbn(value[:256])  # its cost grows with length; 256 is plenty
    score = int(verdict["score"])
    words = ["very weak", "weak", "fair", "strong", "very strong"][score]
    advice = [verdict["feedback"]["warning"], *verdict["feedback"]["suggestions"]]
    tail = " ".join(a for a in advice if a)
    return Strength(score >= GOOD_SCORE, f"strength: {words}" + (f". {tail}" if tail else ""))


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
