"""MCP roots: a client's file:// roots are allowed besides the configured directories, and follow its changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp.types import ListRootsResult, Root

from moondream_mcp.config import Settings
from moondream_mcp.server import build_server
from tests.support.calls import call, refusal
from tests.support.pictures import canvas, save

pytestmark = pytest.mark.anyio


class Roots:
    """The client's roots, as it lists them when asked; how many times it was asked."""

    def __init__(self, *uris: str) -> None:
        self.uris = list(uris)
        self.asked = 0

    async def __call__(self, _context: ClientRequestContext) -> ListRootsResult:
        self.asked += 1
        return ListRootsResult(roots=[Root(uri=uri) for uri in self.uris])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory outside the configured ones, holding a picture."""
    path = tmp_path / "project"
    path.mkdir()
    save(canvas(), path / "square.png")
    return path


async def test_a_file_under_a_client_root_becomes_readable(settings: Settings, project: Path, workdir: Path) -> None:
    picture = str(project / "square.png")
    async with Client(build_server(settings), mode="legacy") as without_roots:
        assert "outside the allowed directories" in await refusal(without_roots, "detect", image=picture, object="red")

    roots = Roots(project.as_uri())
    async with Client(build_server(settings), mode="legacy", list_roots_callback=roots) as client:
        assert (await call(client, "detect", image=picture, object="red"))["count"] == 1
        # The configured directory stays allowed: roots add, never replace.
        configured = save(canvas(), workdir / "square.png")
        assert (await call(client, "detect", image=configured, object="red"))["count"] == 1
    assert roots.asked == 1  # asked once, not on every call


@pytest.mark.filterwarnings("ignore:The roots capability is deprecated")
async def test_roots_are_asked_again_after_the_client_says_they_changed(
    settings: Settings, project: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    elsewhere = save(canvas(), other / "square.png")
    roots = Roots(project.as_uri())
    async with Client(build_server(settings), mode="legacy", list_roots_callback=roots) as client:
        assert (await call(client, "detect", image=str(project / "square.png"), object="red"))["count"] == 1
        assert "outside the allowed directories" in await refusal(client, "detect", image=elsewhere, object="red")

        roots.uris = [other.as_uri()]
        await client.session.send_roots_list_changed()
        assert (await call(client, "detect", image=elsewhere, object="red"))["count"] == 1
        text = await refusal(client, "detect", image=str(project / "square.png"), object="red")

    assert "outside the allowed directories" in text
    assert roots.asked == 2


async def test_a_root_that_is_not_a_local_directory_allows_nothing(
    settings: Settings, project: Path, tmp_path: Path
) -> None:
    roots = Roots(
        "file://otherhost" + project.as_posix(),
        (project / "square.png").as_uri(),  # a file, not a directory
        (tmp_path / "missing").as_uri(),
    )
    async with Client(build_server(settings), mode="legacy", list_roots_callback=roots) as client:
        text = await refusal(client, "detect", image=str(project / "square.png"), object="red")
    assert "outside the allowed directories" in text
    assert roots.asked == 1


@pytest.mark.filterwarnings("ignore:Pydantic serializer warnings")
async def test_roots_that_break_the_protocol_are_ignored_and_the_call_goes_on(
    settings: Settings, project: Path, workdir: Path
) -> None:
    async def listing(_context: ClientRequestContext) -> ListRootsResult:
        # Roots must be file:// URIs; a client that sends another kind has its listing refused whole.
        return ListRootsResult(roots=[Root.model_construct(uri="https://example.com" + project.as_posix())])

    configured = save(canvas(), workdir / "square.png")
    async with Client(build_server(settings), mode="legacy", list_roots_callback=listing) as client:
        assert (await call(client, "detect", image=configured, object="red"))["count"] == 1
        text = await refusal(client, "detect", image=str(project / "square.png"), object="red")
    assert "outside the allowed directories" in text


async def test_connections_of_the_2026_protocol_have_no_roots_and_calls_go_on(
    settings: Settings, project: Path, workdir: Path
) -> None:
    roots = Roots(project.as_uri())
    configured = save(canvas(), workdir / "square.png")
    async with Client(build_server(settings), mode="auto", list_roots_callback=roots) as client:
        assert (await call(client, "detect", image=configured, object="red"))["count"] == 1
    assert roots.asked == 0


async def test_inside_a_client_root_a_symlink_out_and_a_hidden_folder_are_still_refused(
    settings: Settings, project: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.mkdir()
    save(canvas(), secret / "square.png")
    (project / "escape.png").symlink_to(secret / "square.png")
    (project / ".private").mkdir()
    save(canvas(), project / ".private" / "square.png")
    roots = Roots(project.as_uri())
    async with Client(build_server(settings), mode="legacy", list_roots_callback=roots) as client:
        escaped = await refusal(client, "detect", image=str(project / "escape.png"), object="red")
        hidden = await refusal(client, "detect", image=str(project / ".private" / "square.png"), object="red")
    assert "outside the allowed directories" in escaped
    assert "hidden" in hidden
