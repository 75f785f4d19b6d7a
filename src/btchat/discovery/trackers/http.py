"""HTTP(S) tracker announces over aiohttp: one GET, a capped body, a parsed answer.

All protocol work is in :mod:`btchat.discovery.trackers.protocol`; this module only moves bytes
and turns every way the exchange can go wrong (DNS, refused connection, TLS, timeout,
non-200 status, oversized or malformed body) into a :class:`TrackerError`.
"""

from __future__ import annotations

import asyncio

import aiohttp
from yarl import URL

from btchat.discovery.trackers.protocol import (
    MAX_HTTP_RESPONSE,
    AnnounceRequest,
    AnnounceResult,
    TrackerError,
    build_http_announce_url,
    http_failure_reason,
    parse_http_announce_response,
)

__all__ = ["MAX_REDIRECTS", "http_announce"]

#: Redirects we follow (trackers move from http to https); more is a loop or a trap.
MAX_REDIRECTS = 3


async def http_announce(
    url: str,
    request: AnnounceRequest,
    *,
    timeout: float,
    session: aiohttp.ClientSession | None = None,
) -> AnnounceResult:
    """Announce to an ``http://`` or ``https://`` tracker and return its answer.

    ``session`` lets a caller that announces often reuse connections; without one, a
    session lives for this call only. ``timeout`` bounds the whole exchange, DNS and TLS
    included. TLS certificates are verified (aiohttp's default).
    """
    full_url = build_http_announce_url(url, request)
    try:
        async with asyncio.timeout(timeout):
            if session is None:
                async with aiohttp.ClientSession() as own_session:
                    return await _get(own_session, url, full_url, timeout)
            return await _get(session, url, full_url, timeout)
    except TimeoutError:
        raise TrackerError(f"no answer from tracker {url} within {timeout:g} s") from None
    except aiohttp.TooManyRedirects:
        raise TrackerError(f"tracker {url} redirected more than {MAX_REDIRECTS} times") from None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        # ValueError: aiohttp's and yarl's complaints about a URL or header they got.
        detail = str(exc) or type(exc).__name__
        raise TrackerError(f"cannot reach tracker {url}: {detail}") from None


async def _get(
    session: aiohttp.ClientSession, url: str, full_url: str, timeout: float
) -> AnnounceResult:
    # encoded=True: the query is percent-encoded byte by byte already; re-quoting would
    # alter the binary info_hash and peer_id.
    async with session.get(
        URL(full_url, encoded=True),
        allow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        timeout=aiohttp.ClientTimeout(total=timeout),
    ) as response:
        body = await _read_capped(response, url)
        if response.status != 200:
            reason = http_failure_reason(body)
            status = f"HTTP {response.status} {response.reason or ''}".rstrip()
            if reason:
                raise TrackerError(f"tracker {url} refused the announce ({status}): {reason}")
            raise TrackerError(f"tracker {url} answered {status}")
        return parse_http_announce_response(body)


async def _read_capped(response: aiohttp.ClientResponse, url: str) -> bytes:
    """The body, or a TrackerError once it grows past MAX_HTTP_RESPONSE bytes."""
    too_big = TrackerError(f"tracker {url} sent more than {MAX_HTTP_RESPONSE} bytes")
    if response.content_length is not None and response.content_length > MAX_HTTP_RESPONSE:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(16384):
        size += len(chunk)
        if size > MAX_HTTP_RESPONSE:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)
