"""The attack table, row by row, through the MCP protocol: each hostile argument an agent might be talked
into passing is refused with a clear tool error, within a bounded time, and the API key shows up in no
tool output and no log line.

The guards themselves are tested in depth at the ImageLoader level (tests/images/); these tests prove
that the same guards stand between a tool call and the user's files and network.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp import Client
from pydantic import SecretStr

from moondream_emulator import Emulator, EmulatorConfig, running_emulator
from moondream_mcp.config import Settings
from moondream_mcp.files import FileGuard
from moondream_mcp.images import ImageLoader
from moondream_mcp.server import build_server
from tests.support.keys import API_KEY
from tests.support.pictures import canvas, save
from tests.support.samples import jpeg_bomb, png_bomb
from tests.support.scripted_http import body, declares, drip, endless, redirect, serving

pytestmark = pytest.mark.anyio

NON_PUBLIC = (
    "is a loopback, private, link-local or otherwise non-public address. "
    "Set MOONDREAM_MCP_ALLOW_PRIVATE_URLS=true to allow it."
)
# Every refusal here is decided locally, before any upload: well under a second. The bound is what a
# hang would hit.
BOUND = 20


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record of the test, at DEBUG: the HTTP libraries' too."""
    caplog.set_level(logging.DEBUG)
    # The CLI quietens these two below INFO; an earlier test in the session may have run it.
    for chatty in ("httpx2", "httpcore2"):
        caplog.set_level(logging.DEBUG, logger=chatty)
    return caplog


async def refused(client: Client, logs: pytest.LogCaptureFixture, tool: str, **arguments: object) -> str:
    """The tool error's text, once it is proved an error, in time, without the key anywhere."""
    with anyio.fail_after(BOUND):
        result = await client.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    [content] = result.content
    # "Error executing tool X: <message>" is a deliberate refusal; the bare "Error executing tool X" a crash.
    prefix = f"Error executing tool {tool}: "
    assert content.text.startswith(prefix), content.text
    text = content.text.removeprefix(prefix)
    assert API_KEY not in result.model_dump_json()
    assert logs.records, "no log record was captured: the leak check below would prove nothing"
    leaked = [r for r in logs.records if API_KEY in r.getMessage() or API_KEY in (r.exc_text or "")]
    assert leaked == []
    return text


def outside_message(ref: str, workdir: Path) -> str:
    return (
        f"the file is outside the allowed directories: {ref}; allowed: {workdir}. "
        "Set MOONDREAM_MCP_ALLOWED_DIRS to allow more."
    )


def emulator_port(emulator) -> int:
    return httpx2.URL(emulator.url).port


@pytest.fixture
async def everything_readable(settings: Settings) -> AsyncIterator[Client]:
    """A server told it may read the whole disk: only the deeper guards stand."""
    async with Client(build_server(settings.model_copy(update={"allowed_dirs": [Path("/")]}))) as client:
        yield client


@pytest.fixture
async def private_urls_allowed(settings: Settings) -> AsyncIterator[Client]:
    """A server that may fetch loopback URLs (where the test servers are), with tight fetch limits."""
    tight = settings.model_copy(
        update={"allow_private_urls": True, "fetch_timeout": 1.0, "max_file_bytes": 1024 * 1024}
    )
    async with Client(build_server(tight)) as client:
        yield client


# ---- local files ------------------------------------------------------------------------------


@pytest.mark.parametrize("target_exists", [True, False])
async def test_path_traversal_with_dot_dot_is_refused(
    client: Client, logs, workdir: Path, outside: Path, emulator, target_exists: bool
) -> None:
    if target_exists:
        save(canvas(), outside / "secret.png")
    ref = f"{workdir}/../outside/secret.png"
    # The same answer whether the file exists or not: no oracle for what lies outside.
    assert await refused(client, logs, "detect", image=ref, object="red") == outside_message(ref, workdir)
    assert emulator.emulator.requests == []


