"""The fuzz targets in CI: every seed passes, a short coverage-guided pass finds no crash,
and the harness really reports a parser that raises the wrong error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from harness import skip_unless_ci

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fuzz.campaign import fuzz_one  # noqa: E402
from fuzz.targets import TARGETS, Target  # noqa: E402

CORPUS = ROOT / "fuzz" / "corpus"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_has_seeds_and_they_pass(name: str) -> None:
    seeds = sorted((CORPUS / name).iterdir())
    assert seeds, f"no seed corpus for {name}: run python -m fuzz.make_corpus"
    for seed in seeds:
        TARGETS[name](seed.read_bytes())


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_fuzz_pass_finds_no_crash(name: str) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError as exc:
        skip_unless_ci(f"atheris is not installed ({exc}): scripts/setup installs it")
    outcome = fuzz_one(name, seconds=4, runs=30_000)
    assert not outcome.crashed, outcome.output
    assert outcome.inputs > 1_000, outcome.output
    assert outcome.coverage > 0


def test_a_parser_raising_the_wrong_error_is_a_crash() -> None:
    def parser(data: bytes) -> None:
        if data:
            raise KeyError("a bug")
        raise ValueError("bad input, as promised")

    target = Target("demo", parser, (ValueError,))
    target(b"")  # the promised error is let through
    with pytest.raises(KeyError):
        target(b"x")
