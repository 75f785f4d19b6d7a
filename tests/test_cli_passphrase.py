"""Choosing a passphrase: the no-recovery warning, a strength verdict from zxcvbn, a
confirmation for a weak one, and another try on a mismatch (issue 12 item 4)."""

from __future__ import annotations

from collections.abc import Callable

from btchat.cli.passphrase import NO_RECOVERY, TRIES, choose_passphrase, strength


def dialogue(
    secrets: list[str], lines: list[str]
) -> tuple[Callable[[str], str], Callable[[str], str], list[str]]:
    said: list[str] = []

    def secret(prompt: str) -> str:
        said.append(prompt)
        return secrets.pop(0)

    def line(prompt: str) -> str:
        said.append(prompt)
        return lines.pop(0)

    return secret, line, said


def test_a_strong_passphrase_typed_twice_is_taken() -> None:
    secret, line, said = dialogue(["lamp orbit velvet cactus"] * 2, [])
    assert choose_passphrase(secret, line, said.append) == "lamp orbit velvet cactus"
    assert (said[0] == NO_RECOVERY and "cannot" not in said[0].lower()) or "recover" in said[0]
    assert any(s.startswith("strength: very strong") for s in said)


def test_a_weak_one_is_questioned_and_a_mismatch_asks_again() -> None:
    good = "tulip ferry quartz mango"
    secret, line, said = dialogue(["password", good, good + "x", good, good], ["", ""])
    assert choose_passphrase(secret, line, said.append) == good
    weak = [s for s in said if s.startswith("strength: very weak")]
    assert weak and "common password" in weak[0]
    assert "Use it anyway? [y/N] " in said
    assert "The two differ; once more." in said


def test_a_weak_one_can_be_kept_on_purpose() -> None:
    secret, line, said = dialogue(["hunter2hunter2", "hunter2hunter2"], ["y"])
    assert choose_passphrase(secret, line, said.append) == "hunter2hunter2"


def test_empty_is_never_taken_and_the_tries_end() -> None:
    secret, line, said = dialogue([""] * TRIES, [])
    assert choose_passphrase(secret, line, said.append) is None
    assert sum("empty passphrase" in s for s in said) == TRIES


def test_strength_words_follow_the_score() -> None:
    assert not strength("x").ok and strength("x").line.startswith("strength: very weak")
    assert strength("correct horse battery staple").ok
