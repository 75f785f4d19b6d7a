"""The one timer behind a core: follows its deadline, moves only when it changes."""

from __future__ import annotations

import asyncio

from btchat.net.timer import CoreTimer


class Core:
    def __init__(self) -> None:
        self.deadline: float | None = None

    def get_timer(self) -> float | None:
        return self.deadline


async def test_follows_the_deadline_and_fires_once() -> None:
    loop = asyncio.get_running_loop()
    core, fired = Core(), asyncio.Event()
    timer = CoreTimer(loop, core.get_timer, fired.set)
    timer.rearm()  # no deadline: no timer
    assert timer._handle is None
    core.deadline = loop.time() + 0.02
    timer.rearm()
    handle = timer._handle
    timer.rearm()  # same deadline: the same handle, not a new one
    assert timer._handle is handle is not None
    await asyncio.wait_for(fired.wait(), 2)
    assert timer._handle is None
    timer.rearm()  # the deadline has not moved, but the timer fired: armed again
    assert timer._handle is not None


async def test_a_moved_or_cancelled_deadline_does_not_fire() -> None:
    loop = asyncio.get_running_loop()
    core, fires = Core(), list[float]()
    timer = CoreTimer(loop, core.get_timer, lambda: fires.append(loop.time()))
    core.deadline = loop.time() + 0.01
    timer.rearm()
    core.deadline = loop.time() + 10.0  # moved later
    timer.rearm()
    await asyncio.sleep(0.05)
    assert fires == []
    core.deadline = loop.time()
    timer.rearm()
    timer.cancel()
    await asyncio.sleep(0.02)
    assert fires == []
