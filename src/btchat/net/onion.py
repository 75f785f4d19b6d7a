"""An onion service for the session listener, made through Tor's control port (stem).

In Tor mode the session listener is on 127.0.0.1 only, so contacts reach it only
through an onion service. With ``tor_control`` set, the daemon asks Tor for one itself:
``ADD_ONION`` (a v3 service, ed25519) mapping virtual port :data:`VIRTUAL_PORT` to the
loopback listener. The service's private key is kept in the data directory (mode 0600)
and given back to Tor at the next start, so the address stays the same. The service is
not ``Detach``-ed: it lives as long as our control connection, so a daemon that dies
leaves nothing published behind it; a clean stop removes it (``DEL_ONION``).

stem (the Tor Project's controller library) is blocking; its calls run in a thread.
It is imported only when a control port is configured.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path
from typing import Any

from btchat.files import write_atomic

__all__ = ["KEY_FILE", "VIRTUAL_PORT", "OnionError", "OnionService", "check_control"]

log = logging.getLogger(__name__)

#: The port contacts dial at our onion address (fixed, so ``xxx.onion:6881`` is stable
#: whatever local port the listener has).
VIRTUAL_PORT = 6881
#: Where the service's key is kept, in the data directory.
KEY_FILE = "onion_key"
#: Seconds a control-port step may take (Tor answers ADD_ONION at once).
CONTROL_TIMEOUT = 20.0


class OnionError(Exception):
    """The onion service could not be made; the message is meant for a user."""


def check_control(addr: tuple[str, int]) -> tuple[str, int]:
    """A control port must be a loopback IP literal: anything else leaves the machine."""
    try:
        ip = ipaddress.ip_address(addr[0])
    except ValueError:
        ip = None
    if ip is None or not ip.is_loopback:
        raise ValueError("the Tor control port is a loopback IP:PORT, e.g. 127.0.0.1:9051")
    return str(ip), addr[1]


class OnionService:
    """One ephemeral v3 onion service forwarding to ``target`` while we hold the control
    connection."""

    def __init__(self, controller: Any, service_id: str) -> None:
        self._controller = controller
        self.service_id = service_id

    @property
    def address(self) -> str:
        """``xxx.onion:PORT``, what contacts dial (``btchat contact dial``)."""
        return f"{self.service_id}.onion:{VIRTUAL_PORT}"

    @classmethod
    async def start(
        cls, control: tuple[str, int], target: tuple[str, int], data_dir: Path
    ) -> OnionService:
        """Connect, authenticate (cookie or none, as Tor offers), ``ADD_ONION``."""
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT):
                return await asyncio.to_thread(cls._start, control, target, data_dir)
        except TimeoutError:
            raise OnionError(
                f"Tor's control port {control[0]}:{control[1]} did not answer"
            ) from None

    @classmethod
    def _start(
        cls, control: tuple[str, int], target: tuple[str, int], data_dir: Path
    ) -> OnionService:
        try:
            import stem
            from stem.control import Controller
        except ImportError:
            raise OnionError("the onion service needs stem (pip install stem)") from None
        key_path = data_dir / KEY_FILE
        key_type, key = "NEW", "ED25519-V3"
        try:
            saved = key_path.read_text().strip()
        except FileNotFoundError:
            saved = ""
        if saved.startswith("ED25519-V3:"):
            key_type, key = "ED25519-V3", saved.split(":", 1)[1]
        try:
            controller = Controller.from_port(address=control[0], port=control[1])
        except stem.SocketError as exc:
            raise OnionError(f"no Tor control port at {control[0]}:{control[1]}: {exc}") from None
        try:
            controller.authenticate()
            reply = controller.create_ephemeral_hidden_service(
                {VIRTUAL_PORT: f"{target[0]}:{target[1]}"},
                key_type=key_type,
                key_content=key,
                await_publication=False,
                detached=False,
            )
        except (stem.ControllerError, ValueError) as exc:
            controller.close()
            raise OnionError(f"Tor refused the onion service: {exc}") from None
        if key_type == "NEW":
            data_dir.mkdir(parents=True, exist_ok=True)
            blob = f"{reply.private_key_type}:{reply.private_key}\n".encode()
            write_atomic(key_path, blob, mode=0o600)
        log.info("onion service %s.onion:%d -> %s:%d", reply.service_id, VIRTUAL_PORT, *target)
        return cls(controller, reply.service_id)

    def current(self) -> list[str]:
        """The onion services Tor holds for our control connection (``GETINFO``)."""
        text = self._controller.get_info("onions/current", "")
        return [line for line in text.splitlines() if line]

    async def close(self) -> None:
        """``DEL_ONION``, then close the control connection (which would end it anyway)."""
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        try:
            self._controller.remove_ephemeral_hidden_service(self.service_id)
        except Exception as exc:  # Tor went away first: the service went with it
            log.info("removing the onion service: %s", exc)
        finally:
            self._controller.close()
