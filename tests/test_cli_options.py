"""The common options work before the command as after it (`btchat --json contacts`),
and one that the command has not is refused, not ignored."""

from __future__ import annotations

import pytest

from btchat.cli.main import _fold_leading, build_parser


def parse(*argv: str) -> object:
    parser = build_parser()
    return _fold_leading(parser, parser.parse_args(argv))


def test_before_or_after_the_command_is_the_same() -> None:
    before = parse("--json", "-v", "--data-dir", "/d", "contacts")
    after = parse("contacts", "--json", "-v", "--data-dir", "/d")
    assert {k: v for k, v in vars(before).items() if k != "func"} == {
        k: v for k, v in vars(after).items() if k != "func"
    }
    assert before.json and before.verbose and before.data_dir == "/d"  # type: ignore[attr-defined]
    assert not any(k.startswith("lead_") for k in vars(before))
    # Given after the command too: the command's own wins.
    assert parse("--data-dir", "/a", "contacts", "--data-dir", "/b").data_dir == "/b"  # type: ignore[attr-defined]
    assert parse("contacts").json is False  # type: ignore[attr-defined]


def test_an_option_the_command_does_not_take_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse("--data-dir", "/d", "dht", "ping", "127.0.0.1:9")
    assert "--data-dir does not apply to `dht`" in capsys.readouterr().err
