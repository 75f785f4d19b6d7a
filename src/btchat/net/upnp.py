"""UPnP-IGD port mapping: the asyncio shell of :class:`btchat.net.portmap.PortMapper`.

The core decides; this runs its requests through ``async-upnp-client`` (SSDP search,
the gateway's description, the WANIPConnection/WANPPPConnection actions), one at a time
and each bounded in time, and feeds the outcome back. When no UPnP gateway answers, the
default gateway is asked in PCP (``net/pcp.py``, RFC 6887) and, when it does not speak
PCP, in NAT-PMP (``net/natpmp.py``, RFC 6886); the mappings then go through whichever
answered. A PCP gateway that restarts (its epoch, or its unsolicited ANNOUNCE, says so)
gets our mappings again. A network without a gateway, a gateway that refuses, or one
that stops answering all end as a state in ``status``, never as an exception to the
daemon.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import aiohttp
from async_upnp_client.aiohttp import AiohttpRequester
from async_upnp_client.client_factory import UpnpFactory
from async_upnp_client.exceptions import UpnpActionError, UpnpError
from async_upnp_client.profiles.igd import IgdDevice
from async_upnp_client.search import SsdpSearchListener

from btchat.net.gateway_udp import SERVER_PORT, default_gateway_here, local_ip_towards
from btchat.net.natpmp import NatPmpClient, NatPmpError
from btchat.net.pcp import (
    ANNOUNCE_DELAY,
    CLIENT_PORT,
    AnnounceListener,
    PcpClient,
    PcpError,
    PcpUnsupported,
)
from btchat.net.portmap import (
    AddMapping,
    Changed,
    DeleteMapping,
    Discover,
    PortMapper,
    PortMapState,
)

__all__ = ["REQUEST_TIMEOUT", "UpnpPortMapper", "description_url_ok", "local_ip_towards"]

log = logging.getLogger(__name__)

#: One SOAP request to the gateway (description, AddPortMapping...) at most this long.
REQUEST_TIMEOUT = 5.0
#: Deleting our mappings on exit takes at most this long in all: a gone gateway must not
#: hold up a shutdown.
CLOSE_TIMEOUT = 3.0
DESCRIPTION = "btchat"
#: Gateways remembered from one search (anyone on the LAN may answer).
MAX_GATEWAYS = 8
#: After the first gateway answers a search, how long others may still answer.
SEARCH_GRACE = 0.2
#: What a gateway (or anything answering on the LAN) can make a request end in: each is
#: a state the core hears about, never an exception out of the shell.
FAILURES = (OSError, TimeoutError, UpnpError, aiohttp.ClientError, ValueError, KeyError)


class UpnpPortMapper:
    """Maps ``ports`` ({"UDP": p, "TCP": q}) on the LAN's gateway while running.

    ``host`` is the address our sockets are bound to ("0.0.0.0": the one on the route to
    the gateway is used). ``on_change`` hears every new :class:`PortMapState`.
    """

    def __init__(
        self,
        core: PortMapper,
        *,
        host: str = "0.0.0.0",
        on_change: Callable[[PortMapState], None] | None = None,
        pmp_ports: tuple[int, int] = (SERVER_PORT, CLIENT_PORT),
    ) -> None:
        self.core = core
        self.pmp_ports = pmp_ports  # PCP/NAT-PMP: the gateway's port, ours for ANNOUNCE
        self.host = host
        self.on_change = on_change
        self.loop = asyncio.get_running_loop()
        self._device: Any = None  # async_upnp_client IgdDevice
        self._natpmp: NatPmpClient | None = None  # when the gateway speaks NAT-PMP instead
        self._pcp: PcpClient | None = None  # ... or PCP
        self._announces: AnnounceListener | None = None
        self._client_ip: str | None = None
        self._wake = asyncio.Event()
        self._closed = False

    @property
    def state(self) -> PortMapState:
        return self.core.state()

    async def run(self) -> None:
        """Drive the core until cancelled (the owner cancels, then calls :meth:`close`)."""
        self.core.start(self.loop.time())
        while True:
            await self._drain()
            when = self.core.get_timer()
            self._wake.clear()
            delay = None if when is None else max(0.0, when - self.loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self.core.handle_timer(self.loop.time())

    async def close(self) -> None:
        """Delete our mappings on the gateway, bounded by :data:`CLOSE_TIMEOUT`."""
        if self._closed:
            return
        self._closed = True
        if self._announces is not None:
            self._announces.close()
        self.core.close(self.loop.time())
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self._drain()
        except TimeoutError:
            log.info("the gateway did not confirm removing our port mappings in time")

    @property
    def dropped(self) -> int:
        """Datagrams from the gateway's side that answered nothing we asked."""
        listener = 0 if self._announces is None else self._announces.dropped
        return sum(c.dropped for c in (self._natpmp, self._pcp) if c is not None) + listener

    # ------------------------------------------------------------- requests

    async def _drain(self) -> None:
        while (event := self.core.next_event()) is not None:
            if isinstance(event, Changed):
                self._report(event.state)
            elif isinstance(event, Discover):
                await self._discover(event)
            elif isinstance(event, AddMapping):
                await self._add(event)
            elif isinstance(event, DeleteMapping):
                await self._delete(event)

    def _report(self, state: PortMapState) -> None:
        mapped = ", ".join(
            f"{p} {state.external_ip}:{g.external_port}" for p, g in state.mappings.items()
        )
        log.info("port mapping: %s%s", state.phase, f" ({mapped})" if mapped else "")
        if self.on_change is not None:
            self.on_change(state)

    async def _discover(self, event: Discover) -> None:

        now = self.loop.time
        source = None if self.host in ("0.0.0.0", "") else (self.host, 0)
        try:
            locations = await self._search(source, event.timeout)
        except FAILURES as exc:
            self.core.gateway_missing(f"UPnP search failed: {exc}", now())
            return
        if not locations:
            await self._discover_pcp_or_natpmp()
            return
        location = locations[0]
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT * 2):
                factory = UpnpFactory(AiohttpRequester(timeout=int(REQUEST_TIMEOUT)))
                device = IgdDevice(await factory.async_create_device(location), None)
                external = await device.async_get_external_ip_address()
            gateway_host = urlparse(location).hostname or ""
            self._client_ip = self.host if source else local_ip_towards(gateway_host)
        except FAILURES as exc:
            self.core.gateway_missing(f"the gateway at {location} did not answer: {exc}", now())
            return
        self._use(device=device)
        self.core.gateway_found(location, _valid_ip(external), now())

    def _use(self, *, device: Any = None, natpmp: NatPmpClient | None = None,
             pcp: PcpClient | None = None) -> None:  # fmt: skip
        """Speak to the gateway through this from now on."""
        self._device, self._natpmp, self._pcp = device, natpmp, pcp
        if self._announces is not None:
            self._announces.close()
            self._announces = None

    async def _use_pcp(self, pcp: PcpClient) -> None:
        """PCP from now on, hearing the gateway's announcements."""
        self._use(pcp=pcp)
        self._announces = await AnnounceListener.start(
            pcp.gateway,
            pcp.client_ip,
            lambda epoch: self._announced(pcp, epoch),
            ports=self.pmp_ports,
        )

    def _announced(self, pcp: PcpClient, epoch: int) -> None:
        """The gateway's unsolicited ANNOUNCE: if its epoch says it lost its state, map
        again after a random delay of up to 5 s (RFC 6887 section 14.1.3)."""
        now = self.loop.time()
        if self._pcp is pcp and not pcp.epoch.valid(epoch, now):
            log.info("the PCP gateway restarted: mapping our ports again")
            self.core.gateway_restarted(now, pcp.rng.uniform(0, ANNOUNCE_DELAY))
            self._wake.set()

    async def _discover_pcp_or_natpmp(self) -> None:
        """No UPnP gateway: the default gateway in PCP, else in NAT-PMP (RFC 6887
        section 9: a NAT-PMP answer or UNSUPP_VERSION means it does not speak PCP)."""
        now = self.loop.time
        gateway = default_gateway_here()
        if gateway is None:
            self.core.gateway_missing("no UPnP gateway answered, and no default route", now())
            return
        host = "0.0.0.0" if self.host in ("0.0.0.0", "") else self.host
        pcp_said = "PCP: not spoken"
        try:
            pcp = PcpClient(gateway, host, self.pmp_ports[0])
            await pcp.probe()
        except PcpUnsupported:
            pass
        except PcpError as exc:  # a PCP gateway that refused the ANNOUNCE: still PCP
            log.info("the PCP gateway answered the probe with %s", exc)
            await self._use_pcp(pcp)
            self.core.gateway_found(f"pcp://{gateway}", None, now())
            return
        except FAILURES as exc:  # silence or "port unreachable": NAT-PMP may yet answer
            pcp_said = f"PCP: {exc or type(exc).__name__}"
        else:
            await self._use_pcp(pcp)
            self.core.gateway_found(f"pcp://{gateway}", None, now())
            return
        client = NatPmpClient(gateway, host, self.pmp_ports[0])
        try:
            external = await client.external_address()
        except (*FAILURES, NatPmpError) as exc:
            self.core.gateway_missing(
                f"no UPnP gateway answered; at {gateway} {pcp_said}; NAT-PMP: {exc}", now()
            )
            return
        self._use(natpmp=client)
        self.core.gateway_found(f"natpmp://{gateway}", _valid_ip(external.ip), now())

    async def _search(self, source: tuple[str, int] | None, timeout: float) -> list[str]:
        """SSDP M-SEARCH for an IGD; the description URLs that answered. Returns soon
        after the first answer instead of always waiting out ``timeout``."""

        found: list[str] = []
        answered = asyncio.Event()

        async def on_response(headers: Any) -> None:
            location = str(headers.get("location") or "")
            if (
                headers.get("st") in IgdDevice.DEVICE_TYPES
                and len(found) < MAX_GATEWAYS
                and description_url_ok(location, str(headers.get("_host") or ""))
            ):
                found.append(location)
                answered.set()

        async def connected() -> None:
            listener.async_search()

        listener = SsdpSearchListener(
            async_callback=on_response,
            loop=self.loop,
            source=source,
            timeout=max(1, round(timeout)),  # SSDP MX: whole seconds
            search_target=IgdDevice.DEVICE_TYPES[0],  # IGD:2 gateways answer :1 too
            async_connect_callback=connected,
        )
        await listener.async_start()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await answered.wait()
                    await asyncio.sleep(SEARCH_GRACE)  # a second gateway may answer too
        finally:
            listener.async_stop()
        return sorted(set(found))

    async def _add(self, event: AddMapping) -> None:

        now = self.loop.time
        if self._natpmp is not None:
            await self._add_natpmp(self._natpmp, event)
            return
        if self._pcp is not None:
            await self._add_pcp(self._pcp, event)
            return
        if self._device is None or self._client_ip is None:
            self.core.gateway_missing("no gateway", now())
            return
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                await self._device.async_add_port_mapping(
                    remote_host=ipaddress.IPv4Address("0.0.0.0"),
                    external_port=event.external_port,
                    protocol=event.protocol,
                    internal_port=event.internal_port,
                    internal_client=ipaddress.IPv4Address(self._client_ip),
                    enabled=True,
                    description=DESCRIPTION,
                    lease_duration=timedelta(seconds=event.lease),
                )
        except UpnpActionError as exc:
            self.core.refused(event.protocol, event.external_port, exc.error_code, str(exc), now())
        except FAILURES as exc:
            self.core.gateway_missing(f"the gateway stopped answering: {exc}", now())
        else:
            self.core.added(event.protocol, event.external_port, event.lease, now())

    async def _add_natpmp(self, client: NatPmpClient, event: AddMapping) -> None:
        """A NAT-PMP gateway picks the external port itself (ours is a suggestion) and
        may shorten the lease: the core keeps what it granted."""
        now = self.loop.time
        try:
            got = await client.map(
                event.protocol, event.internal_port, event.external_port, event.lease
            )
        except NatPmpError as exc:
            self.core.refused(event.protocol, event.external_port, exc.code, str(exc), now())
        except FAILURES as exc:
            self.core.gateway_missing(f"the NAT-PMP gateway stopped answering: {exc}", now())
        else:
            self.core.added(event.protocol, got.external_port, got.lifetime, now())

    async def _add_pcp(self, client: PcpClient, event: AddMapping) -> None:
        """As NAT-PMP: the gateway picks the port and the lease; its answer also names
        the external address, and its epoch may say it forgot our other mappings."""
        now = self.loop.time
        lease = event.lease or 86400  # PCP has no permanent mapping (RFC 6887 section 15)
        try:
            got = await client.map(event.protocol, event.internal_port, event.external_port, lease)
        except PcpError as exc:
            self.core.refused(event.protocol, event.external_port, exc.code, str(exc), now())
        except FAILURES as exc:
            self.core.gateway_missing(f"the PCP gateway stopped answering: {exc}", now())
        else:
            if client.restarted:  # the others first; this answer re-made this mapping
                client.restarted = False
                log.info("the PCP gateway's epoch says it restarted: mapping again")
                self.core.gateway_restarted(now())
            self.core.added(event.protocol, got.external_port, got.lifetime, now(), got.external_ip)

    async def _delete(self, event: DeleteMapping) -> None:

        try:
            if self._natpmp is not None:
                await self._natpmp.map(event.protocol, event.internal_port, 0, 0)
            elif self._pcp is not None:
                await self._pcp.map(event.protocol, event.internal_port, event.external_port, 0)
            elif self._device is not None:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    await self._device.async_delete_port_mapping(
                        remote_host=ipaddress.IPv4Address("0.0.0.0"),
                        external_port=event.external_port,
                        protocol=event.protocol,
                    )
        except (*FAILURES, NatPmpError, PcpError) as exc:
            log.info("could not remove the %s port mapping: %s", event.protocol, exc)
        self.core.removed(event.protocol)


def description_url_ok(location: str, sender: str) -> bool:
    """Fetch a description only from the device that answered, over plain HTTP (UPnP
    Device Architecture 1.1 section 1.3.3): an SSDP answer from anyone on the LAN must
    not aim our requests at another host, such as this machine's own local API."""
    try:
        url = urlparse(location)
        host = ipaddress.ip_address(url.hostname or "")
    except ValueError:
        return False
    return url.scheme == "http" and not host.is_loopback and str(host) == sender


def _valid_ip(text: object) -> str | None:
    """The gateway's idea of its external IP, if it is an IPv4 address at all."""
    try:
        return str(ipaddress.IPv4Address(str(text))) if text else None
    except ValueError:
        return None
