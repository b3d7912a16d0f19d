"""Dispatch by kind of reference, data URLs, and the cache that lets detect-then-point decode once."""

from __future__ import annotations

import base64
import io
import os
import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from PIL import Image

from moondream_mcp.config import Settings
from moondream_mcp.files import FileGuard, OpenFile
from moondream_mcp.images import ImageError, ImageLoader, PreparedImage, data_urls, encode
from moondream_mcp.images import loader as loader_module
from tests.support.pictures import canvas
from tests.support.samples import BLUE, RED, colour_at, near

pytestmark = pytest.mark.anyio


def png_bytes(colour: str = "red", size: tuple[int, int] = (64, 48)) -> bytes:
    buffer = io.BytesIO()
    canvas(size, squares=((colour, (0.0, 0.0, 1.0, 1.0)),)).save(buffer, "PNG")
    return buffer.getvalue()


def data_url(content: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(content).decode()}"


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Labels of every image actually decoded, counted where the loader hands bytes to the decoder."""
    seen: list[str] = []
    original = loader_module.prepare

    def counting_prepare(data: bytes, *, label: str, **options: Any) -> PreparedImage:
        seen.append(label)
        return original(data, label=label, **options)

    monkeypatch.setattr(loader_module, "prepare", counting_prepare)
    return seen


async def test_loading_the_same_file_twice_decodes_it_once(
    loader: ImageLoader, allowed: Path, decodes: list[str]
) -> None:
    path = allowed / "photo.png"
    path.write_bytes(png_bytes())

    first = await loader.load(str(path))
    second = await loader.load(str(path))

    assert second is first
    assert decodes == [str(path)]


async def test_a_file_read_before_and_unchanged_is_answered_without_a_worker_thread(
    loader: ImageLoader, allowed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = allowed / "photo.png"
    path.write_bytes(png_bytes())
    first = await loader.load(str(path))
    hops: list[object] = []
    real = loader_module.anyio.to_thread.run_sync

    async def counted(fn: object, *args: object, **kwargs: object) -> object:
        hops.append(fn)
        return await real(fn, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loader_module.anyio.to_thread, "run_sync", counted)

    again = await loader.load(str(path))

    assert again is first and hops == []


async def test_a_file_read_under_a_root_since_withdrawn_is_refused_not_answered_from_the_cache(
    tmp_path: Path, allowed: Path
) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "photo.png").write_bytes(png_bytes())
    files = FileGuard([allowed], 1 << 20)
    async with ImageLoader(allowed_dirs=[allowed], files=files) as loader:
        files.set_extra_dirs("client", [root])
        await loader.load(str(root / "photo.png"))
        files.set_extra_dirs("client", [])

        with pytest.raises(ImageError, match="outside the allowed directories"):
            await loader.load(str(root / "photo.png"))


async def test_a_symlink_pointed_elsewhere_is_read_anew(loader: ImageLoader, allowed: Path) -> None:
    (allowed / "red.png").write_bytes(png_bytes("red"))
    (allowed / "blue.png").write_bytes(png_bytes("blue"))
    link = allowed / "current.png"
    link.symlink_to(allowed / "red.png")
    first = await loader.load(str(link))
    link.unlink()
    link.symlink_to(allowed / "blue.png")

    second = await loader.load(str(link))

    assert near(colour_at(first, 0.5, 0.5), RED)
    assert near(colour_at(second, 0.5, 0.5), BLUE)


async def test_rewriting_the_file_invalidates_the_cache(loader: ImageLoader, allowed: Path) -> None:
    path = allowed / "photo.png"
    path.write_bytes(png_bytes("red"))
    first = await loader.load(str(path))
    mtime = path.stat().st_mtime_ns
    path.write_bytes(png_bytes("blue"))
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))  # a coarse clock could otherwise keep the old mtime

    second = await loader.load(str(path))

    assert near(colour_at(first, 0.5, 0.5), RED)
    assert near(colour_at(second, 0.5, 0.5), BLUE)


async def test_replacing_the_file_invalidates_the_cache_even_with_the_same_mtime(
    loader: ImageLoader, allowed: Path
) -> None:
    path = allowed / "photo.png"
    path.write_bytes(png_bytes("red"))
    first = await loader.load(str(path))
    stat = path.stat()
    (allowed / "new.png").write_bytes(png_bytes("blue", (64, 48)))
    os.utime(allowed / "new.png", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(allowed / "new.png", path)

    second = await loader.load(str(path))

    assert second is not first
    assert near(colour_at(second, 0.5, 0.5), BLUE)


async def test_the_cache_forgets_the_least_recently_used_image(allowed: Path, decodes: list[str]) -> None:
    paths = []
    for name in ("a", "b", "c"):
        paths.append(str(allowed / f"{name}.png"))
        Path(paths[-1]).write_bytes(png_bytes())

    async with ImageLoader(allowed_dirs=[allowed], cache_size=2) as images:
        for ref in [paths[0], paths[1], paths[0], paths[2], paths[0], paths[1]]:
            await images.load(ref)

    # a stays warm by use; b is evicted by c and decoded again.
    assert decodes == [paths[0], paths[1], paths[2], paths[1]]


async def test_a_data_url_loads_and_is_cached(loader: ImageLoader, decodes: list[str]) -> None:
    ref = data_url(png_bytes())

    first = await loader.load(ref)
    second = await loader.load(ref)

    assert (first.width, first.height) == (64, 48)
    assert second is first
    assert decodes == ["data:image/png;base64,…"]


async def test_a_line_wrapped_data_url_loads(loader: ImageLoader) -> None:
    encoded = base64.encodebytes(png_bytes()).decode()  # MIME style: a newline every 76 characters

    prepared = await loader.load(f"data:image/png;base64,{encoded}")

    assert (prepared.width, prepared.height) == (64, 48)


async def test_a_100_mb_data_url_is_refused_before_decoding(
    loader: ImageLoader, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[int] = []
    monkeypatch.setattr(data_urls.base64, "b64decode", lambda s, **kw: decoded.append(len(s)) or b"")
    ref = "data:image/png;base64," + "A" * (100 * 1024 * 1024)

    with pytest.raises(ImageError) as caught:
        await loader.load(ref)

    assert str(caught.value) == (
        f"the data URL is too large: data:image/png;base64,… holds over {64 * 1024 * 1024} bytes; "
        "give a smaller image or raise MOONDREAM_MCP_MAX_FILE_BYTES."
    )
    assert decoded == []


async def test_a_data_url_just_over_the_limit_is_refused(allowed: Path) -> None:
    async with ImageLoader(allowed_dirs=[allowed], max_file_bytes=1000) as images:
        await images.load(data_url(png_bytes(size=(4, 4))))
        with pytest.raises(ImageError, match="the data URL is too large"):
            await images.load(data_url(os.urandom(1001)))


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("data:image/png;base64,iVBORw0K!!!!", "the data URL is not valid base64: data:image/png;base64,…"),
        (
            "data:text/html;base64,PHNjcmlwdD4=",
            "not an image data URL: data:text/html;base64,…; the media type must be image/<type>.",
        ),
        (
            "data:image/svg+xml,<svg onload='x'/>",
            "the data URL is not base64-encoded: data:image/svg+xml,…; use data:image/<type>;base64,<data>",
        ),
        (
            "data:image/png;base64",
            "malformed data URL: data:image/png;base64…; expected data:image/<type>;base64,<data>",
        ),
    ],
)
async def test_a_malformed_data_url_is_refused_naming_only_its_prefix(
    loader: ImageLoader, ref: str, message: str
) -> None:
    with pytest.raises(ImageError) as caught:
        await loader.load(ref)

    assert str(caught.value) == message


async def test_a_data_url_that_is_not_an_image_names_only_its_prefix(loader: ImageLoader) -> None:
    with pytest.raises(ImageError) as caught:
        await loader.load(data_url(b"password=hunter2 " * 10))

    assert str(caught.value) == (
        "data:image/png;base64,… is not an image Pillow can read; "
        "give a JPEG, PNG, GIF, WebP, HEIC, AVIF, BMP or TIFF image."
    )


@pytest.mark.parametrize(
    "ref",
    ["ftp://example.com/cat.png", "javascript:alert(1)", "mailto:someone@example.com", "gopher://x/"],
)
async def test_other_kinds_of_reference_are_refused(loader: ImageLoader, ref: str) -> None:
    with pytest.raises(ImageError) as caught:
        await loader.load(ref)

    assert str(caught.value) == (
        f"unsupported image reference: {ref}; give an absolute file path, a file:// URL, "
        "an http(s):// URL or a data:image/...;base64 URL."
    )


@pytest.mark.parametrize("ref", ["", "   ", "\n"])
async def test_an_empty_reference_is_refused(loader: ImageLoader, ref: str) -> None:
    with pytest.raises(ImageError) as caught:
        await loader.load(ref)

    assert str(caught.value) == (
        "the image reference is empty; give an absolute file path, a file:// URL, "
        "an http(s):// URL or a data:image/...;base64 URL."
    )


async def test_a_very_long_reference_is_truncated_in_the_message(loader: ImageLoader, allowed: Path) -> None:
    ref = str(allowed / ("x" * 150)) + "/" + "y" * 150 + ".png"

    with pytest.raises(ImageError) as caught:
        await loader.load(ref)

    assert len(str(caught.value)) < 300
    assert "…" in str(caught.value)


async def test_from_settings_applies_the_pixel_budget_and_allowed_dirs(allowed: Path, tmp_path: Path) -> None:
    settings = Settings(allowed_dirs=[allowed], max_image_pixels=20_000, data_dir=tmp_path / "data")
    canvas((800, 600)).save(allowed / "big.png")

    async with ImageLoader.from_settings(settings) as images:
        prepared = await images.load(str(allowed / "big.png"))

    assert (prepared.width, prepared.height) == (800, 600)
    assert prepared.sent_width * prepared.sent_height <= 20_000
    assert images.allowed_dirs == (allowed.resolve(),)


# ---- bounded work: decode deadline, cancellation, no starvation, memory under concurrency -------------------


def noise_jpeg(path: Path, size: tuple[int, int] = (3000, 2000)) -> Path:
    """Grain everywhere: megabytes of entropy-coded data, read by the decoder block after block."""
    Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)).save(path, quality=95)
    return path


class Reads:
    """Where the decoder has got to in each image, seen from the decoding thread; can hold one still."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.furthest: dict[int, int] = {}
        self.begun = threading.Event()  # a large image is being decoded
        self.hold = threading.Event()  # set: a large image stops reading until released
        self.release = threading.Event()
        original = encode._WatchedBytes.read

        def read(stream: encode._WatchedBytes, size: int | None = -1, /) -> bytes:
            chunk = original(stream, size)
            total = len(stream.getbuffer())
            self.furthest[id(stream)] = max(self.furthest.get(id(stream), 0), stream.tell())
            if total > 1_000_000 and stream.tell() > total // 3:
                self.begun.set()
                if self.hold.is_set():
                    self.release.wait(30)
            return chunk

        monkeypatch.setattr(encode._WatchedBytes, "read", read)