@pytest.mark.parametrize("link", ["file", "directory"])
async def test_a_symlink_escaping_the_allowed_directories_is_refused(
    client: Client, logs, workdir: Path, outside: Path, emulator, link: str
) -> None:
    save(canvas(), outside / "secret.png")
    if link == "file":
        (workdir / "innocent.png").symlink_to(outside / "secret.png")
        ref = str(workdir / "innocent.png")
    else:
        (workdir / "album").symlink_to(outside, target_is_directory=True)
        ref = str(workdir / "album" / "secret.png")

    assert await refused(client, logs, "detect", image=ref, object="red") == outside_message(ref, workdir)
    assert emulator.emulator.requests == []


@pytest.mark.parametrize("hidden", [".ssh/id_ed25519.png", ".config/app/avatar.png", "album/.thumbs/cat.png"])
async def test_files_in_hidden_directories_are_refused(
    client: Client, logs, workdir: Path, emulator, hidden: str
) -> None:
    path = workdir / hidden
    path.parent.mkdir(parents=True)
    save(canvas(), path)
    name = next(part for part in Path(hidden).parts if part.startswith("."))

    text = await refused(client, logs, "detect", image=str(path), object="red")
    assert text == (
        f"refused: {path} is inside a hidden file or directory ({name}), where secrets and settings are kept. "
        "To allow it, add that directory itself to MOONDREAM_MCP_ALLOWED_DIRS."
    )
    assert emulator.emulator.requests == []


@pytest.mark.parametrize(
    ("path", "filesystem"),
    [
        ("/proc/self/environ", "proc"),
        ("/proc/self/cmdline", "proc"),
        ("/dev/zero", "dev"),
        ("/dev/urandom", "dev"),
    ],
)
async def test_proc_and_device_files_are_refused_even_when_everything_is_allowed(
    everything_readable: Client, logs, emulator, path: str, filesystem: str
) -> None:
    text = await refused(everything_readable, logs, "detect", image=path, object="red")
    assert text == f"refused: {path} is on a system filesystem ({filesystem}), not a regular file."
    assert emulator.emulator.requests == []


async def test_a_symlink_to_a_device_is_refused(client: Client, logs, workdir: Path, emulator) -> None:
    (workdir / "photo.jpg").symlink_to("/dev/zero")
    ref = str(workdir / "photo.jpg")
    assert await refused(client, logs, "detect", image=ref, object="red") == outside_message(ref, workdir)


async def test_a_fifo_is_refused_without_hanging(client: Client, logs, workdir: Path, emulator) -> None:
    # Opening a FIFO for reading blocks until a writer comes; none ever will. refused() bounds the wait.
    fifo = workdir / "pipe.jpg"
    os.mkfifo(fifo)
    text = await refused(client, logs, "detect", image=str(fifo), object="red")
    assert text == f"refused: {fifo} is a named pipe (FIFO); give the path of a regular file."
    assert emulator.emulator.requests == []


async def test_a_2_gb_sparse_file_is_refused_by_its_size(client: Client, logs, workdir: Path, emulator) -> None:
    huge = workdir / "huge.jpg"
    huge.touch()
    os.truncate(huge, 2 * 1024**3)  # sparse: takes no disk, would take 2 GB of memory to read
    text = await refused(client, logs, "detect", image=str(huge), object="red")
    assert text == (
        f"the file is too large: {huge} is over the limit of {64 * 1024 * 1024} bytes; "
        "give a smaller file or raise MOONDREAM_MCP_MAX_FILE_BYTES."
    )
    assert emulator.emulator.requests == []


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize(
    ("kind", "side", "detail"),
    [
        ("png", 9000, "9000x9000 pixels, over the 64 megapixel limit"),
        ("png", 30000, "its header claims more pixels than Pillow will decode"),
        ("jpeg", 13000, "13000x13000 pixels, over the 160 megapixel limit"),
        ("jpeg", 65000, "its header claims more pixels than Pillow will decode"),
    ],
)
async def test_decompression_bombs_are_refused_before_decoding(
    client: Client, logs, workdir: Path, emulator, kind: str, side: int, detail: str
) -> None:
    make = png_bomb if kind == "png" else jpeg_bomb
    bomb = make(workdir / f"bomb.{kind}", side, side)
    assert bomb.stat().st_size < 2_000_000  # small on disk: the danger is the decoded size

    text = await refused(client, logs, "detect", image=str(bomb), object="red")
    assert text == f"refused: {bomb} is too large to decode safely ({detail}); give a smaller image."
    assert emulator.emulator.requests == []


