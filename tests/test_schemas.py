"""What every tool costs a model and what strict clients make of it: the model-facing size of each toolset
within budget, every input schema converted to strict mode by the OpenAI Agents SDK itself (no fallback),
every parameter described, every output field typed, one timestamp convention.

Model-facing size = name + description + input schema as compact JSON, in tokens of 4 characters: what a
client sends the model in every conversation before the user says a word.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from agents.mcp import MCPServerStdio, MCPUtil
from mcp.types import Tool

from moondream_mcp.config import Settings
from moondream_mcp.server import build_server
from moondream_mcp.tools.schemas import lean_schema

# Tokens. The issue's limits are 6000 for every tool together and 1600 for vision. The other shares are each
# toolset's size when they were set (tuning 1475, batch 758, training 1978, video 543) with a little room; they
# add up to more than the 6000 leaves them, so the total, checked on its own, is what binds: a toolset that
# grows past the room is paid for by trimming another.
BUDGETS = {"vision": 1600, "tuning": 1500, "batch": 780, "training": 2000, "video": 560}
ALL_TOOLS = 6000

# Keywords strict mode documents as unsupported, which the SDK's conversion passes through untouched.
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
# Values under these keys are data, not schemas: nothing inside them is walked.
DATA_KEYS = ("enum", "const", "default", "required", "examples")


def _listed(settings: Settings) -> list[Tool]:
    return anyio.run(build_server(settings).list_tools)


def _toolsets() -> dict[str, list[Tool]]:
    """Each toolset's tools as listed, enable_toolset (listed when some toolset is off) under its own name."""
    everything = {t.name: t for t in _listed(Settings())}
    sets: dict[str, list[Tool]] = {}
    for toolset in build_server(Settings()).toolsets:
        alone = _listed(Settings(toolsets=[toolset]))
        sets[toolset] = [everything[t.name] for t in alone if t.name != "enable_toolset"]
        sets.setdefault("enable_toolset", [t for t in alone if t.name == "enable_toolset"])
    return sets


TOOLSETS = _toolsets()
TOOLS = [tool for tools in TOOLSETS.values() for tool in tools]


def tokens(tool: Tool) -> float:
    facing = {"name": tool.name, "description": tool.description, "inputSchema": tool.input_schema}
    return len(json.dumps(facing, separators=(",", ":"), ensure_ascii=False)) / 4


def test_the_tools_stay_within_their_share_of_the_context() -> None:
    sizes = {name: sum(tokens(t) for t in tools) for name, tools in TOOLSETS.items()}
    total = sum(sizes.values())
    print("\nmodel-facing size, tokens (chars / 4):")
    for name, tools in TOOLSETS.items():
        print(f"  {name:15s} {sizes[name]:7.0f}  ({len(tools)} tools; budget {BUDGETS.get(name, '-')})")
    print(f"  {'all':15s} {total:7.0f}  ({len(TOOLS)} tools; budget {ALL_TOOLS})")
    print(f"  vision-only server: {sizes['vision'] + sizes['enable_toolset']:.0f}")

    over = {name: round(size) for name, size in sizes.items() if size > BUDGETS.get(name, ALL_TOOLS)}
    assert over == {} and total <= ALL_TOOLS, (sizes, total)


def test_every_tool_belongs_to_exactly_one_toolset() -> None:
    names = [t.name for t in TOOLS]
    assert sorted(names) == sorted({t.name for t in _listed(Settings())} | {"enable_toolset"})
    assert len(names) == len(set(names))


@pytest.mark.parametrize("tool", [pytest.param(tool, id=tool.name) for tool in TOOLS])
def test_the_openai_agents_sdk_takes_the_input_schema_in_strict_mode(tool: Tool) -> None:
    # The SDK's own path for an MCP tool: it converts the schema, and silently falls back to non-strict
    # when the conversion fails. The server object is only consulted for settings, never connected.
    server = MCPServerStdio(params={"command": "moondream-mcp"}, name="moondream")
    function_tool = MCPUtil.to_function_tool(tool, server, convert_schemas_to_strict=True)

    assert function_tool.strict_json_schema is True
    assert unsupported(function_tool.params_json_schema) == []


