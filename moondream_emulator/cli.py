"""The emulator's one command line: `python -m moondream_emulator` and `moondream-mcp emulator` both parse here."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

from .app import EmulatorConfig
from .serve import serve_forever

KEYS_ENV = "MOONDREAM_EMULATOR_KEYS"
PROG = "python -m moondream_emulator"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The emulator's flags, for any parser that runs it."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=2021, help="port to listen on (default 2021)")
    parser.add_argument(
        "--keys", default=None, help=f"comma-separated accepted API keys (env {KEYS_ENV}); none: any non-empty key"
    )
    parser.add_argument("--no-auth", action="store_true", help="Station-like: no key, errors as HTTP 200")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added before every answer")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second per key (default none)")
    parser.add_argument(
        "--train-step-seconds", type=float, default=0.0, help="how long each train step takes (default 0)"
    )


def parser(prog: str = PROG) -> argparse.ArgumentParser:
    built = argparse.ArgumentParser(prog=prog, description="A local emulator of the Moondream API.")
    add_arguments(built)
    return built


def config_from_args(
    keys: str | None = None,
    *,
    no_auth: bool = False,
    latency: float = 0.0,
    rate_limit: float | None = None,
    train_step_seconds: float = 0.0,
    environ: Mapping[str, str] | None = None,
) -> EmulatorConfig:
    """An EmulatorConfig from CLI values; `keys` is comma-separated, falling back to $MOONDREAM_EMULATOR_KEYS."""
    if keys is None:
        keys = (os.environ if environ is None else environ).get(KEYS_ENV, "")
    accepted = frozenset(key.strip() for key in keys.split(",") if key.strip())
    return EmulatorConfig(
        keys=accepted,
        no_auth=no_auth,
        latency=latency,
        rate_limit=rate_limit,
        train_step_seconds=train_step_seconds,
    )


def run(args: argparse.Namespace) -> None:
    """Serve in the foreground with the flags of add_arguments, until interrupted."""
    config = config_from_args(
        args.keys,
        no_auth=args.no_auth,
        latency=args.latency,
        rate_limit=args.rate_limit,
        train_step_seconds=args.train_step_seconds,
    )
    serve_forever(args.host, args.port, config)


def main(argv: Sequence[str] | None = None, *, prog: str = PROG) -> None:
    run(parser(prog).parse_args(argv))
