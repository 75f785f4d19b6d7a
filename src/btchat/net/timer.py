"""The one asyncio timer behind a sans-I/O core (``get_timer`` / ``handle_timer``).

A core says when it next wants to be woken; its shell keeps exactly one loop timer at
that deadline. :meth:`CoreTimer.rearm` is called after every call into the core and
moves the timer only when the deadline changed (most datagrams do not change it), so a
busy socket does not churn timer handles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["CoreTimer"]


class CoreTimer:
    """Keeps one loop timer at ``get_timer()``; runs ``fire`` when it expires.

    ``fire`` is the shell's own handler (it calls the core's ``handle_timer`` and sends
    what that produced, then re-arms). Deadlines are on the loop's clock, or on
    ``clock`` (``time.time`` for a core driven by wall time). ``loop`` None: the running
    loop, looked up when the timer is first armed.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None,
        get_timer: Callable[[], float | None],
        fire: Callable[[], None],
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._loop = loop
        self._get_timer = get_timer
        self._fire = fire
        self._clock = clock
        self._handle: asyncio.TimerHandle | None = None
        self._at: float | None = None

    def rearm(self) -> None:
        """Follow the core's deadline (none: no timer)."""
        when = self._get_timer()
        if when == self._at:
            return
        self.cancel()
        if when is not None:
            loop = self._loop or asyncio.get_running_loop()
            if self._clock is None:
                self._handle = loop.call_at(when, self._expired)
            else:
                self._handle = loop.call_later(max(0.0, when - self._clock()), self._expired)
        self._at = when

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = None
        self._at = None

    def _expired(self) -> None:
        self._handle = None
        self._at = None
        self._fire()