async def test_a_decode_past_its_deadline_is_stopped_and_refused(allowed: Path) -> None:
    path = noise_jpeg(allowed / "grain.jpg")

    async with ImageLoader(allowed_dirs=[allowed], decode_timeout=0.01) as images:
        with pytest.raises(ImageError) as caught:
            await images.load(str(path))
        assert images.decoding.in_use == 0

    assert str(caught.value) == (
        f"decoding {path} took longer than 0.01 s and was stopped; give a smaller or simpler image "
        "(a baseline JPEG or a PNG), or raise MOONDREAM_MCP_DECODE_TIMEOUT."
    )


async def test_a_cancelled_load_stops_decoding_and_frees_its_memory(
    allowed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = noise_jpeg(allowed / "grain.jpg")
    reads = Reads(monkeypatch)
    reads.hold.set()  # the decoder waits mid-file until the call is cancelled: no race with its end

    async with ImageLoader(allowed_dirs=[allowed]) as images:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(images.load, str(path))
                await anyio.to_thread.run_sync(reads.begun.wait, 30)
                tasks.cancel_scope.cancel()
                reads.release.set()
        # The cancelled call returned only once its thread let go: nothing is held, nothing reads on.
        assert (images.decoding.in_use, images.encoded.in_use) == (0, 0)

    assert max(reads.furthest.values()) < path.stat().st_size


async def test_one_slow_image_does_not_hold_up_the_others(allowed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slow = noise_jpeg(allowed / "grain.jpg")
    quick = [canvas((320, 240)) for _ in range(6)]
    for i, picture in enumerate(quick):
        picture.save(allowed / f"quick{i}.png")
    reads = Reads(monkeypatch)
    reads.hold.set()  # the slow image stays mid-decode until the quick ones are done
    done: list[str] = []

    async def load_slow(images: ImageLoader) -> None:
        await images.load(str(slow))
        done.append("slow")

    async with ImageLoader(allowed_dirs=[allowed]) as images:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(load_slow, images)
                await anyio.to_thread.run_sync(reads.begun.wait, 30)
                for i in range(len(quick)):
                    await images.load(str(allowed / f"quick{i}.png"))
                    done.append(f"quick{i}")
                reads.release.set()

    assert done == [f"quick{i}" for i in range(len(quick))] + ["slow"]


async def test_32_concurrent_loads_of_large_files_stay_within_the_memory_budget(
    allowed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted independently of the budget: bytes of files read and not yet decoded, summed over every call.
    paths = [noise_jpeg(allowed / f"grain{i}.jpg", (1500, 1000)) for i in range(4)]
    size = paths[0].stat().st_size
    held = {"now": 0, "peak": 0}
    original_read, original_prepare = OpenFile.read, loader_module.prepare

    def read(opened: OpenFile) -> bytes:
        data = original_read(opened)
        held["now"] += len(data)
        held["peak"] = max(held["peak"], held["now"])
        return data

    def prepare(data: bytes, **options: Any) -> PreparedImage:
        try:
            return original_prepare(data, **options)
        finally:
            held["now"] -= len(data)

    monkeypatch.setattr(OpenFile, "read", read)
    monkeypatch.setattr(loader_module, "prepare", prepare)
    budget = 128 * 1024 * 1024

    async with ImageLoader(allowed_dirs=[allowed], memory_bytes=budget, cache_size=0) as images:
        results: list[PreparedImage] = []

        async def load(path: Path) -> None:
            results.append(await images.load(str(path)))

        with anyio.fail_after(120):
            async with anyio.create_task_group() as tasks:
                for i in range(32):
                    tasks.start_soon(load, paths[i % len(paths)])

    assert len(results) == 32
    assert held["peak"] <= budget // 4
    assert held["peak"] >= 2 * size  # several at once all the same: bounded, not serialized