async def test_a_data_url_of_100_mb_is_refused_unread(client: Client, logs, emulator) -> None:
    ref = "data:image/png;base64," + "A" * (100 * 1024 * 1024)
    text = await refused(client, logs, "detect", image=ref, object="red")
    assert text == (
        f"the data URL is too large: data:image/png;base64,… holds over {64 * 1024 * 1024} bytes; "
        "give a smaller image or raise MOONDREAM_MCP_MAX_FILE_BYTES."
    )
    assert emulator.emulator.requests == []


async def test_non_image_bytes_with_an_image_extension_are_refused_without_echoing_them(
    client: Client, logs, workdir: Path, emulator
) -> None:
    notes = workdir / "holiday.jpg"
    notes.write_text(f"MOONDREAM_API_KEY={API_KEY}\npassword = hunter2\n" * 50)
    text = await refused(client, logs, "caption", image=str(notes))
    assert text == (
        f"{notes} is not an image Pillow can read; give a JPEG, PNG, GIF, WebP, HEIC, AVIF, BMP or TIFF image."
    )
    assert emulator.emulator.requests == []


# ---- URLs: each aimed at the emulator itself where it can be, so its request log is the witness ----------


async def test_a_url_to_127_0_0_1_is_refused_before_connecting(client: Client, logs, emulator) -> None:
    url = f"http://127.0.0.1:{emulator_port(emulator)}/v1/detect"
    assert await refused(client, logs, "detect", image=url, object="red") == (
        f"refused to fetch {url}: 127.0.0.1 {NON_PUBLIC}"
    )
    assert emulator.emulator.requests == []


async def test_a_url_to_ipv6_loopback_is_refused_before_connecting(client: Client, logs, emulator) -> None:
    async with serving("::1") as witness:
        url = f"{witness.url}/cat.png"
        witness.routes["/cat.png"] = body(b"never served")
        assert await refused(client, logs, "detect", image=url, object="red") == (
            f"refused to fetch {url}: ::1 {NON_PUBLIC}"
        )
    assert witness.requests == []
    assert emulator.emulator.requests == []


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("http://10.0.0.1/cat.png", "10.0.0.1"),
        ("http://10.255.255.254:8080/cat.png", "10.255.255.254"),
        ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "169.254.169.254"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "fd00:ec2::254"),
    ],
)
async def test_urls_to_private_and_metadata_addresses_are_refused_before_connecting(
    client: Client, logs, emulator, url: str, address: str
) -> None:
    # Refused on the address alone: no packet is ever sent to these ranges.
    assert await refused(client, logs, "detect", image=url, object="red") == (
        f"refused to fetch {url}: {address} {NON_PUBLIC}"
    )
    assert emulator.emulator.requests == []


@pytest.mark.parametrize("spelling", ["2130706433", "0x7f000001", "017700000001", "127.1", "0x7f.1"])
async def test_decimal_hex_and_octal_spellings_of_loopback_are_refused(
    client: Client, logs, emulator, spelling: str
) -> None:
    url = f"http://{spelling}:{emulator_port(emulator)}/v1/detect"
    assert await refused(client, logs, "detect", image=url, object="red") == (
        f"refused to fetch {url}: {spelling} resolves to 127.0.0.1, which {NON_PUBLIC}"
    )
    assert emulator.emulator.requests == []


@pytest.mark.parametrize("spelling", ["0177.0.0.1", "127.000.000.001"])
async def test_zero_padded_octal_spellings_are_refused_as_invalid(
    client: Client, logs, emulator, spelling: str
) -> None:
    url = f"http://{spelling}:{emulator_port(emulator)}/v1/detect"
    assert await refused(client, logs, "detect", image=url, object="red") == f"not a valid URL: {url}"
    assert emulator.emulator.requests == []