@pytest.mark.parametrize("tool", [pytest.param(tool, id=tool.name) for tool in TOOLS])
def test_a_strict_client_can_still_leave_an_optional_parameter_out(tool: Tool) -> None:
    # Strict mode makes every parameter required: one without a default must then accept null (a flag, false).
    server = MCPServerStdio(params={"command": "moondream-mcp"}, name="moondream")
    strict = MCPUtil.to_function_tool(tool, server, convert_schemas_to_strict=True).params_json_schema
    optional = set(tool.input_schema["properties"]) - set(tool.input_schema.get("required", []))
    stuck = [
        name
        for name in sorted(optional)
        if "default" not in tool.input_schema["properties"][name]
        and not {"null", "boolean"} & types_of(strict["properties"][name], {})
    ]
    assert stuck == []


@pytest.mark.parametrize("tool", [pytest.param(tool, id=tool.name) for tool in TOOLS])
def test_every_parameter_is_described(tool: Tool) -> None:
    assert undescribed(tool.input_schema) == []
    assert tool.description and tool.description.strip()


@pytest.mark.parametrize("tool", [pytest.param(tool, id=tool.name) for tool in TOOLS])
def test_input_schemas_carry_no_titles_null_unions_or_definitions(tool: Tool) -> None:
    text = json.dumps(tool.input_schema)
    assert '"title"' not in text.replace('"title": {', "")
    assert '{"type": "null"}' not in text
    assert "$defs" not in text and "$ref" not in text


@pytest.mark.parametrize("tool", [pytest.param(tool, id=tool.name) for tool in TOOLS if tool.output_schema])
def test_every_output_field_has_a_type(tool: Tool) -> None:
    assert untyped(tool.output_schema or {}) == []


@pytest.mark.parametrize("tool", [pytest.param(tool, id=tool.name) for tool in TOOLS if tool.output_schema])
def test_timestamps_are_unix_milliseconds(tool: Tool) -> None:
    schema = tool.output_schema or {}
    defs = schema.get("$defs", {})
    for where, name, prop in properties(schema):
        # count_over_time is a series, not a moment
        if name.endswith("_at") or (name.endswith("_time") and not name.endswith("_over_time")):
            pytest.fail(f"{where}.{name}: a timestamp is named *_at_ms and holds Unix milliseconds")
        if name.endswith("_at_ms"):
            assert types_of(prop, defs) <= {"integer", "null"}, f"{where}.{name}"


def test_leaning_writes_out_refs_and_turns_null_unions_into_nullable_types() -> None:
    schema = {
        "title": "args",
        "type": "object",
        "properties": {
            "title": {"title": "Title", "type": "string", "description": "A parameter named title stays."},
            "box": {"anyOf": [{"$ref": "#/$defs/Box"}, {"type": "null"}], "default": None, "description": "B."},
            "flag": {"type": "boolean", "default": False, "title": "Flag", "description": "F."},
            "mode": {"type": "string", "enum": ["a", "b"], "default": "a", "description": "M."},
            "pick": {"anyOf": [{"enum": ["a", "b"], "type": "string"}, {"type": "null"}], "default": None},
        },
        "required": ["title"],
        "$defs": {
            "Box": {
                "title": "Box",
                "type": "object",
                "properties": {"x": {"type": "number", "title": "X"}},
                "required": ["x"],
                "additionalProperties": False,
            }
        },
    }

    assert lean_schema(schema) == {
        "type": "object",
        "properties": {
            "title": {"type": "string", "description": "A parameter named title stays."},
            "box": {
                "type": ["object", "null"],
                "properties": {"x": {"type": "number"}},
                "required": ["x"],
                "description": "B.",
            },
            "flag": {"type": "boolean", "description": "F."},
            "mode": {"type": "string", "enum": ["a", "b"], "default": "a", "description": "M."},
            "pick": {"enum": ["a", "b", None], "type": ["string", "null"]},
        },
        "required": ["title"],
    }


