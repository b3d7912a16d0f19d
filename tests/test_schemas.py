"""Every tool's input schema survives the strict-mode conversion agent frameworks apply, and every
parameter, nested ones too, tells the model what it is for.

OpenAI's function calling in strict mode (the default of the OpenAI Agents SDK's function tools) takes
only a subset of JSON Schema, and the SDK converts each tool's schema with `ensure_strict_json_schema`
before sending it. `strict()` below is a local re-implementation of that conversion's documented rules
(the SDK is not a test dependency):

- every object is closed: `additionalProperties` becomes false, and an object that allows extra keys
  (a free-form dict such as `{"additionalProperties": {"type": "number"}}`) cannot be converted at all;
- every property becomes required (optional ones stay nullable through their `anyOf [..., null]`);
- `null` defaults are dropped; `oneOf` becomes `anyOf`; a one-entry `allOf` is merged in;
- a `$ref` with sibling keys is inlined, so it must resolve inside the schema's own `$defs`.

On top of the conversion, keywords strict mode documents as unsupported, and that the conversion passes
through untouched, are refused here. (`minLength` / `maxLength` are passed through by the SDK and
accepted by today's API, so they are not on that list.)
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from mcp.types import Tool

from moondream_mcp.config import Settings
from moondream_mcp.server import build_server

UNSUPPORTED = frozenset(
    {
        "not",
        "if",
        "then",
        "else",
        "dependentRequired",
        "dependentSchemas",
        "patternProperties",
        "unevaluatedProperties",
        "unevaluatedItems",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "contains",
    }
)


class NotStrict(Exception):
    pass


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema as the Agents SDK would send it in strict mode; raises NotStrict where it would refuse."""
    root = copy.deepcopy(schema)
    return _strict(root, root, "#")


def _resolve(root: dict[str, Any], ref: str) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise NotStrict(f"$ref {ref!r} does not point inside the schema")
    node: Any = root
    for key in ref[2:].split("/"):
        if not isinstance(node, dict) or key not in node:
            raise NotStrict(f"$ref {ref!r} does not resolve")
        node = node[key]
    if not isinstance(node, dict):
        raise NotStrict(f"$ref {ref!r} resolves to {node!r}, not a schema")
    return node


