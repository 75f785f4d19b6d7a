"""BitTorrent tracker clients: find the peers of an infohash through HTTP or UDP trackers.

Used to find the members of a chat channel by its infohash, alongside the DHT. One entry
point, :func:`announce`, picks the client from the URL's scheme (``http://``,
``https://``, ``udp://``) and returns an :class:`AnnounceResult`; every failure a
tracker or the network can cause raises :class:`TrackerError` with a message for a user.
Wire formats live in :mod:`btchat.discovery.trackers.protocol` (sans-I/O), the transports in
:mod:`btchat.discovery.trackers.http` and :mod:`btchat.discovery.trackers.udp`.
"""

from __future__ import annotations

import aiohttp

from btchat.discovery.trackers.http import http_announce
from btchat.discovery.trackers.protocol import (
    AnnounceRequest,
    AnnounceResult,
    TrackerError,
    parse_tracker_url,
)
from btchat.discovery.trackers.udp import UdpTrackerClient

__all__ = [
    "DEFAULT_TIMEOUT",
    "AnnounceRequest",
    "AnnounceResult",
    "TrackerError",
    "UdpTrackerClient",
    "announce",
]

#: How long one announce may take, resends included. BEP 15's schedule alone would wait
#: minutes; a caller looking for channel members wants an answer or an error sooner.
DEFAULT_TIMEOUT = 30.0

_default_udp_client: UdpTrackerClient | None = None


def _shared_udp_client() -> UdpTrackerClient:
    """One process-wide client, so connection ids are reused across announces."""
    global _default_udp_client
    if _default_udp_client is None:
        _default_udp_client = UdpTrackerClient()
    return _default_udp_client


async def announce(
    url: str,
    info_hash: bytes,
    peer_id: bytes,
    port: int,
    *,
    event: str = "",
    numwant: int = 50,
    uploaded: int = 0,
    downloaded: int = 0,
    left: int = 0,
    key: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    http_session: aiohttp.ClientSession | None = None,
    udp_client: UdpTrackerClient | None = None,
) -> AnnounceResult:
    """Announce ``(our IP, port)`` for ``info_hash`` to the tracker at ``url``.

    ``event`` is ``""`` (regular), ``"started"``, ``"completed"`` or ``"stopped"``.
    ``key`` should stay the same across one session's announces for an infohash (BEP 7);
    without it a random one is drawn. ``timeout`` bounds the whole announce. A bad
    ``info_hash``/``peer_id``/``port``/``event`` raises ``ValueError`` (caller's
    mistake); everything else that goes wrong raises :class:`TrackerError`.
    """
    if not timeout > 0:
        raise ValueError("timeout must be positive")
    fields: dict[str, int] = {} if key is None else {"key": key}
    request = AnnounceRequest(
        info_hash=info_hash,
        peer_id=peer_id,
        port=port,
        event=event,
        numwant=numwant,
        uploaded=uploaded,
        downloaded=downloaded,
        left=left,
        **fields,
    )
    target = parse_tracker_url(url)
    if target.scheme == "udp":
        client = udp_client if udp_client is not None else _shared_udp_client()
        return await client.announce(url, request, timeout=timeout)
    return await http_announce(url, request, timeout=timeout, session=http_session)
