"""Own-device endpoints of the local API, each declared once (served, validated, documented).

Linking a new device: ``POST /v1/devices/link`` opens a one-time code offer (at most one
at a time), ``DELETE`` cancels it; how it ends comes on ``/v1/events``
(``device_linked``, ``device_link_failed``). A messenger without the ``devices`` part
answers 501.
"""

from __future__ import annotations

from aiohttp import web

from btchat.api.facade import ApiError, Devices
from btchat.api.routes import RouteTable, messenger, no_content, ok

__all__ = ["ROUTES"]

ROUTES = RouteTable()
devices = ROUTES.section("devices")


def _devices(request: web.Request) -> Devices:
    part = messenger(request).devices
    if part is None:
        raise ApiError(501, "no_devices", "this daemon does not link devices")
    return part


@devices(
    "POST /v1/devices/link",
    "linkDevice",
    "Show a one-time code that links a new device to this identity",
    {"201": ("LinkOffer", "The offer: give its code to `btchat device join`."), "409": "Conflict"},
    description="The code is good for one attempt and 10 minutes. The new device receives "
    "the identity key, the contact book and the profile (not channels or history).",
)
async def link_device(request: web.Request) -> web.Response:
    return ok(await _devices(request).link(), 201)


@devices(
    "DELETE /v1/devices/link",
    "cancelLink",
    "Cancel the open link offer",
    {"204": {"description": "Cancelled."}, "404": "NotFound"},
)
async def cancel_link(request: web.Request) -> web.Response:
    await _devices(request).cancel_link()
    return no_content()
