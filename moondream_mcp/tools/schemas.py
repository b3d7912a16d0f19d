"""Input schemas as the model reads them. Every tool's name, description and input schema are sent in every
conversation, so the schema pydantic generates is trimmed here, in one place, to what a model needs:

- no `title` keys (the property names say it);
- an optional parameter is a nullable type (`"type": ["integer", "null"]`), not `anyOf [type, null]` with a
  null default: strict-mode clients, which must send every parameter, send null for "not given", and
  everyone else leaves it out; an optional flag is off unless given, so a `false` default goes unsaid;
- objects with declared properties do not repeat `additionalProperties: false` (the tools refuse unknown keys
  all the same, and strict-mode converters add it back);
- no lower bound a model knows without being told: not negative (`minimum: 0`), positive (`exclusiveMinimum: 0`,
  or `minimum: 1` on an integer), not empty (`minItems: 1`, `minLength: 1`). The arguments are checked against
  them all the same, as against NonEmpty below; every upper bound stays, and so does a lower bound that gives a
  shape (`minItems: 4` of a box);
- no `$defs`: every `$ref` is written out where it is used, so strict-mode converters (the OpenAI Agents SDK)
  take every schema without falling back.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator

NULL = {"type": "null"}
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "not")
# Lower bounds left unsaid at these values (minimum: at 0, and at 1 on an integer).
_LOWER_BOUNDS = {"minimum": 0, "exclusiveMinimum": 0, "minItems": 1, "minLength": 1}


def lean_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` trimmed as described above; the argument is left as it was."""
    defs = schema.get("$defs", {})
    root = {k: v for k, v in schema.items() if k != "$defs"}
    return _lean(root, defs, ())


def _lean(node: dict[str, Any], defs: dict[str, Any], expanding: tuple[str, ...]) -> dict[str, Any]:
    node = {k: v for k, v in node.items() if not (k == "title" and isinstance(v, str))}
    ref = node.pop("$ref", None)
    if isinstance(ref, str):
        name = ref.removeprefix("#/$defs/")
        if name in expanding or name not in defs:
            raise ValueError(f"cannot write out {ref}: {'recursive' if name in expanding else 'not in $defs'}")
        # The use site's own keys (its description) win over the definition's.
        node = {**_lean(defs[name], defs, (*expanding, name)), **node}
    if node.get("default", ...) is None and isinstance(node.get("anyOf"), list) and NULL in node["anyOf"]:
        rest = [option for option in node.pop("anyOf") if option != NULL]
        del node["default"]
        if len(rest) == 1:
            node = _nullable({**_lean(rest[0], defs, expanding), **node})
        else:
            node["anyOf"] = rest
    if node.get("default") is False and node.get("type") == "boolean":
        del node["default"]
    if node.get("additionalProperties") is False and node.get("properties"):
        del node["additionalProperties"]
    for key in [k for k in _LOWER_BOUNDS if _goes_without_saying(node, k)]:
        del node[key]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: _lean(prop, defs, expanding) for name, prop in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_lean(option, defs, expanding) for option in value]
        elif key in _SCHEMA_VALUES and isinstance(value, dict):
            out[key] = _lean(value, defs, expanding)
        else:
            out[key] = value
    return out


def _goes_without_saying(node: dict[str, Any], key: str) -> bool:
    value = node.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if key == "minimum":
        kinds = node.get("type")
        return value == 0 or (value == 1 and "integer" in (kinds if isinstance(kinds, list) else [kinds]))
    return value == _LOWER_BOUNDS[key]


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    # Strict-mode clients must send every parameter; null is how they leave an optional one out.
    kind = node.get("type")
    if isinstance(kind, str):
        node["type"] = [kind, "null"]
        if isinstance(node.get("enum"), list):
            node["enum"] = [*node["enum"], None]
    return node


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


# A string that must say something. Checked rather than published as minLength: every model knows an id or a
# question cannot be empty, and the keyword on every such parameter would cost context in every conversation.
NonEmpty = Annotated[str, AfterValidator(_non_empty)]
