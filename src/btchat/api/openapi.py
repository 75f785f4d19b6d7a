"""The OpenAPI 3.1 description of the local API, served at ``/openapi.json``.

How this works: nothing here repeats a shape. The paths come from the route
declarations the server registers (``server.ALL_ROUTES``, passed in), the component
schemas from the pydantic models those routes name (``models.py``, ``events.py``),
generated as JSON Schema 2020-12, the dialect OpenAPI 3.1 uses. What is left by hand
is the prose: info, the shared parameters and the shared error responses. The tests
check that every served route is described and that real responses validate against
these schemas. The server imports this module when the document is first asked for:
nothing here is needed to start.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from btchat import __version__
from btchat.api.events import EVENT_MODELS, FRAME_MODELS
from btchat.api.facade import (
    DEFAULT_LIMIT,
    MAX_CHANNEL_REF,
    MAX_LIMIT,
    MAX_QUERY_CHARS,
    MAX_REF_CHARS,
)
from btchat.api.handlers import DEFAULT_RECEIVE_TIMEOUT, MAX_RECEIVE_TIMEOUT
from btchat.api.models import RESPONSE_MODELS
from btchat.api.routes import RouteTable, model, schema_ref

__all__ = ["openapi_document"]

Schema = dict[str, Any]


def _param(
    name: str, where: str, schema: Schema, description: str, *, required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": required or where == "path",
        "description": description,
        "schema": schema,
    }


_PARAMETERS: dict[str, Any] = {
    "contact": _param(
        "contact",
        "path",
        {"type": "string", "minLength": 1, "maxLength": MAX_REF_CHARS},
        "Petname, ID, `btchat:` URI or hex public key, percent-encoded.",
    ),
    "limit": _param(
        "limit",
        "query",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "Most rows to return.",
    ),
    "before": _param(
        "before",
        "query",
        {"type": "integer", "minimum": 0},
        "Only messages with a Lamport number below this (paging backwards).",
    ),
    "q": _param(
        "q",
        "query",
        {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS},
        "Full-text query.",
        required=True,
    ),
    "searchContact": _param(
        "contact",
        "query",
        {"type": "string", "minLength": 1, "maxLength": MAX_REF_CHARS},
        "Only this conversation.",
    ),
    "requestId": _param(
        "id", "path", {"type": "string", "minLength": 1, "maxLength": 128}, "The request's id."
    ),
    "assetName": _param(
        "name",
        "path",
        {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[a-z0-9_][a-z0-9._-]*$"},
        "A file of the web app.",
    ),
    "timeout": _param(
        "timeout",
        "query",
        {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_RECEIVE_TIMEOUT,
            "default": DEFAULT_RECEIVE_TIMEOUT,
        },
        "Seconds to wait for a message.",
    ),
    "channel": _param(
        "channel",
        "path",
        {"type": "string", "minLength": 1, "maxLength": MAX_CHANNEL_REF},
        "Channel name, or at least 8 hex digits of its id.",
    ),
    "device": _param(
        "device",
        "path",
        {"type": "string", "minLength": 4, "maxLength": 32, "pattern": "^[0-9a-fA-F]+$"},
        "A device id in hex, or a unique prefix of at least 4 digits.",
    ),
    "transfer": _param(
        "transfer",
        "path",
        {"type": "string", "minLength": 6, "maxLength": 32},
        "A transfer's id (the offer's message id, hex), or a unique prefix of 6+ digits.",
    ),
    "channelFile": _param(
        "file",
        "path",
        {"type": "string", "minLength": 6, "maxLength": 32},
        "A channel file's id (its message id, hex), or a unique prefix of 6+ digits.",
    ),
    "uploadName": _param(
        "name",
        "query",
        {"type": "string", "minLength": 1, "maxLength": 1024},
        "The file's name; the offer's is made safe and cut to 255 UTF-8 bytes.",
        required=True,
    ),
    "fileId": _param(
        "id",
        "query",
        {"type": "string", "minLength": 6, "maxLength": 32},
        "A finished download's transfer id.",
        required=True,
    ),
    "token": _param(
        "token",
        "query",
        {"type": "string"},
        "The API token, for WebSocket clients (browsers) that cannot set "
        "headers. Accepted on /v1/events only.",
    ),
}


_ERROR_CONTENT = {"application/json": {"schema": schema_ref("Error")}}
_RESPONSES: dict[str, Any] = {
    "Error": {
        "description": "Any other failure: 400 bad input, 404 unknown contact, 409 "
        "conflict, 413 body too large, 503 not ready, ...",
        "content": _ERROR_CONTENT,
    },
    "BadRequest": {
        "description": "Malformed JSON, unknown fields, or values out of bounds.",
        "content": _ERROR_CONTENT,
    },
    "Unauthorized": {"description": "Missing or wrong bearer token.", "content": _ERROR_CONTENT},
    "Forbidden": {
        "description": "A Host or Origin header that is not loopback (DNS "
        "rebinding or cross-site request).",
        "content": _ERROR_CONTENT,
    },
    "NotFound": {"description": "No such contact or request.", "content": _ERROR_CONTENT},
    "Conflict": {"description": "Name taken, already a contact, ...", "content": _ERROR_CONTENT},
    "NotImplemented": {"description": "Not available in this version.", "content": _ERROR_CONTENT},
    "Unreachable": {
        "description": "Nobody answered there, or the proxy failed (the message says which).",
        "content": _ERROR_CONTENT,
    },
}


@functools.cache
def _schemas(routes: RouteTable) -> dict[str, Schema]:
    """JSON Schema for every model a route or event names, keyed by class name."""
    models: list[type[BaseModel]] = [
        *(model(name) for name in routes.models()),
        *RESPONSE_MODELS,
        *EVENT_MODELS.values(),
        *FRAME_MODELS,
    ]
    _, top = models_json_schema(
        [(model, "validation") for model in dict.fromkeys(models)],
        ref_template="#/components/schemas/{model}",
    )
    return top["$defs"]


def openapi_document(routes: RouteTable) -> dict[str, Any]:
    """The document of ``routes``; a fresh copy, so a caller may change it freely."""
    schemas = copy.deepcopy(_schemas(routes))
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "info": {
            "title": "btchat local API",
            "version": __version__,
            "summary": "Drive a running btchat daemon from the CLI, scripts and front ends.",
            "description": (
                "Listens on 127.0.0.1 only. Every endpoint except this document needs "
                "`Authorization: Bearer <token>`; the daemon writes the URL to `api.json` "
                "and the token to `api.token` (mode 0600) in its data directory. The web "
                "app served here trades the token once for an HttpOnly, SameSite=Strict "
                "cookie (`POST /v1/web/session`), which counts only on same-origin "
                "requests (`Sec-Fetch-Site: same-origin`). A token in a URL is refused. "
                "Requests "
                "whose `Host` is not loopback, or that carry an `Origin` other than this "
                "server's own (`http://127.0.0.1:<port>` or `http://localhost:<port>`, "
                "same port), are refused with 403. "
                "Bodies are JSON objects of at most 64 KiB; unknown fields are refused. "
                'Errors are `{"error": {"code", "message"}}`.'
            ),
            "license": {"name": "MIT", "identifier": "MIT"},
        },
        "servers": [
            {
                "url": "http://127.0.0.1:{port}",
                "variables": {"port": {"default": "8765", "description": "See `url` in api.json."}},
            }
        ],
        "security": [{"bearer": []}, {"webSession": []}],
        "tags": [
            {"name": t}
            for t in (
                "daemon",
                "contacts",
                "messages",
                "presence",
                "requests",
                "events",
                "aliases",
                "files",
                "devices",
                "settings",
                "setup",
                "channels",
                "web",
            )
        ],
        "paths": routes.paths(),
        "components": {
            "schemas": schemas,
            "parameters": copy.deepcopy(_PARAMETERS),
            "responses": copy.deepcopy(_RESPONSES),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The token from `api.token`.",
                },
                "webSession": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "btchat_session_PORT",
                    "description": (
                        "The web app's cookie, set by `POST /v1/web/session` (PORT is the "
                        "API's port); only on same-origin requests from the page."
                    ),
                },
            },
        },
    }
