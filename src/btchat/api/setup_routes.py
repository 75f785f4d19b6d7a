"""Creating or unlocking the identity from the web app (``btchat up --in-browser``,
``node/unlock.py``): the only routes a locked daemon answers, besides the page itself.
A daemon that is already unlocked says ``ready`` and takes no attempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from btchat.api.facade import ApiError
from btchat.api.routes import MESSENGER, RouteTable, Unlock, ok

if TYPE_CHECKING:  # the models load on first use (pydantic costs start-up time)
    from btchat.api import models as m

__all__ = ["ROUTES"]

ROUTES = RouteTable()
setup = ROUTES.section("setup")

_READY: dict[str, Any] = {"state": "ready"}


def _unlock(request: web.Request) -> Unlock | None:
    slot = request.app[MESSENGER]
    return None if slot.current is not None else slot.unlock


@setup(
    "GET /v1/setup",
    "getSetup",
    "Whether the identity still has to be created or unlocked in the web app",
    {"200": ("SetupState", "create, unlock, starting or ready.")},
)
async def get_setup(request: web.Request) -> web.Response:
    unlock = _unlock(request)
    return ok(_READY if unlock is None else unlock.state())


@setup(
    "POST /v1/setup",
    "submitSetup",
    "Create the identity with a new passphrase, or unlock it",
    {
        "200": ("SetupState", "Ready: the daemon runs."),
        "400": "BadRequest",
        "403": "Forbidden",
        "409": "Conflict",
    },
    body="SetupRequest",
    description="Creating refuses a weak passphrase unless `weak_ok`; a wrong passphrase "
    "is 403 after a pause of a second. Answers once the daemon runs.",
)
async def submit_setup(request: web.Request, body: m.SetupRequest) -> web.Response:
    unlock = _unlock(request)
    if unlock is None:
        raise ApiError(409, "unlocked", "the identity is already open")
    return ok(await unlock.submit(body.passphrase, weak_ok=body.weak_ok))


@setup(
    "POST /v1/setup/strength",
    "passphraseStrength",
    "How strong a new passphrase is (zxcvbn), before creating the identity with it",
    {"200": ("PassphraseStrength", "The verdict."), "409": "Conflict"},
    body="StrengthRequest",
)
async def passphrase_strength(request: web.Request, body: m.StrengthRequest) -> web.Response:
    unlock = _unlock(request)
    if unlock is None:
        raise ApiError(409, "unlocked", "the identity is already open")
    return ok(await unlock.hint(body.passphrase))