async def test_a_hostname_resolving_to_loopback_is_refused(client: Client, logs, emulator) -> None:
    url = f"http://localhost:{emulator_port(emulator)}/v1/detect"
    text = await refused(client, logs, "detect", image=url, object="red")
    assert text.startswith(f"refused to fetch {url}: localhost resolves to ")
    assert text.endswith(f", which {NON_PUBLIC}")
    assert emulator.emulator.requests == []


def only(*addresses: str):
    allowed = {ipaddress.ip_address(a) for a in addresses}
    return lambda address: address in allowed


@pytest.mark.parametrize("private", ["127.0.0.2", "169.254.169.254"])
async def test_a_redirect_from_an_allowed_host_to_a_private_one_is_refused(
    settings: Settings, logs, emulator, private: str
) -> None:
    # Nothing public is reachable from a test, so the first hop is a loopback server that the image
    # loader is told to treat as public (build_server's `images` seam); every other address keeps the
    # default policy: forbidden.
    def loader(s: Settings, files: FileGuard) -> ImageLoader:
        return ImageLoader(
            allowed_dirs=s.allowed_dirs,
            max_file_bytes=s.max_file_bytes,
            files=files,
            fetch_timeout=s.fetch_timeout,
            address_policy=only("127.0.0.1"),
        )

    async with (
        serving("127.0.0.1") as public,
        serving("127.0.0.2") as witness,
        Client(build_server(settings, images=loader)) as client,
    ):
        target = f"{witness.url}/secret.png" if private == "127.0.0.2" else f"http://{private}/latest/meta-data/"
        public.routes["/cat.png"] = redirect(target)
        url = f"{public.url}/cat.png"
        assert await refused(client, logs, "detect", image=url, object="red") == (
            f"refused to fetch {url}: {private} {NON_PUBLIC}"
        )

    assert [r.path for r in public.requests] == ["/cat.png"]
    assert witness.requests == []
    assert emulator.emulator.requests == []


@pytest.mark.parametrize("handler", ["drip", "silent"])
async def test_an_endless_slow_response_is_cut_off_at_the_time_cap(
    private_urls_allowed: Client, logs, emulator, handler: str
) -> None:
    async with serving() as slow:
        # drip: one byte every 50 ms, forever; silent: announces a body and sends nothing.
        slow.routes["/cat.png"] = drip(0.05) if handler == "drip" else declares(1000)
        url = f"{slow.url}/cat.png"
        with anyio.fail_after(10):  # the fetch timeout is 1 s
            text = await refused(private_urls_allowed, logs, "detect", image=url, object="red")
    assert text == (
        f"downloading {url} took longer than 1 s; try a smaller or faster source, or raise MOONDREAM_MCP_FETCH_TIMEOUT."
    )
    assert emulator.emulator.requests == []


@pytest.mark.parametrize("handler", ["endless", "declared"])
async def test_a_response_larger_than_the_byte_cap_is_refused(
    private_urls_allowed: Client, logs, emulator, handler: str
) -> None:
    async with serving() as big:
        # endless: no Content-Length, bytes as fast as they are read; declared: a header claiming 5 GB.
        big.routes["/cat.png"] = endless() if handler == "endless" else declares(5 * 1024**3)
        url = f"{big.url}/cat.png"
        text = await refused(private_urls_allowed, logs, "detect", image=url, object="red")
    assert text == (
        f"the download is too large: {url} is over the limit of {1024 * 1024} bytes; "
        "give a smaller image or raise MOONDREAM_MCP_MAX_FILE_BYTES."
    )
    assert emulator.emulator.requests == []


# ---- output paths -----------------------------------------------------------------------------


@pytest.fixture
def one_image(workdir: Path) -> str:
    return save(canvas(), workdir / "square.png")


