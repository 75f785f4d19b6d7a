"""Which asyncio event loop runs btchat: uvloop when it is installed, else the stdlib's.

uvloop (libuv under asyncio's API) spends several times less CPU per datagram than the
stdlib loop (bench/qps.py measures both side by side), so ``btchat up`` and the sandbox
use it when it imports. It is optional (the ``fast`` extra): everything runs,
and is tested, on the stdlib loop too. ``BTCHAT_UVLOOP=0`` turns it off;
``BTCHAT_UVLOOP=1`` asks for it and says so when it is missing.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["ENV", "LoopFactory", "loop_factory", "loop_name", "run"]

log = logging.getLogger(__name__)

#: The environment switch: 0/false/no/off for the stdlib loop, 1/true/yes/on to insist.
ENV = "BTCHAT_UVLOOP"
_OFF = frozenset({"0", "false", "no", "off"})
_ON = frozenset({"1", "true", "yes", "on"})

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
T = TypeVar("T")


def loop_factory(setting: str | None = None) -> LoopFactory | None:
    """uvloop's loop factory, or None for the stdlib loop.

    ``setting`` is the switch's value (default: ``$BTCHAT_UVLOOP``); unset or empty
    means "uvloop if installed". An unknown value is read as unset, with a warning.
    """
    if setting is None:
        setting = os.environ.get(ENV, "")
    value = setting.strip().lower()
    if value in _OFF:
        return None
    if value and value not in _ON:
        log.warning("%s=%r is not 0 or 1: using uvloop if installed", ENV, setting)
    try:
        import uvloop
    except ImportError:
        if value in _ON:
            log.warning("%s=%s but uvloop is not installed: using the stdlib loop", ENV, value)
        return None
    return uvloop.new_event_loop


def loop_name(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """ "uvloop" or "asyncio": what runs ``loop`` (default: the running loop)."""
    loop = loop or asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], *, setting: str | None = None) -> T:
    """``asyncio.run(main)`` on the loop :func:`loop_factory` chooses."""
    with asyncio.Runner(loop_factory=loop_factory(setting)) as runner:
        return runner.run(main)
