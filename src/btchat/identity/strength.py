"""How strong a new passphrase is (zxcvbn), and what the user is told when choosing
one: shared by the terminal dialogue (``cli/passphrase.py``) and the web app's first run
(``node/unlock.py``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["GOOD_SCORE", "NO_RECOVERY", "Strength", "strength"]

NO_RECOVERY = (
    "Choose a passphrase for your identity key and your history. Nobody can recover it "
    "for you: there is no server and no reset. Several uncommon words are strong and "
    "easy to type."
)
#: zxcvbn's score from 0 (guessed at once) to 4; below this we ask before using it.
GOOD_SCORE = 3


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
