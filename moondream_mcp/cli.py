"""The console entry: `moondream-mcp [serve]`, `... doctor`, `... demo`, `... emulator`, `... tools`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio

from . import __version__

# Flags that map onto Settings fields; each also has the env var named in config.py.
SERVE_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    ("--api-key", "api_key", {"help": "Moondream API key (env MOONDREAM_API_KEY)"}),
    ("--endpoint", "endpoint", {"help": "API base URL (env MOONDREAM_ENDPOINT)"}),
    ("--timeout", "timeout", {"type": float, "help": "seconds per API request (env MOONDREAM_TIMEOUT)"}),
    (
        "--max-pixels",
        "max_image_pixels",
        {"type": int, "help": "downscale images to this many pixels (env MOONDREAM_MCP_MAX_PIXELS)"},
    ),
    (
        "--allowed-dirs",
        "allowed_dirs",
        {"help": "os.pathsep-separated directories the tools may read (env MOONDREAM_MCP_ALLOWED_DIRS)"},
    ),
    (
        "--allow-private-urls",
        "allow_private_urls",
        {
            "action": "store_const",
            "const": True,
            "help": "let image URLs reach private networks (env MOONDREAM_MCP_ALLOW_PRIVATE_URLS)",
        },
    ),
    ("--data-dir", "data_dir", {"help": "where the server keeps state (env MOONDREAM_MCP_DATA_DIR)"}),
    (
        "--toolsets",
        "toolsets",
        {
            "help": "toolsets to offer, comma-separated: vision, batch, training, tuning or all "
            "(env MOONDREAM_MCP_TOOLSETS)"
        },
    ),
    (
        "--read-only",
        "read_only",
        {
            "action": "store_const",
            "const": True,
            "help": "offer only tools that change nothing remote and spend no more than single calls "
            "(env MOONDREAM_MCP_READ_ONLY)",
        },
    ),
]
# How `serve` is reached, and what answers it. No --token flag: a secret on the command line shows in every
# process list, so the HTTP token comes from MOONDREAM_MCP_TOKEN only.
TRANSPORT_FLAGS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "--transport",
        "transport",
        {
            "choices": ["stdio", "http"],
            "help": "stdio (default; what desktop clients launch) or http (streamable HTTP at http://HOST:PORT/mcp)",
        },
    ),
    ("--host", "host", {"help": "http: address to listen on (default 127.0.0.1; any other needs MOONDREAM_MCP_TOKEN)"}),
    ("--port", "port", {"type": int, "help": "http: port to listen on (default 8000)"}),
    (
        "--emulator",
        "emulator",
        {
            "action": "store_const",
            "const": True,
            "help": "answer from the built-in emulator of the API instead of Moondream: try every tool without a "
            "key (every answer says it is emulated)",
        },
    ),
]


def _settings(args: argparse.Namespace) -> Any:
    from .config import Settings

    given = {field: getattr(args, field) for _, field, _ in SERVE_FLAGS if getattr(args, field) is not None}
    # `serve DIR...` adds to --allowed-dirs: a desktop bundle passes the folders a person picked that way.
    directories = [*([given["allowed_dirs"]] if "allowed_dirs" in given else []), *getattr(args, "directories", [])]
    if directories:
        given["allowed_dirs"] = os.pathsep.join(directories)
    return Settings(**given)


def _serve(args: argparse.Namespace) -> None:
    from .http_transport import HTTPConfigError
    from .server import ToolsetError, serve

    transport = args.transport or "stdio"
    if transport == "stdio" and (args.host is not None or args.port is not None):
        sys.stderr.write("moondream-mcp: --host and --port are for --transport http\n")
        raise SystemExit(2)
    settings = _settings(args)
    try:
        with ExitStack() as stack:
            if args.emulator:
                from .emulated import emulator_settings

                settings = stack.enter_context(emulator_settings(settings))
            serve(
                settings,
                transport=transport,
                host=args.host or "127.0.0.1",
                port=args.port if args.port is not None else 8000,
                emulated_api=bool(args.emulator),
            )
    except (HTTPConfigError, ToolsetError) as exc:
        sys.stderr.write(f"moondream-mcp: {exc}\n")
        raise SystemExit(2) from None


def _doctor(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from .doctor import config_failure, report, run_doctor

    try:
        settings = _settings(args)
    except ValidationError as exc:
        sys.stdout.write(report(config_failure(exc)))
        raise SystemExit(1) from None
    raise SystemExit(anyio.run(run_doctor, settings))


def _demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    raise SystemExit(run_demo(Path(args.output) if args.output else None))


def _emulator(args: argparse.Namespace) -> None:
    # The emulator is its own package, imported only to launch it; its own parser reads its flags.
    from moondream_emulator.cli import main as emulator_main

    emulator_main(args.emulator_args, prog="moondream-mcp emulator")


def _tools(args: argparse.Namespace) -> None:
    from .config import Settings
    from .manifest import tool_manifest
    from .server import ToolsetError, build_server

    try:
        server = build_server(Settings())
    except ToolsetError as exc:
        sys.stderr.write(f"moondream-mcp: {exc}\n")
        raise SystemExit(2) from None
    text = anyio.run(tool_manifest, server)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="moondream-mcp", description="Moondream vision tools over MCP.")
    top.add_argument("--version", action="version", version=f"moondream-mcp {__version__}")
    top.add_argument("--log-level", default=None, help="log level for stderr (default INFO; WARNING for demo)")
    commands = top.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="run the MCP server on stdio (the default) or streamable HTTP")
    doctor = commands.add_parser("doctor", help="check the configuration and the API endpoint, and say what to fix")
    for flag, field, options in SERVE_FLAGS + TRANSPORT_FLAGS:
        top.add_argument(flag, dest=field, default=None, **options)
        # SUPPRESS: an unset flag after `serve` must not erase one given before it.
        serve.add_argument(flag, dest=field, default=argparse.SUPPRESS, **options)
    for flag, field, options in SERVE_FLAGS:
        doctor.add_argument(flag, dest=field, default=argparse.SUPPRESS, **options)
    serve.add_argument(
        "directories", nargs="*", metavar="DIR", help="more directories the tools may read (as --allowed-dirs)"
    )

    demo = commands.add_parser(
        "demo", help="see every vision tool and a short training run work, against the built-in emulator (no key)"
    )
    demo.add_argument("--output", "-o", default=None, help="where to write the pictures (default: a new temp dir)")

    # Everything after `emulator` (--help included) goes as is to the emulator's own parser: no prefix char
    # here, so no argument reads as an option of this one.
    emulator = commands.add_parser(
        "emulator",
        help="run the local Moondream API emulator (for tests, offline use)",
        add_help=False,
        prefix_chars="\0",
    )
    emulator.add_argument("emulator_args", nargs=argparse.REMAINDER)

    tools = commands.add_parser("tools", help="print the tool manifest (tools.json)")
    tools.add_argument("--output", "-o", default=None, help="write to this file instead of stdout")
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    command = args.command or "serve"
    # The demo's own lines are what a person reads; the server's routine logging would bury them.
    level = args.log_level or ("WARNING" if command == "demo" else "INFO")
    # stdout is the protocol in stdio mode: every log line goes to stderr.
    logging.basicConfig(
        stream=sys.stderr, level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per HTTP request is noise at INFO; it stays available at DEBUG.
    if logging.getLogger().level > logging.DEBUG:
        for chatty in ("httpx2", "httpcore2"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    if command == "serve":
        _serve(args)
    elif command == "doctor":
        _doctor(args)
    elif command == "demo":
        _demo(args)
    elif command == "emulator":
        _emulator(args)
    else:
        _tools(args)


if __name__ == "__main__":
    main()