@pytest.mark.parametrize("where", ["outside", "traversal", "symlink", "hidden"])
async def test_batch_output_outside_the_allowed_directories_is_refused(
    client: Client, logs, workdir: Path, outside: Path, emulator, one_image: str, where: str
) -> None:
    if where == "outside":
        output = str(outside / "results.jsonl")
    elif where == "traversal":
        output = f"{workdir}/../outside/results.jsonl"
    elif where == "symlink":
        (workdir / "results.jsonl").symlink_to(outside / "results.jsonl")  # dangling: the write would create it
        output = str(workdir / "results.jsonl")
    else:
        (workdir / ".cache").mkdir()
        output = str(workdir / ".cache" / "results.jsonl")

    text = await refused(client, logs, "batch", skill="detect", images=[one_image], object="red", output=output)
    if where == "hidden":
        assert text.startswith(f"refused: {output} is inside a hidden file or directory (.cache)")
    else:
        assert text == outside_message(output, workdir)
    assert not (outside / "results.jsonl").exists() and not (workdir / ".cache" / "results.jsonl").exists()
    assert emulator.emulator.requests == []


async def test_batch_results_output_outside_the_allowed_directories_is_refused(
    client: Client, logs, workdir: Path, outside: Path, emulator
) -> None:
    output = str(outside / "results.jsonl")
    text = await refused(client, logs, "batch_results", batch_id="batch_123", output=output)
    assert text == outside_message(output, workdir)
    assert not (outside / "results.jsonl").exists()
    assert emulator.emulator.requests == []


@pytest.fixture
def coco(workdir: Path) -> Path:
    """A one-image COCO file inside the allowed directory: a valid source, so only the output is wrong."""
    save(canvas(), workdir / "square.png")
    source = workdir / "instances.json"
    source.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "square.png", "width": 400, "height": 300}],
                "categories": [{"id": 1, "name": "red square"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 60, 100, 120]}],
            }
        )
    )
    return source


async def require_tool(client: Client, name: str) -> None:
    if name not in {t.name for t in (await client.list_tools()).tools}:
        pytest.skip(f"the {name} tool does not exist in this tree")


@pytest.mark.parametrize("where", ["outside", "traversal", "hidden"])
async def test_import_dataset_output_outside_the_allowed_directories_is_refused(
    client: Client, logs, workdir: Path, outside: Path, emulator, coco: Path, where: str
) -> None:
    await require_tool(client, "import_dataset")
    output = {
        "outside": str(outside / "dataset.jsonl"),
        "traversal": f"{workdir}/../outside/dataset.jsonl",
        "hidden": str(workdir / ".git" / "dataset.jsonl"),
    }[where]
    if where == "hidden":
        (workdir / ".git").mkdir()

    text = await refused(client, logs, "import_dataset", source=str(coco), format="coco", output=output)
    if where == "hidden":
        assert text.startswith(f"refused: {output} is inside a hidden file or directory (.git)")
    else:
        assert text == outside_message(output, workdir)
    assert list(outside.iterdir()) == [] and not (workdir / ".git" / "dataset.jsonl").exists()


async def test_import_dataset_source_outside_the_allowed_directories_is_refused(
    client: Client, logs, workdir: Path, outside: Path, coco: Path
) -> None:
    await require_tool(client, "import_dataset")
    stolen = outside / "instances.json"
    stolen.write_text(coco.read_text())
    text = await refused(
        client, logs, "import_dataset", source=str(stolen), format="coco", output=str(workdir / "dataset.jsonl")
    )
    assert text == outside_message(str(stolen), workdir)
    assert not (workdir / "dataset.jsonl").exists()


async def test_evaluate_output_outside_the_allowed_directories_is_refused(
    client: Client, logs, workdir: Path, outside: Path, emulator, coco: Path
) -> None:
    await require_tool(client, "import_dataset")
    await require_tool(client, "evaluate")
    with anyio.fail_after(BOUND):
        made = await client.call_tool(
            "import_dataset", {"source": str(coco), "format": "coco", "output": str(workdir / "dataset.jsonl")}
        )
    assert not made.is_error, made.content[0].text
    emulator.emulator.clear()
    output = str(outside / "per-example.jsonl")

    text = await refused(client, logs, "evaluate", dataset=str(workdir / "dataset.jsonl"), split="all", output=output)
    assert text == outside_message(output, workdir)
    assert list(outside.iterdir()) == []
    assert emulator.emulator.requests == []  # refused before a single example was sent