def _strict(node: dict[str, Any], root: dict[str, Any], where: str) -> dict[str, Any]:
    for defs in ("$defs", "definitions"):
        for name, sub in (node.get(defs) or {}).items():
            _strict(sub, root, f"{where}/{defs}/{name}")
    if node.get("type") == "object":
        if node.get("additionalProperties"):
            raise NotStrict(
                f"{where}: an open object (additionalProperties={node['additionalProperties']!r}) cannot be made strict"
            )
        node["additionalProperties"] = False
    if isinstance(node.get("properties"), dict):
        node["required"] = list(node["properties"])
        node["properties"] = {k: _strict(v, root, f"{where}/properties/{k}") for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = _strict(node["items"], root, f"{where}/items")
    if isinstance(node.get("anyOf"), list):
        node["anyOf"] = [_strict(v, root, f"{where}/anyOf/{i}") for i, v in enumerate(node["anyOf"])]
    if isinstance(node.get("oneOf"), list):
        node["anyOf"] = [
            *node.get("anyOf", []),
            *(_strict(v, root, f"{where}/oneOf/{i}") for i, v in enumerate(node.pop("oneOf"))),
        ]
    if isinstance(node.get("allOf"), list):
        if len(node["allOf"]) == 1:
            node.update(_strict(node.pop("allOf")[0], root, f"{where}/allOf/0"))
        else:
            node["allOf"] = [_strict(v, root, f"{where}/allOf/{i}") for i, v in enumerate(node["allOf"])]
    if "default" in node and node["default"] is None:
        del node["default"]
    ref = node.get("$ref")
    if ref is not None:
        target = _resolve(root, ref)  # a lone $ref is kept, but must still resolve
        if len(node) > 1:
            merged = {**target, **node}
            del merged["$ref"]
            node.clear()
            node.update(merged)
            return _strict(node, root, where)
    return node


# Values under these keys are data, not schemas: nothing inside them is walked.
DATA_KEYS = ("enum", "const", "default", "required", "examples")


def _nodes(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object in `node`, with its JSON-pointer-ish location."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from _nodes(item, f"{where}/{i}")
    elif isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            if key not in DATA_KEYS:
                yield from _nodes(value, f"{where}/{key}")


def problems(schema: dict[str, Any]) -> list[str]:
    """What the strict schema still gets wrong: open or partly-required objects, unsupported keywords."""
    found: list[str] = []
    for where, node in _nodes(schema):
        for keyword in UNSUPPORTED & node.keys():
            found.append(f"{where}: {keyword} is not supported in strict mode")
        if len(node.get("allOf", [])) > 1:
            found.append(f"{where}: allOf is not supported in strict mode")
        if node.get("type") == "object":
            if node.get("additionalProperties") is not False:
                found.append(f"{where}: object is not closed")
            if sorted(node.get("required", [])) != sorted(node.get("properties", {})):
                found.append(f"{where}: not every property is required")
        if "$ref" in node:
            try:
                _resolve(schema, node["$ref"])
            except NotStrict as exc:
                found.append(f"{where}: {exc}")
    return found


def undescribed(schema: dict[str, Any]) -> list[str]:
    """Properties, at any depth ($defs included), with no description for the model to read."""
    missing: list[str] = []
    for where, node in _nodes(schema):
        for name, prop in (node.get("properties") or {}).items():
            described = prop.get("description") or (
                "$ref" in prop and _resolve(schema, prop["$ref"]).get("description")
            )
            if not (isinstance(described, str) and described.strip()):
                missing.append(f"{where}/properties/{name}")
    return missing


# Free values bounded by design elsewhere: image references by MOONDREAM_MCP_MAX_FILE_BYTES, judged before a
# byte is decoded; rewards and metric values may be any number (non-finite ones are refused before any tool).
BOUNDED_ELSEWHERE = frozenset({"image", "images", "rewards", "value"})


def unbounded(schema: dict[str, Any]) -> list[str]:
    """Strings without maxLength, numbers without a maximum, arrays without maxItems: room for absurd input."""
    found: list[str] = []
    for where, node in _nodes(schema):
        parts = where.split("/")
        named = [parts[i + 1] for i, part in enumerate(parts[:-1]) if part == "properties"]
        if named and named[-1] in BOUNDED_ELSEWHERE:
            continue
        kind = node.get("type")
        if kind == "string" and "maxLength" not in node and "enum" not in node and "const" not in node:
            found.append(f"{where}: a string without maxLength")
        elif kind in ("integer", "number") and not {"maximum", "exclusiveMaximum", "enum", "const"} & node.keys():
            found.append(f"{where}: a number without a maximum")
        elif kind == "array" and "maxItems" not in node:
            found.append(f"{where}: an array without maxItems")
    return found


def _tools() -> list[Tool]:
    import anyio

    return anyio.run(build_server(Settings()).list_tools)


TOOLS = _tools()


@pytest.mark.parametrize("tool", [pytest.param(tool, id=tool.name) for tool in TOOLS])
def test_the_input_schema_converts_to_strict_mode(tool: Tool) -> None:
    converted = strict(tool.input_schema)
    assert problems(converted) == []


@pytest.mark.parametrize("tool", TOOLS, ids=[t.name for t in TOOLS])
def test_every_parameter_is_described(tool: Tool) -> None:
    assert undescribed(tool.input_schema) == []
    assert tool.description and tool.description.strip()


def test_the_conversion_closes_objects_and_requires_every_property() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "description": "A."},
            "b": {"anyOf": [{"$ref": "#/$defs/Point"}, {"type": "null"}], "default": None, "description": "B."},
            "c": {"$ref": "#/$defs/Point", "description": "C."},
        },
        "required": ["a"],
        "$defs": {"Point": {"type": "object", "properties": {"x": {"type": "number", "description": "X."}}}},
    }

    converted = strict(schema)

    assert converted["required"] == ["a", "b", "c"] and converted["additionalProperties"] is False
    assert "default" not in converted["properties"]["b"]
    assert converted["properties"]["c"] == {
        "type": "object",
        "description": "C.",
        "additionalProperties": False,
        "properties": {"x": {"type": "number", "description": "X."}},
        "required": ["x"],
    }
    assert converted["$defs"]["Point"]["additionalProperties"] is False
    assert problems(converted) == []


@pytest.mark.parametrize(
    ("schema", "reason"),
    [
        ({"type": "object", "additionalProperties": {"type": "number"}}, "open object"),
        ({"type": "object", "properties": {"p": {"$ref": "#/$defs/Gone", "description": "P."}}}, "does not resolve"),
    ],
)
def test_the_conversion_refuses_what_strict_mode_cannot_express(schema: dict[str, Any], reason: str) -> None:
    with pytest.raises(NotStrict, match=reason):
        strict(schema)


def test_unsupported_keywords_are_found() -> None:
    schema = strict(
        {
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "string"}, "contains": {"const": "x"}, "description": "T."}
            },
        }
    )
    assert problems(schema) == ["#/properties/tags: contains is not supported in strict mode"]


@pytest.mark.parametrize("tool", TOOLS, ids=[t.name for t in TOOLS])
def test_every_free_value_has_an_upper_bound_in_the_schema(tool: Tool) -> None:
    assert unbounded(tool.input_schema) == []


def test_unbounded_values_are_found() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "count": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 9}},
            "kind": {"type": "string", "enum": ["a", "b"]},
            "image": {"type": "string"},
        },
    }

    assert unbounded(schema) == [
        "#/properties/name: a string without maxLength",
        "#/properties/count/anyOf/0: a number without a maximum",
        "#/properties/tags: an array without maxItems",
    ]
