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


async def test_a_wall_clock_deadline_is_turned_into_a_delay() -> None:
    """A core on another clock (the conversation core runs on ``time.time``)."""
    core, fired = Core(), asyncio.Event()
    wall = 1_000_000.0
    timer = CoreTimer(None, core.get_timer, fired.set, clock=lambda: wall)
    core.deadline = wall + 0.02  # 20 ms from "now" on that clock, whatever the loop says
    timer.rearm()
    await asyncio.wait_for(fired.wait(), 2)
    core.deadline = wall - 5.0  # already due: runs at once, not never
    fired.clear()
    timer.rearm()
    await asyncio.wait_for(fired.wait(), 2)
