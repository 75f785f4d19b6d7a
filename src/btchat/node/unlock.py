"""Creating or unlocking the identity from the web app (``btchat up --in-browser``).

Started without a terminal to ask at (from a desktop launcher, by ``btchat open``), the
daemon serves its API and web app first, locked: every route but ``/v1/setup`` answers
423, and the page asks for a new passphrase (with a strength hint and the warning that
nobody can recover it) or for the one that opens the key file. What the user types
reaches only this process over loopback, with the API token. The key derivation runs
in a thread, one attempt at a time, and a wrong passphrase waits a second before the
next: a page cannot make the daemon spend more than that.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from btchat.errors import ApiError
from btchat.identity.keystore import KeyStore, KeyStoreError, LoadedKeys, WrongPassphrase
from btchat.identity.strength import NO_RECOVERY, strength

__all__ = ["BrowserUnlock"]

log = logging.getLogger(__name__)

#: After a wrong passphrase, the next attempt waits this long.
WRONG_PAUSE = 1.0


class BrowserUnlock:
    """The API's setup part while the daemon is locked: its state, a strength hint,
    and the attempt that creates or opens the identity (then ``keys`` resolves)."""

    def __init__(self, keystore: KeyStore, *, now: int) -> None:
        self.keystore = keystore
        self._now = now
        self._attempt = asyncio.Lock()
        self.keys: asyncio.Future[LoadedKeys] = asyncio.get_running_loop().create_future()
        #: Set by the boot once the daemon runs (the API then answers every route).
        self.ready = asyncio.Event()
        self.stats = {"wrong": 0}

    def state(self) -> dict[str, Any]:
        if self.ready.is_set():
            return {"state": "ready"}
        if self.keys.done():
            return {"state": "starting"}
        if self.keystore.exists():
            return {"state": "unlock"}
        return {"state": "create", "no_recovery": NO_RECOVERY}

    async def hint(self, passphrase: str) -> dict[str, Any]:
        verdict = await asyncio.to_thread(strength, passphrase)
        return {"ok": verdict.ok, "line": verdict.line}

    async def submit(self, passphrase: str, *, weak_ok: bool = False) -> dict[str, Any]:
        """Create the identity with ``passphrase`` (refused if weak unless ``weak_ok``),
        or open it; returns the state once the daemon runs."""
        async with self._attempt:
            if not self.keys.done():
                self.keys.set_result(await self._open_or_create(passphrase, weak_ok))
        await self.ready.wait()
        return self.state()

    async def _open_or_create(self, passphrase: str, weak_ok: bool) -> LoadedKeys:
        if not passphrase:
            raise ApiError(400, "bad_passphrase", "an empty passphrase protects nothing")
        try:
            if not self.keystore.exists():
                verdict = await asyncio.to_thread(strength, passphrase)
                if not verdict.ok and not weak_ok:
                    raise ApiError(400, "weak_passphrase", f"not created: {verdict.line}")
                keys = await asyncio.to_thread(self.keystore.create, passphrase, now=self._now)
                log.info("a new identity was created from the web app")
                return keys
            return await asyncio.to_thread(self.keystore.load, passphrase)
        except WrongPassphrase:
            self.stats["wrong"] += 1
            log.warning("a wrong passphrase was tried in the web app")
            await asyncio.sleep(WRONG_PAUSE)
            raise ApiError(
                403, "wrong_passphrase", "that passphrase does not open this identity"
            ) from None
        except KeyStoreError as exc:
            raise ApiError(409, "key_file", str(exc)) from None