# ---- no existence oracle ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "argument"),
    [("detect", "image"), ("batch", "images"), ("inspect_dataset", "path"), ("batch", "output")],
)
async def test_a_path_below_a_file_outside_answers_exactly_like_a_missing_one(
    client: Client, logs, workdir: Path, emulator, one_image: str, tool: str, argument: str
) -> None:
    extra: dict[str, object] = {
        "detect": {"object": "red"},
        "batch": {"skill": "caption", **({"images": [one_image]} if argument == "output" else {})},
        "inspect_dataset": {},
    }[tool]
    answers = []
    for ref in ("/etc/passwd/x", "/etc/nopasswd/x", "/etc/passwd", "/root/.ssh/none/x"):
        text = await refused(client, logs, tool, **{argument: ref, **extra})
        answers.append(text.replace(ref, "<path>"))
    assert set(answers) == {outside_message("<path>", workdir)}
    assert emulator.emulator.requests == []


# ---- globs ------------------------------------------------------------------------------------


async def test_three_links_to_dot_do_not_freeze_a_batch_over_a_glob(client: Client, workdir: Path, emulator) -> None:
    shoot = workdir / "shoot"
    (shoot / "day2").mkdir(parents=True)
    save(canvas(), shoot / "a.png")
    save(canvas(), shoot / "day2" / "b.png")
    for name in ("x", "y", "z"):
        (shoot / name).symlink_to(".")

    with anyio.fail_after(BOUND):
        result = await client.call_tool("batch", {"skill": "caption", "images": f"{shoot}/**/*.png", "length": "short"})
    assert not result.is_error, result.content[0].text
    assert (result.structured_content["total"], result.structured_content["succeeded"]) == (2, 2)


@pytest.mark.parametrize("pattern", ["{w}/**/*.png", "{w}/*/*.png", "{w}/*/../../outside/*.png", "{w}/shortcut"])
async def test_a_batch_over_a_glob_never_names_a_file_outside_the_allowed_directories(
    client: Client, workdir: Path, outside: Path, emulator, pattern: str
) -> None:
    save(canvas(), workdir / "mine.png")
    (workdir / "album").mkdir()
    save(canvas(), outside / "payroll-2024.png")
    (workdir / "shortcut").symlink_to(outside, target_is_directory=True)
    (workdir / "album" / "leak.png").symlink_to(outside / "payroll-2024.png")

    with anyio.fail_after(BOUND):
        result = await client.call_tool("batch", {"skill": "caption", "images": pattern.format(w=workdir)})
    assert "payroll" not in result.model_dump_json()
    assert all("/outside/payroll" not in r.path for r in emulator.emulator.requests)


# ---- reading a "dataset" ----------------------------------------------------------------------

SECRET = "hunter2-swordfish"


@pytest.mark.parametrize(
    "content",
    [
        f"db_password = {SECRET}\nAWS_SECRET_ACCESS_KEY={SECRET}\n",
        f'{{"user": "admin", "password": "{SECRET}"}}\n{{"skill": "{SECRET}"}}\n[1, "{SECRET}"]\n',
        f'{{"image": "a.png", "skill": "{SECRET}"}}\n{{"image": {{"x": "{SECRET}"}}, "skill": "detect"}}\n',
    ],
)
async def test_a_file_that_is_not_a_dataset_shows_none_of_its_content(
    client: Client, workdir: Path, emulator, content: str
) -> None:
    notes = workdir / "notes.txt"
    notes.write_text(content)

    with anyio.fail_after(BOUND):
        report = await client.call_tool("inspect_dataset", {"path": str(notes)})
        refusals = [
            await client.call_tool("evaluate", {"dataset": str(notes), "split": "all"}),
            await client.call_tool("start_training", {"dataset": str(notes), "name": "never"}),
        ]
    assert not report.is_error
    assert SECRET not in report.model_dump_json()
    assert report.structured_content["samples"] == []
    assert [p["line"] for p in report.structured_content["problems"]] == list(range(1, len(content.splitlines()) + 1))
    for refusal in refusals:
        assert refusal.is_error and SECRET not in refusal.model_dump_json()
    assert emulator.emulator.requests == []