def test_leaning_refuses_a_recursive_definition() -> None:
    schema = {
        "type": "object",
        "properties": {"node": {"$ref": "#/$defs/Node"}},
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
    }
    with pytest.raises(ValueError, match="recursive"):
        lean_schema(schema)


# ---- walking schemas ------------------------------------------------------------------------------------


def nodes(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object in `node`, with its JSON-pointer-ish location."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            yield from nodes(item, f"{where}/{i}")
    elif isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            if key not in DATA_KEYS:
                yield from nodes(value, f"{where}/{key}")


def properties(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for where, node in nodes(schema):
        for name, prop in (node.get("properties") or {}).items():
            yield where, name, prop


def unsupported(schema: dict[str, Any]) -> list[str]:
    return [f"{where}: {k}" for where, node in nodes(schema) for k in sorted(UNSUPPORTED & node.keys())]


def undescribed(schema: dict[str, Any]) -> list[str]:
    """Parameters with nothing for the model to read. A nested field may lean on its parameter's description
    (the coordinates of a box, the name and value of a metric), so only the top level must describe each."""
    return [
        name
        for name, prop in (schema.get("properties") or {}).items()
        if not (isinstance(prop.get("description"), str) and prop["description"].strip())
    ]


def types_of(prop: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    """The JSON types a property may hold; empty when the schema leaves it open."""
    if "$ref" in prop:
        return types_of(defs[prop["$ref"].rsplit("/", 1)[-1]], defs)
    if "type" in prop:
        return set(prop["type"]) if isinstance(prop["type"], list) else {prop["type"]}
    if "enum" in prop or "const" in prop:
        values = prop.get("enum", [prop.get("const")])
        return {type(v).__name__ for v in values}
    options = prop.get("anyOf") or prop.get("oneOf") or []
    found = [types_of(option, defs) for option in options]
    return set().union(*found) if found and all(found) else set()


def untyped(schema: dict[str, Any]) -> list[str]:
    defs = schema.get("$defs", {})
    return [f"{where}.{name}" for where, name, prop in properties(schema) if not types_of(prop, defs)]


# ---- upper bounds -------------------------------------------------------------------------------------


# Free values bounded by design elsewhere: image references by MOONDREAM_MCP_MAX_FILE_BYTES, judged before a
# byte is decoded; rewards and metric values may be any number (non-finite ones are refused before any tool).
BOUNDED_ELSEWHERE = frozenset({"image", "images", "rewards", "value"})


def unbounded(schema: dict[str, Any]) -> list[str]:
    """Strings without maxLength, numbers without a maximum, arrays without maxItems: room for absurd input."""
    found: list[str] = []
    for where, node in nodes(schema):
        parts = where.split("/")
        named = [parts[i + 1] for i, part in enumerate(parts[:-1]) if part == "properties"]
        if named and named[-1] in BOUNDED_ELSEWHERE:
            continue
        kind = node.get("type")
        kinds = set(kind) if isinstance(kind, list) else {kind}  # a nullable type is a list of types
        if "string" in kinds and "maxLength" not in node and "enum" not in node and "const" not in node:
            found.append(f"{where}: a string without maxLength")
        elif kinds & {"integer", "number"} and not {"maximum", "exclusiveMaximum", "enum", "const"} & node.keys():
            found.append(f"{where}: a number without a maximum")
        elif "array" in kinds and "maxItems" not in node:
            found.append(f"{where}: an array without maxItems")
    return found


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
            "note": {"type": ["string", "null"]},
        },
    }

    assert unbounded(schema) == [
        "#/properties/name: a string without maxLength",
        "#/properties/count/anyOf/0: a number without a maximum",
        "#/properties/tags: an array without maxItems",
        "#/properties/note: a string without maxLength",
    ]
