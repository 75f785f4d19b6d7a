"""Our own devices in the local API: the list, and revoking one (issue 13).

Devices are reached through the facade's typed ``Messenger.devices`` part; a messenger
without it answers 501.
"""

from __future__ import annotations

from aiohttp import web

from btchat.api.facade import ApiError, Devices
from btchat.api.routes import RouteTable, messenger, ok, path_param

__all__ = ["ROUTES"]

ROUTES = RouteTable()
devices = ROUTES.section("devices")


def _devices(request: web.Request) -> Devices:
    part = messenger(request).devices
    if part is None:
        raise ApiError(501, "no_devices", "this daemon keeps no device list")
    return part


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
