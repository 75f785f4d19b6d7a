"""The settings a front end may change, in the local API, each route declared once:
the view (what runs, what the next start takes, from where) and saving changes to the
config file. A messenger without the ``settings`` part answers 501.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from btchat.api.facade import SettingsPart
from btchat.api.routes import RouteTable, ok, part

if TYPE_CHECKING:  # the models load on first use (pydantic costs start-up time)
    from btchat.api import models as m

__all__ = ["ROUTES"]

ROUTES = RouteTable()
settings = ROUTES.section("settings")


def _settings(request: web.Request) -> SettingsPart:
    return part(request, "settings", "no_settings", "this daemon has no config file to change")


@settings(
    "GET /v1/settings",
    "getSettings",
    "The network settings: what runs now and what the next start takes",
    {"200": ("SettingsView", "The settings.")},
)
async def get_settings(request: web.Request) -> web.Response:
    return ok(await _settings(request).view())


@settings(
    "PUT /v1/settings",
    "saveSettings",
    "Write settings to the config file (they take effect at the next start)",
    {"200": ("SettingsView", "The settings after the change."), "400": "BadRequest",
     "409": "Conflict"},
    body="SettingsRequest",
    description="Only the keys given change; null puts one back to its default. The file "
    "keeps its comments; one that does not parse is reported (409) and left as it is.",
)  # fmt: skip
async def save_settings(request: web.Request, body: m.SettingsRequest) -> web.Response:
    return ok(await _settings(request).save(body.model_dump(include=body.model_fields_set)))
