"""The Dockerfile for the HTTP transport. Docker itself does not run here, so what can be checked without
it is: the file parses; it runs as a non-root user with a health check; it bakes in no secret; every
file it copies exists and is not ignored; what its build stage copies is enough to build the wheel; and
its health check passes against the real HTTP server and fails when it should."""

from __future__ import annotations

import fnmatch
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser
from pydantic import SecretStr

from moondream_emulator.serve import serving_app
from moondream_mcp.config import Settings
from moondream_mcp.http_transport import http_app
from moondream_mcp.server import build_server

ROOT = Path(__file__).resolve().parent.parent
HEALTHCHECK = ROOT / "docker" / "healthcheck.py"
TOKEN = "t0k3n-for-the-health-check-0123456789"


def _stages() -> list[list[dict]]:
    """The Dockerfile's instructions, one list per FROM."""
    stages: list[list[dict]] = []
    for instruction in DockerfileParser(path=str(ROOT / "Dockerfile")).structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    return stages


def _values(stage: list[dict], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def _copied(stage: list[dict]) -> list[str]:
    """Sources of the stage's COPY instructions that come from the build context."""
    sources = []
    for value in _values(stage, "COPY"):
        parts = value.split()
        if not any(p.startswith("--from") for p in parts):
            sources += [p for p in parts[:-1] if not p.startswith("--")]
    return sources


def test_the_image_runs_as_a_non_root_user_with_a_health_check_and_serves_http() -> None:
    final = _stages()[-1]
    users = _values(final, "USER")
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert [i["instruction"] for i in final].index("USER") < [i["instruction"] for i in final].index("ENTRYPOINT")
    assert _values(final, "HEALTHCHECK") and "moondream-mcp-healthcheck" in _values(final, "HEALTHCHECK")[0]
    entry = _values(final, "ENTRYPOINT")[0]
    assert '"--transport", "http"' in entry and '"--host", "0.0.0.0"' in entry
    assert _values(final, "EXPOSE") == ["8000"]


def test_no_secret_is_baked_into_the_image() -> None:
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    assert not {"MOONDREAM_API_KEY", "MOONDREAM_MCP_TOKEN"} & (set(parser.envs) | set(parser.args))


def test_every_file_the_dockerfile_copies_exists_and_is_not_ignored() -> None:
    ignored = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip() and line[0] != "#"
    ]
    sources = [s for stage in _stages() for s in _copied(stage)]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not [pattern for pattern in ignored if fnmatch.fnmatch(source, pattern)], source


def test_what_the_build_stage_copies_is_enough_to_build_the_wheel(tmp_path: Path) -> None:
    context = tmp_path / "src"
    context.mkdir()
    for source in _copied(_stages()[0]):
        copy = shutil.copytree if (ROOT / source).is_dir() else shutil.copy2
        copy(ROOT / source, context / Path(source).name)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert [p.name.split("-")[0] for p in (tmp_path / "wheels").iterdir()] == ["mcp_server_moondream"]


@contextmanager
def _serving_http(settings: Settings) -> Iterator[str]:
    """The server as the image runs it (HTTP on all interfaces, with a token), on a free local port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app = http_app(build_server(settings), settings, host="0.0.0.0", port=port)
    with serving_app(app, port=port, lifespan="on") as origin:
        yield f"{origin}/mcp"


def _check(url: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **({"MOONDREAM_MCP_TOKEN": token} if token else {})}
    return subprocess.run([sys.executable, str(HEALTHCHECK), url], capture_output=True, text=True, timeout=30, env=env)


@pytest.fixture
def with_token(settings: Settings) -> Settings:
    return settings.model_copy(update={"token": SecretStr(TOKEN)})


def test_the_health_check_passes_against_the_server_it_guards(with_token: Settings) -> None:
    with _serving_http(with_token) as url:
        done = _check(url, TOKEN)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("healthy: ")


def test_the_health_check_fails_when_its_token_is_refused_or_nothing_listens(with_token: Settings) -> None:
    with _serving_http(with_token) as url:
        refused = _check(url, "not-the-token")
    gone = _check(url, TOKEN)  # the server has stopped
    assert (refused.returncode, gone.returncode) == (1, 1)
    assert "HTTP 401" in refused.stderr and gone.stderr.startswith("unhealthy: no answer")
