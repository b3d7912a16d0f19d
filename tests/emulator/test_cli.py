"""The emulator's one command line, reached as `python -m moondream_emulator` or `moondream-mcp emulator`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import moondream_emulator.cli as emulator_cli
from moondream_emulator import EmulatorConfig, config_from_args
from moondream_mcp import cli as product_cli

FLAGS = ["--host", "0.0.0.0", "--port", "3000", "--keys", "a,b", "--no-auth", "--latency", "0.5", "--rate-limit", "2"]
PRODUCT = Path(product_cli.__file__).parent


def test_the_cli_takes_keys_from_the_flag_or_else_the_environment() -> None:
    assert config_from_args("a, b,,", latency=0.2).keys == frozenset({"a", "b"})
    from_env = config_from_args(None, rate_limit=10, environ={"MOONDREAM_EMULATOR_KEYS": "x,y"})
    assert from_env == EmulatorConfig(keys=frozenset({"x", "y"}), rate_limit=10)
    assert config_from_args(None, no_auth=True, environ={}) == EmulatorConfig(no_auth=True)


def test_the_flags_become_what_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[tuple[str, int, EmulatorConfig]] = []
    monkeypatch.setattr(emulator_cli, "serve_forever", lambda *a: served.append(a))
    monkeypatch.delenv(emulator_cli.KEYS_ENV, raising=False)
    emulator_cli.main(FLAGS)
    emulator_cli.main([])
    assert served == [
        ("0.0.0.0", 3000, EmulatorConfig(keys=frozenset({"a", "b"}), no_auth=True, latency=0.5, rate_limit=2)),
        ("127.0.0.1", 2021, EmulatorConfig()),
    ]


def test_the_product_passes_everything_after_emulator_to_the_emulators_parser() -> None:
    args = product_cli.parser().parse_args(["--log-level", "DEBUG", "emulator", *FLAGS, "--help"])
    assert (args.command, args.log_level, args.emulator_args) == ("emulator", "DEBUG", [*FLAGS, "--help"])


def test_both_commands_show_the_same_help() -> None:
    def help_of(*command: str) -> str:
        done = subprocess.run([sys.executable, *command, "--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    product = help_of("-m", "moondream_mcp", "emulator")
    own = help_of("-m", "moondream_emulator")
    assert product.startswith("usage: moondream-mcp emulator ")
    assert own.startswith(f"usage: {emulator_cli.PROG} ")
    assert "--rate-limit" in own
    # The usage lines wrap by the program's name; the descriptions after them are the same.
    assert product.split("\n\n", 1)[1] == own.split("\n\n", 1)[1]


def test_the_product_imports_the_emulator_only_to_launch_it() -> None:
    def imports_emulator(node: ast.AST) -> bool:
        if isinstance(node, ast.Import):
            return any(alias.name.split(".")[0] == "moondream_emulator" for alias in node.names)
        return isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "moondream_emulator"

    found = []
    for path in sorted(PRODUCT.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        # `moondream-mcp emulator` launches it alone; `serve --emulator` and `demo` behind the server.
        launcher = {"cli.py": "_emulator", "emulated.py": "emulator_settings"}.get(path.name)
        launchers = [f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == launcher]
        allowed = {id(n) for f in launchers for n in ast.walk(f)}
        found += [
            f"{path.relative_to(PRODUCT)}:{n.lineno}"
            for n in ast.walk(tree)
            if imports_emulator(n) and id(n) not in allowed
        ]
    assert found == []
