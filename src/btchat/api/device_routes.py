"""Our own devices in the local API, each route declared once (served, validated,
documented): the list, naming one, revoking one, and linking a new one.

Linking: ``POST /v1/devices/link`` opens a one-time code offer (at most one at a time),
``DELETE`` cancels it; how it ends comes on ``/v1/events`` (``device_linked``,
``device_link_failed``). A messenger without the ``devices`` part answers 501.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from btchat.api.facade import Devices
from btchat.api.routes import RouteTable, no_content, ok, part, path_param

if TYPE_CHECKING:  # the models load on first use (pydantic costs start-up time)
    from btchat.api import models as m

__all__ = ["ROUTES"]

ROUTES = RouteTable()
devices = ROUTES.section("devices")


def _devices(request: web.Request) -> Devices:
    return part(request, "devices", "no_devices", "this daemon keeps no device list")


@devices(
    "POST /v1/devices/link",
    "linkDevice",
    "Show a one-time code that links a new device to this identity",
    {"201": ("LinkOffer", "The offer: give its code to `btchat device join`."), "409": "Conflict"},
    description="The code is good for one attempt and 10 minutes. The new device receives "
    "the identity key, the contact book and the profile; history follows over the devices' "
    "own sync once both run, and so do channels.",
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


@devices(
    "GET /v1/devices",
    "listDevices",
    "Our identity's devices, and those revoked",
    {"200": ("DeviceList", "The devices.")},
)
async def list_devices(request: web.Request) -> web.Response:
    return ok(await _devices(request).list())


@devices(
    "DELETE /v1/devices/{device}",
    "revokeDevice",
    "Revoke another of our devices, for good: contacts stop dialling, accepting and "
    "encrypting to it",
    {
        "200": ("DeviceList", "The devices after the revocation."),
        "400": "BadRequest",
        "404": "NotFound",
        "409": "Conflict",
    },
    params=("device",),
)
async def revoke_device(request: web.Request) -> web.Response:
    return ok(await _devices(request).revoke(path_param(request, "device", 32)))


@devices(
    "PATCH /v1/devices/{device}",
    "renameDevice",
    "Name one of our devices (this one too), on all of them",
    {"200": ("DeviceList", "The devices after the change."), "400": "BadRequest",
     "404": "NotFound", "409": "Conflict"},
    body="DeviceRename",
    params=("device",),
    description="The name goes only to our own devices, never into the device list in the "
    "DHT; the latest change wins on every device.",
)  # fmt: skip
async def rename_device(request: web.Request, body: m.DeviceRename) -> web.Response:
    device = path_param(request, "device", 32)
    return ok(await _devices(request).rename(device, body.name))