@pytest.mark.parametrize(("class_file", "where"), [("classes.txt", "outside"), ("data.yaml", "hidden")])
async def test_a_yolo_class_file_leading_outside_or_into_a_hidden_dir_is_refused_unread(
    client: Client, logs, workdir: Path, outside: Path, class_file: str, where: str
) -> None:
    yolo = workdir / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    save(canvas(), yolo / "images" / "a.png")
    (yolo / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    text_of_secret = f"names: [{SECRET}]\n" if class_file == "data.yaml" else f"{SECRET}\n"
    if where == "outside":
        target = outside / "names.txt"
    else:
        (workdir / ".config").mkdir()
        target = workdir / ".config" / "names.txt"
    target.write_text(text_of_secret)
    (yolo / class_file).symlink_to(target)
    output = workdir / "dataset.jsonl"

    text = await refused(client, logs, "import_dataset", source=str(yolo), format="yolo", output=str(output))
    if where == "outside":
        assert text == outside_message(str(yolo / class_file), workdir)
    else:
        assert text.startswith(f"refused: {yolo / class_file} is inside a hidden file or directory (.config)")
    assert SECRET not in text
    assert not output.exists()


# ---- outputs never destroy --------------------------------------------------------------------


def not_ours(path: object, tool: str) -> str:
    return (
        f"refused to write {path}: the file is there and is not an earlier {tool} output of this same job, so it "
        "was left untouched; give a new file name."
    )


async def imported(client: Client, coco: Path, output: Path) -> Path:
    with anyio.fail_after(BOUND):
        made = await client.call_tool("import_dataset", {"source": str(coco), "format": "coco", "output": str(output)})
    assert not made.is_error, made.content[0].text
    return output


async def test_batch_output_naming_a_photo_is_refused_and_the_photo_kept(
    client: Client, logs, workdir: Path, emulator, one_image: str
) -> None:
    photo = save(canvas(), workdir / "holiday.png")
    before = Path(photo).read_bytes()

    text = await refused(client, logs, "batch", skill="caption", images=[one_image], output=photo)
    assert text == not_ours(photo, "batch")
    assert Path(photo).read_bytes() == before
    assert emulator.emulator.requests == []


async def test_evaluate_output_naming_its_own_dataset_is_refused_and_the_labels_kept(
    client: Client, logs, workdir: Path, emulator, coco: Path
) -> None:
    dataset = await imported(client, coco, workdir / "dataset.jsonl")
    before = dataset.read_bytes()
    emulator.emulator.clear()

    text = await refused(client, logs, "evaluate", dataset=str(dataset), split="all", output=str(dataset))
    assert text == f"refused to write {dataset}: it is the dataset being evaluated; give a new file name."
    assert dataset.read_bytes() == before
    assert emulator.emulator.requests == []


async def test_import_output_naming_its_own_source_is_refused_and_the_source_kept(
    client: Client, logs, workdir: Path, coco: Path
) -> None:
    before = coco.read_bytes()

    text = await refused(client, logs, "import_dataset", source=str(coco), format="coco", output=str(coco))
    assert text == f"refused to write {coco}: it is the file being imported; give a new file name."
    assert coco.read_bytes() == before


@pytest.mark.parametrize("tool", ["batch", "evaluate", "import_dataset", "batch_results"])
@pytest.mark.parametrize("victim", ["notes.txt", "photo.png", "other-job.jsonl"])
async def test_no_jsonl_tool_writes_over_a_file_that_is_not_its_own_output_of_the_same_job(
    client: Client, logs, workdir: Path, emulator, coco: Path, one_image: str, tool: str, victim: str
) -> None:
    dataset = await imported(client, coco, workdir / "dataset.jsonl")
    path = workdir / victim
    if victim == "photo.png":
        save(canvas(), path)
    elif victim == "notes.txt":
        path.write_text("my notes, one line\n")
    else:
        with anyio.fail_after(BOUND):
            made = await client.call_tool("batch", {"skill": "caption", "images": [one_image], "output": str(path)})
        assert not made.is_error  # a caption batch: to a detect batch too, another job's output
    before = path.read_bytes()
    emulator.emulator.clear()
    arguments: dict[str, object] = {
        "batch": {"skill": "detect", "object": "red", "images": [one_image]},
        "evaluate": {"dataset": str(dataset), "split": "all"},
        "import_dataset": {"source": str(coco), "format": "coco"},
        "batch_results": {"batch_id": "batch_123"},
    }[tool]

    text = await refused(client, logs, tool, output=str(path), **arguments)
    assert text == not_ours(path, tool)
    assert path.read_bytes() == before
    assert emulator.emulator.requests == []


async def test_a_batch_output_swapped_for_a_symlink_mid_run_keeps_its_lines_in_the_file_it_opened(
    client: Client, workdir: Path, outside: Path, emulator
) -> None:
    (workdir / "many").mkdir()
    for i in range(8):
        save(canvas(), workdir / "many" / f"{i}.png")
    output = workdir / "results.jsonl"
    emulator.emulator.config.latency = 0.3  # every answer held back: the swap lands before the first line
    try:
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tasks:
                outcome: list = []

                async def run() -> None:
                    outcome.append(
                        await client.call_tool(
                            "batch", {"skill": "caption", "images": str(workdir / "many"), "output": str(output)}
                        )
                    )

                tasks.start_soon(run)
                # No event crosses from the emulator's thread: poll, bounded by fail_after.
                while not emulator.emulator.requests:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                output.rename(workdir / "moved.jsonl")
                output.symlink_to(outside / "planted.jsonl")
    finally:
        emulator.emulator.config.latency = 0.0
    [result] = outcome
    assert not result.is_error, result.content[0].text
    assert not (outside / "planted.jsonl").exists()
    assert len((workdir / "moved.jsonl").read_text().splitlines()) == 8


async def test_tool_annotations_say_which_tools_may_rewrite_a_file(client: Client) -> None:
    hints = {t.name: t.annotations.destructive_hint for t in (await client.list_tools()).tools if t.annotations}
    # batch only appends to its own output; these three rewrite their own earlier output of the same job.
    assert hints["batch"] is False
    assert (hints["evaluate"], hints["import_dataset"], hints["batch_results"]) == (True, True, True)


# ---- secrets ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_credentials_in_the_endpoint_reach_no_tool_error_and_no_log(
    settings: Settings, logs, workdir: Path, one_image: str
) -> None:
    endpoint = f"http://robot:{SECRET}@127.0.0.1:{free_port()}/v1"
    async with Client(build_server(settings.model_copy(update={"endpoint": endpoint}))) as client:
        text = await refused(client, logs, "caption", image=one_image)
    assert text.startswith(f"could not reach the Moondream API at http://127.0.0.1:{endpoint.rsplit(':', 1)[1]}")
    assert SECRET not in text and "robot" not in text
    assert [r for r in logs.records if SECRET in r.getMessage() or SECRET in (r.exc_text or "")] == []


