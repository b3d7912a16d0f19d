"""Pictures that arrive: every picture a tool returns is small, saved as a file, and linked as a resource."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from PIL import Image

from moondream_mcp.config import Settings
from moondream_mcp.files import FileGuard
from moondream_mcp.pictures import BUDGET, Picture, PictureShelf, fit
from tests.support.calls import refusal
from tests.support.pictures import canvas, save

pytestmark = pytest.mark.anyio


def parts(result) -> tuple[bytes, str]:
    """The one picture of a result, and the URI of its resource link."""
    (image,) = [c for c in result.content if c.type == "image"]
    (link,) = [c for c in result.content if c.type == "resource_link"]
    assert link.mime_type == image.mime_type
    return base64.b64decode(image.data), str(link.uri)


async def test_an_annotated_picture_is_saved_in_the_data_directory_and_read_back_as_a_resource(
    client: Client, workdir: Path, settings: Settings
) -> None:
    path = save(canvas(), workdir / "square.png")
    result = await client.call_tool("detect", {"image": path, "object": "red", "annotate": True})

    jpeg, uri = parts(result)
    saved = Path(result.structured_content["picture"])
    assert saved.parent == settings.data_dir / "pictures"
    assert saved.read_bytes() == jpeg
    (contents,) = (await client.read_resource(uri)).contents
    assert (contents.mime_type, base64.b64decode(contents.blob)) == ("image/jpeg", jpeg)


async def test_a_picture_goes_to_save_to_when_given_and_its_link_still_resolves(client: Client, workdir: Path) -> None:
    path = save(canvas(), workdir / "square.png")
    folder = workdir / "marked"
    folder.mkdir()
    result = await client.call_tool("point", {"image": path, "object": "red", "annotate": True, "save_to": str(folder)})

    jpeg, uri = parts(result)
    saved = Path(result.structured_content["picture"])
    assert saved.parent == folder and saved.read_bytes() == jpeg
    (contents,) = (await client.read_resource(uri)).contents
    assert base64.b64decode(contents.blob) == jpeg


async def test_a_save_to_folder_outside_the_allowed_directories_is_refused(
    client: Client, workdir: Path, outside: Path
) -> None:
    path = save(canvas(), workdir / "square.png")
    text = await refusal(client, "detect", image=path, object="red", annotate=True, save_to=str(outside))
    assert "outside the allowed directories" in text
    assert list(outside.iterdir()) == []


async def test_a_picture_without_annotate_is_neither_drawn_nor_saved(
    client: Client, workdir: Path, settings: Settings
) -> None:
    path = save(canvas(), workdir / "square.png")
    result = await client.call_tool("detect", {"image": path, "object": "red"})
    assert [c.type for c in result.content] == ["text"]
    assert result.structured_content["picture"] is None
    assert not (settings.data_dir / "pictures").exists()


async def test_an_unknown_picture_resource_is_not_found(client: Client) -> None:
    with pytest.raises(MCPError, match="no picture named"):
        await client.read_resource("moondream://pictures/detect-20200101-000000-00000000.jpg")


def test_a_picture_over_the_budget_is_reencoded_under_it() -> None:
    noise = Image.effect_noise((1400, 1400), 120).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, "PNG")
    assert len(buffer.getvalue()) * 4 / 3 > BUDGET

    fitted = fit(Picture(buffer.getvalue(), "image/png", kind="chart"))

    assert fitted.mime == "image/jpeg"
    assert len(base64.b64encode(fitted.data)) <= BUDGET
    with Image.open(io.BytesIO(fitted.data)) as opened:
        assert opened.format == "JPEG"


def test_only_the_newest_pictures_are_kept_in_the_data_directory(tmp_path: Path) -> None:
    shelf = PictureShelf(FileGuard([tmp_path], 1 << 20, own_dir=tmp_path), kept=3)
    keep = tmp_path / "pictures" / "notes.txt"  # not a picture of ours: never removed
    keep.parent.mkdir()
    keep.write_text("mine")
    names = [shelf.save(Picture(b"\xff\xd8 not really", "image/jpeg", kind="zoom")).name for _ in range(5)]

    left = sorted(p.name for p in (tmp_path / "pictures").iterdir())
    assert len(left) == 4 and "notes.txt" in left
    assert names[-1] in left


async def test_a_picture_saved_elsewhere_then_replaced_is_no_longer_served(client: Client, workdir: Path) -> None:
    path = save(canvas(), workdir / "square.png")
    folder = workdir / "marked"
    folder.mkdir()
    arguments = {"image": path, "object": "red", "annotate": True, "save_to": str(folder)}
    result = await client.call_tool("detect", arguments)
    _, uri = parts(result)
    saved = Path(result.structured_content["picture"])
    saved.unlink()
    saved.write_text("notes that are not the picture")

    with pytest.raises(MCPError, match="replaced"):
        await client.read_resource(uri)


async def test_a_symlink_planted_among_the_saved_pictures_is_not_followed(
    client: Client, settings: Settings, outside: Path
) -> None:
    secret = outside / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 secret")
    folder = settings.data_dir / "pictures"
    folder.mkdir(parents=True)
    (folder / "detect-20200101-000000-00000000.jpg").symlink_to(secret)

    with pytest.raises(MCPError) as raised:
        await client.read_resource("moondream://pictures/detect-20200101-000000-00000000.jpg")
    assert "secret" not in str(raised.value)


async def test_save_to_a_file_or_a_missing_folder_is_refused_and_nothing_is_written(
    client: Client, workdir: Path
) -> None:
    path = save(canvas(), workdir / "square.png")
    before = Path(path).read_bytes()
    as_file = await refusal(client, "detect", image=path, object="red", annotate=True, save_to=path)
    missing = await refusal(client, "detect", image=path, object="red", annotate=True, save_to=str(workdir / "missing"))
    assert "not a directory" in as_file
    assert "not found" in missing
    assert Path(path).read_bytes() == before
    assert sorted(p.name for p in workdir.iterdir()) == ["square.png"]
