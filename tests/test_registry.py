"""server.json for the MCP registry: valid against the registry's published schema, owned through the
README's marker, and telling the same version, package and repository as every other file that says them."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator

import moondream_mcp

ROOT = Path(__file__).resolve().parent.parent
# The registry's schema, vendored (MIT; see tests/schemas/README.md) so that this test runs offline.
SCHEMA = json.loads((ROOT / "tests" / "schemas" / "server.schema.json").read_text(encoding="utf-8"))
SERVER = json.loads((ROOT / "server.json").read_text(encoding="utf-8"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
MANIFEST = json.loads((ROOT / "manifest.json").read_text(encoding="utf-8"))


def _problems(document: dict[str, Any]) -> list[str]:
    validator = Draft7Validator(SCHEMA, format_checker=Draft7Validator.FORMAT_CHECKER)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_server_json_is_valid_against_the_registry_schema() -> None:
    assert SERVER["$schema"] == SCHEMA["$id"]
    assert _problems(SERVER) == []


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"description": "x" * 101}, "description"),
        ({"name": "moondream"}, "name"),
        ({"packages": [{**SERVER["packages"][0], "version": "latest"}]}, "packages/0/version"),
    ],
)
def test_the_schema_refuses_what_the_registry_refuses(change: dict[str, Any], where: str) -> None:
    assert [p for p in _problems({**SERVER, **change}) if p.startswith(where)]


def test_the_readme_carries_the_marker_the_registry_checks_package_ownership_by() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"<!-- mcp-name: {SERVER['name']} -->" in readme


def test_every_file_tells_the_same_version() -> None:
    version = moondream_mcp.__version__
    assert (SERVER["version"], SERVER["packages"][0]["version"], MANIFEST["version"]) == (version,) * 3
    assert re.search(rf"^## \[{re.escape(version)}\]", (ROOT / "CHANGELOG.md").read_text(encoding="utf-8"), re.M)


def test_every_file_names_the_same_package_and_repository() -> None:
    package = SERVER["packages"][0]
    assert (package["registryType"], package["identifier"]) == ("pypi", PYPROJECT["project"]["name"])
    repository = SERVER["repository"]["url"]
    assert PYPROJECT["project"]["urls"]["Repository"] == MANIFEST["repository"]["url"] == repository
    # An io.github.<owner>/… name is granted to whoever signs in as <owner> on GitHub: it must be the repository's.
    owner = re.fullmatch(r"https://github\.com/([^/]+)/[^/]+", repository)
    assert owner and SERVER["name"].startswith(f"io.github.{owner.group(1)}/")