async def test_credentials_in_the_endpoint_still_authenticate_as_basic_auth(
    settings: Settings, workdir: Path, emulator, one_image: str
) -> None:
    endpoint = emulator.url.replace("http://", f"http://robot:{SECRET}@")
    async with Client(build_server(settings.model_copy(update={"endpoint": endpoint}))) as client:
        with anyio.fail_after(BOUND):
            result = await client.call_tool("caption", {"image": one_image, "length": "short"})
    assert not result.is_error, result.content[0].text
    [request] = emulator.emulator.requests
    assert request.headers["authorization"] == "Basic " + base64.b64encode(f"robot:{SECRET}".encode()).decode()


@pytest.mark.parametrize("key", ["e", "a"])
async def test_a_one_letter_key_leaves_every_message_as_it_was(
    settings: Settings, workdir: Path, outside: Path, key: str
) -> None:
    with running_emulator(Emulator(EmulatorConfig(keys=frozenset({key})))) as running:
        short = settings.model_copy(update={"api_key": SecretStr(key), "endpoint": running.url})
        async with Client(build_server(short)) as client:
            with anyio.fail_after(BOUND):
                result = await client.call_tool("detect", {"image": str(outside / "a.png"), "object": "red"})
    assert result.content[0].text == f"Error executing tool detect: {outside_message(str(outside / 'a.png'), workdir)}"
