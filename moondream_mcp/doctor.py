"""`moondream-mcp doctor`: check the configuration and the endpoint, and say what to fix.

Each check returns Checks of (ok, message, fix). The report goes to stdout: doctor is run by a person
in a terminal, never by an MCP client, so stdout is not a protocol stream here. Exit status 1 when
anything needs fixing.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from typing import TextIO

from pydantic import ValidationError

from .client import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    MoondreamError,
    NotFoundError,
    Sampling,
)
from .client.base import APIClient
from .client.skills import Skills
from .client.tuning import Tuning
from .config import STATION_ENDPOINT, Settings
from .failures import redact

# A person is waiting: one attempt, a short wait; retries would only delay the verdict.
PROBE_TIMEOUT = 10.0
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Check:
    ok: bool
    message: str
    fix: str | None = None


def _scrub(text: str, settings: Settings) -> str:
    return redact(text, settings.secrets)


async def check_api(settings: Settings) -> list[Check]:
    """Is the endpoint up, and does it take the key?"""
    endpoint = settings.shown_endpoint
    key = settings.api_key.get_secret_value() if settings.api_key else None
    if settings.is_cloud and key is None:
        return [
            Check(
                False,
                "MOONDREAM_API_KEY is not set, and the endpoint is Moondream Cloud",
                "set MOONDREAM_API_KEY to a key from the Moondream console, or set MOONDREAM_ENDPOINT to "
                f"a Moondream Station ({STATION_ENDPOINT})",
            )
        ]
    async with APIClient(
        endpoint=settings.endpoint, api_key=key, timeout=min(settings.timeout, PROBE_TIMEOUT), max_attempts=1
    ) as api:
        try:
            if key is not None:
                # Free, and authenticated: the cheapest call that proves the key.
                try:
                    await Tuning(api).list_finetunes(limit=1)
                    return [Check(True, f"reached {endpoint}"), Check(True, "the API key was accepted")]
                except NotFoundError:
                    pass  # no tuning API here: Moondream Station, or another partial server
            await Skills(api).query("Reply with OK.", settings=Sampling(max_tokens=4))
            return [
                Check(
                    True,
                    f"reached {endpoint} (no tuning API: Moondream Station?); the vision tools work, "
                    "the finetuning and Batch API tools will not",
                )
            ]
        except AuthenticationError as exc:
            return [
                Check(True, f"reached {endpoint}"),
                Check(
                    False,
                    _scrub(f"the API refused the key (HTTP {exc.status_code}): {exc.message}", settings),
                    "check MOONDREAM_API_KEY: copy the key again from the Moondream console, without quotes or spaces"
                    if key
                    else "set MOONDREAM_API_KEY",
                ),
            ]
        except APITimeoutError:
            return [
                Check(
                    False,
                    f"{endpoint} did not answer within {min(settings.timeout, PROBE_TIMEOUT):g} s",
                    _unreachable_fix(settings),
                )
            ]
        except APIConnectionError as exc:
            return [Check(False, _scrub(f"cannot reach {endpoint}: {exc}", settings), _unreachable_fix(settings))]
        except APIStatusError as exc:
            return [
                Check(
                    False,
                    _scrub(f"{endpoint} answered with an error (HTTP {exc.status_code}): {exc.message}", settings),
                    "check MOONDREAM_ENDPOINT: it is the API's base URL, ending in /v1 "
                    f"(cloud: https://api.moondream.ai/v1, Station: {STATION_ENDPOINT})",
                )
            ]
        except MoondreamError as exc:
            return [Check(False, _scrub(f"calling {endpoint} failed: {exc}", settings), _unreachable_fix(settings))]


def _unreachable_fix(settings: Settings) -> str:
    if settings.endpoint.rstrip("/") == STATION_ENDPOINT:
        return "start Moondream Station, or set MOONDREAM_ENDPOINT to where it listens"
    if settings.is_cloud:
        return "check the network connection, and any proxy (HTTPS_PROXY) this machine needs"
    return "check MOONDREAM_ENDPOINT (is that server running?) and the network between here and there"


def check_data_dir(settings: Settings) -> Check:
    """Can the server keep its state where it is told to?"""
    path = settings.data_dir
    fix = "set MOONDREAM_MCP_DATA_DIR to a directory this user can write, or fix its permissions"
    try:
        path.mkdir(parents=True, exist_ok=True)
        # A real write, not os.access: read-only mounts and full disks only show on writing.
        with tempfile.NamedTemporaryFile(dir=path, prefix=".doctor-", delete=True) as probe:
            probe.write(b"ok")
            probe.flush()
    except OSError as exc:
        return Check(False, f"the data directory {path} is not writable: {exc.strerror or exc}", fix)
    return Check(True, f"the data directory {path} is writable")


def check_allowed_dirs(settings: Settings) -> list[Check]:
    """Do the directories the tools may read exist?"""
    fix = f"create it, or fix MOONDREAM_MCP_ALLOWED_DIRS (absolute paths separated by '{os.pathsep}')"
    if not settings.allowed_dirs:
        return [
            Check(
                False,
                "no allowed directories: the tools can read no local file",
                "set MOONDREAM_MCP_ALLOWED_DIRS to the directories holding your images",
            )
        ]
    checks = []
    for path in settings.allowed_dirs:
        if not path.exists():
            checks.append(Check(False, f"the allowed directory {path} does not exist", fix))
        elif not path.is_dir():
            checks.append(Check(False, f"the allowed directory {path} is not a directory", fix))
        elif not os.access(path, os.R_OK | os.X_OK):
            checks.append(
                Check(
                    False,
                    f"the allowed directory {path} cannot be read by this user",
                    "fix its permissions, or remove it from MOONDREAM_MCP_ALLOWED_DIRS",
                )
            )
        else:
            checks.append(Check(True, f"the allowed directory {path} exists"))
    return checks


def check_token(settings: Settings) -> Check:
    """Is the HTTP transport's bearer token worth having?"""
    if settings.token is None:
        return Check(True, "MOONDREAM_MCP_TOKEN is not set: `serve --transport http` will listen on loopback only")
    length = len(settings.token.get_secret_value())
    if length < MIN_TOKEN_CHARS:
        return Check(
            False,
            f"MOONDREAM_MCP_TOKEN is only {length} characters: easy to guess",
            "use a long random secret, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    return Check(True, "MOONDREAM_MCP_TOKEN is set")


async def diagnose(settings: Settings) -> list[Check]:
    return [*await check_api(settings), check_data_dir(settings), *check_allowed_dirs(settings), check_token(settings)]


def report(checks: list[Check]) -> str:
    lines = ["moondream-mcp doctor"]
    for check in checks:
        lines.append(f"  {'ok  ' if check.ok else 'FAIL'}  {check.message}")
        if not check.ok and check.fix:
            lines.append(f"        fix: {check.fix}")
    problems = sum(not c.ok for c in checks)
    lines.append("All checks passed." if not problems else f"{problems} problem{'s' if problems > 1 else ''} found.")
    return "\n".join(lines) + "\n"


def config_failure(error: ValidationError) -> list[Check]:
    """Settings that did not even parse, one Check per bad value, named by its environment variable."""
    described: dict[str, tuple[str, str | None]] = {}  # field name or env var -> (env var, description)
    for field, info in Settings.model_fields.items():
        env = str(next(iter(getattr(info.validation_alias, "choices", None) or [field])))
        described[field] = described[env] = (env, info.description)
    checks = []
    for item in error.errors():
        where = str(item["loc"][0]) if item["loc"] else "configuration"
        env, description = described.get(where, (where, None))
        checks.append(Check(False, f"{env}: {item['msg']}", f"fix {env}" + (f": {description}" if description else "")))
    return checks


async def run_doctor(settings: Settings, out: TextIO | None = None) -> int:
    """Print the report; 0 when everything is fine, 1 otherwise."""
    checks = await diagnose(settings)
    (out or sys.stdout).write(report(checks))
    return 0 if all(c.ok for c in checks) else 1
