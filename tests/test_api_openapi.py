"""The hand-written OpenAPI document must stay in step with the routes actually served."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from btchat.api.fake import FakeMessenger
from btchat.api.openapi import openapi_document
from btchat.api.server import ALL_ROUTES, PUBLIC_PATHS, make_app
from btchat.api.web_routes import is_web_path

HTTP_METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}

#: Operations whose body is bytes (a file, a picture), not JSON.
RAW_BODIES = {"uploadFile", "uploadChannelFile", "scanQr"}


def registered_routes() -> set[tuple[str, str]]:
    """(path template, method) for every route the app registers."""
    app = make_app(FakeMessenger(), "token")
    routes = set()
    for resource in app.router.resources():
        path = resource.canonical
        for route in resource:
            assert route.method != "*", f"{path}: wildcard routes cannot be documented"
            routes.add((path, route.method.lower()))
    return routes


def documented_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in doc["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def walk_refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in walk_refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in walk_refs(v)]
    return []


def resolve_pointer(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_is_json_and_openapi_31() -> None:
    doc = json.loads(json.dumps(openapi_document(ALL_ROUTES)))
    assert doc["openapi"].startswith("3.1.")
    assert doc["info"]["title"] and doc["info"]["version"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_registered_route_is_documented() -> None:
    missing = registered_routes() - documented_routes(openapi_document(ALL_ROUTES))
    assert not missing, f"routes served but not in openapi.json: {sorted(missing)}"


def test_every_documented_route_is_served() -> None:
    extra = documented_routes(openapi_document(ALL_ROUTES)) - registered_routes()
    assert not extra, f"routes in openapi.json that the server lacks: {sorted(extra)}"


def test_all_refs_resolve() -> None:
    doc = openapi_document(ALL_ROUTES)
    for ref in walk_refs(doc):
        resolve_pointer(doc, ref)


@pytest.mark.parametrize("name", sorted(openapi_document(ALL_ROUTES)["components"]["schemas"]))
def test_component_schemas_are_valid_json_schema(name: str) -> None:
    Draft202012Validator.check_schema(openapi_document(ALL_ROUTES)["components"]["schemas"][name])


def test_operations_are_well_formed() -> None:
    doc = openapi_document(ALL_ROUTES)
    op_ids = []
    for path, item in doc["paths"].items():
        template_params = set(re.findall(r"{(\w+)}", path))
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            op_ids.append(op["operationId"])
            assert op["responses"], f"{method} {path} has no responses"
            params = [
                resolve_pointer(doc, p["$ref"]) if "$ref" in p else p
                for p in op.get("parameters", [])
            ]
            path_params = {p["name"] for p in params if p["in"] == "path"}
            assert path_params == template_params, f"{method} {path}"
            assert all(p["required"] for p in params if p["in"] == "path")
            if "requestBody" in op:  # JSON, or bytes (an upload, a picture)
                content = op["requestBody"]["content"]
                assert "application/json" in content or op["operationId"] in RAW_BODIES
            public = op.get("security") == []
            # What the guard lets through without a token, and nothing else, is public.
            exempt = path in PUBLIC_PATHS or is_web_path(path.replace("{name}", "x"))
            assert public == exempt, f"{method} {path}"
            if not public:
                assert "401" in op["responses"], f"{method} {path} does not document 401"
    assert len(op_ids) == len(set(op_ids)), "operationIds must be unique"


def test_schemas_accept_the_fake_and_reject_bad_bodies() -> None:
    doc = openapi_document(ALL_ROUTES)
    registry = Registry().with_resource(
        "urn:doc", Resource.from_contents(doc, default_specification=DRAFT202012)
    )

    def valid(name: str, instance: Any) -> bool:
        schema = {"$ref": f"urn:doc#/components/schemas/{name}"}
        return Draft202012Validator(schema, registry=registry).is_valid(instance)

    assert valid("NewMessage", {"text": "hi"})
    assert not valid("NewMessage", {"text": ""})
    assert not valid("NewMessage", {"text": "hi", "extra": 1})
    assert not valid("ContactPatch", {"verifed": True})
    assert valid("Event", {"type": "ready"})
    assert valid("Event", {"type": "some-future-kind", "x": 1})
    assert not valid("Event", {"type": "message"})  # a message event needs its message


async def test_served_document_matches_the_module() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    async with TestClient(TestServer(make_app(FakeMessenger(), "token"))) as client:
        resp = await client.get("/openapi.json")
        assert resp.status == 200
        assert resp.content_type == "application/json"
        served = await resp.json()
    expected = openapi_document(ALL_ROUTES)
    assert served["paths"] == expected["paths"]
    assert served["components"] == expected["components"]
