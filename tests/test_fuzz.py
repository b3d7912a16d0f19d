"""Property-based tests: arguments generated from each tool's own input schema (valid and near-valid), and
random bytes as images. Whatever comes in, a call ends as a result or as a deliberate tool error with a
message, never as a crash ("Error executing tool X" with nothing after it: an exception leaked), and
stdout carries nothing but protocol messages.

The strategies are built here from the JSON schema each tool advertises, so a new parameter is fuzzed
without touching this file. Semantics come from a few parameter names (image, images, output,
finetune_id) so that generated values also reach the code behind the first validation step.
"""

from __future__ import annotations

import base64
import json
import math
import string
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.types import Tool

from moondream_emulator import Emulator, EmulatorConfig, RunningEmulator, running_emulator
from moondream_mcp.config import Settings
from moondream_mcp.files import FileGuard
from moondream_mcp.images import ImageLoader
from moondream_mcp.server import build_server
from tests.support.keys import API_KEY
from tests.support.pictures import canvas, save
from tests.support.stdio import rpc, server_env

pytestmark = pytest.mark.anyio

FUZZ = settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
IMAGE_ERRORS = (
    "is not an image Pillow can read",
    "could not be decoded",
    "the data URL is empty",
    "the file is empty",
    "is too large to decode safely",
)


# ---- the world the fuzzed server lives in ------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_emulator() -> Iterator[RunningEmulator]:
    """An emulator of the fuzzer's own: it creates finetunes and batches by the hundred."""
    with running_emulator(Emulator(EmulatorConfig(keys=frozenset({API_KEY})))) as running:
        yield running


@pytest.fixture
def world(tmp_path: Path) -> dict[str, str]:
    """Files the generated references point at: a real picture, noise with an image name, a hidden file."""
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / ".hidden").mkdir()
    (tmp_path / "outside").mkdir()
    (photos / "noise.jpg").write_bytes(bytes(range(256)) * 8)
    save(canvas(), photos / ".hidden" / "secret.png")
    return {
        "dir": str(photos),
        "photo": save(canvas(), photos / "square.png"),
        "noise": str(photos / "noise.jpg"),
        "outside": str(tmp_path / "outside"),
        "hidden": str(photos / ".hidden" / "secret.png"),
        "tmp": str(tmp_path),
    }


def unreachable_network(settings: Settings, files: FileGuard) -> ImageLoader:
    # Generated URLs must never leave the machine: every name fails to resolve, every address is refused.
    async def no_resolution(host: str, port: int) -> list[str]:
        raise OSError("name resolution is off in the fuzzer")

    return ImageLoader(
        allowed_dirs=settings.allowed_dirs,
        max_file_bytes=settings.max_file_bytes,
        files=files,
        fetch_timeout=2,
        address_policy=lambda address: False,
        resolver=no_resolution,
    )


@pytest.fixture
async def fuzz_client(fuzz_emulator: RunningEmulator, world: dict[str, str], tmp_path: Path) -> AsyncIterator[Client]:
    settings = Settings(
        api_key=API_KEY,
        endpoint=fuzz_emulator.url,
        allowed_dirs=[Path(world["dir"])],
        data_dir=tmp_path / "data",
        timeout=5,
        retry_after_cap=0.1,
    )
    async with Client(build_server(settings, images=unreachable_network)) as client:
        yield client


def _tools() -> list[Tool]:
    return anyio.run(build_server(Settings()).list_tools)


TOOLS = {tool.name: tool for tool in _tools()}


# ---- strategies from a JSON schema ---------------------------------------------------------------------------


# Strategies are built once, at import, so they cannot hold a test's temporary paths: they name them with
# these tokens, which each example swaps for the real paths (see `placed`).
TOKENS = ("{photo}", "{noise}", "{hidden}", "{dir}", "{outside}", "{finetune}")


def image_refs() -> st.SearchStrategy[str]:
    noise = st.binary(min_size=0, max_size=600).map(lambda b: "data:image/png;base64," + base64.b64encode(b).decode())
    return st.one_of(
        st.sampled_from(
            [
                "{photo}",
                "{noise}",
                "{hidden}",
                "{dir}",
                "{dir}/../x.png",
                "{dir}/*.png",
                "file://{photo}",
                "/etc/passwd",
                "/dev/zero",
                "square.png",
                "",
                "http://10.0.0.1/x.png",
                "http://localhost:1/x.png",
                "https://example.invalid/x.png",
                "ftp://example.invalid/x.png",
                "data:text/plain;base64,aGk=",
                "data:image/png,raw",
            ]
        ),
        noise,
        st.text(max_size=30),
    )


def output_paths() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(
            [
                "{dir}/out.jsonl",
                "{outside}/out.jsonl",
                "{dir}/.h/o.jsonl",
                "{dir}/missing/o.jsonl",
                "{dir}",
                "out.jsonl",
                "/dev/null",
                "",
            ]
        ),
        st.text(max_size=20),
    )


# Ids the client puts into URL paths: anything at all, control characters, "/", "?", "#", "%" and dots
# included — each must come back as a clear error or a 404, never reach another endpoint.
URL_IDS = ("finetune_id", "batch_id")
URL_ID_TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30)


def placed(value: Any, world: dict[str, str]) -> Any:
    """The generated value with every token replaced by this test's real path (or finetune id)."""
    if isinstance(value, str):
        for token in TOKENS:
            value = value.replace(token, world[token[1:-1]])
        return value
    if isinstance(value, list):
        return [placed(v, world) for v in value]
    if isinstance(value, dict):
        return {k: placed(v, world) for k, v in value.items()}
    return value


def _resolve(root: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = root
        for key in node["$ref"][2:].split("/"):
            target = target[key]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


class Schemas:
    """Strategies for one tool's arguments: valid ones, and near-valid ones one mistake away."""

    def __init__(self, tool: Tool) -> None:
        self.root = tool.input_schema

    def valid(self, node: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
        node = _resolve(self.root, node)
        if "anyOf" in node:
            return st.one_of([self.valid(option, name) for option in node["anyOf"]])
        if "enum" in node:
            return st.sampled_from(node["enum"])
        if "const" in node:
            return st.just(node["const"])
        kind = node.get("type")
        if kind == "string":
            return self._string(node, name)
        if kind == "integer":
            low = node["minimum"] if "minimum" in node else node.get("exclusiveMinimum", -11) + 1
            # Kept small: a valid max_tokens of 10**9 would only make the emulator work harder.
            return st.integers(low, node.get("maximum", max(low, 0) + 64))
        if kind == "number":
            low = node.get("minimum", node.get("exclusiveMinimum", -10.0))
            high = node.get("maximum", low + 100.0)
            if name == "wait_seconds":
                high = min(high, 0.5)  # a real wait is a wait; the fuzzer only needs the path taken
            return st.floats(low, high, exclude_min="exclusiveMinimum" in node, allow_nan=False, allow_infinity=False)
        if kind == "boolean":
            return st.booleans()
        if kind == "null":
            return st.none()
        if kind == "array":
            items = self.valid(node.get("items", {}), name)
            least = node.get("minItems", 0)
            return st.lists(items, min_size=least, max_size=max(least, min(node.get("maxItems", 3), 3)))
        if kind == "object":
            return self._object(node)
        return JSON_VALUES  # no type: anything JSON can carry

    def _string(self, node: dict[str, Any], name: str) -> st.SearchStrategy[str]:
        if name in ("image", "images", "source", "dataset", "path", "image_dir"):
            return image_refs()  # paths (good, hidden, outside, special), URLs, data URLs, garbage
        if name == "output":
            return output_paths()
        if name in URL_IDS:
            return st.one_of(st.just("{finetune}"), URL_ID_TEXT)
        low, high = node.get("minLength", 0), min(node.get("maxLength", 40), 40)
        if "pattern" in node:
            return st.from_regex(node["pattern"], fullmatch=True).filter(lambda s: low <= len(s) <= high)
        return st.text(min_size=low, max_size=high)

    def _object(self, node: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
        properties = node.get("properties", {})
        required = set(node.get("required", []))
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):  # a free-form dict, e.g. metric name -> number
            return st.dictionaries(
                st.text(max_size=10), self.valid(extra), min_size=node.get("minProperties", 0), max_size=3
            )
        return st.fixed_dictionaries(
            {k: self.valid(v, k) for k, v in properties.items() if k in required},
            optional={k: self.valid(v, k) for k, v in properties.items() if k not in required},
        )

    def invalid(self, node: dict[str, Any], name: str = "") -> st.SearchStrategy[Any]:
        """A value this schema refuses (or one at its edge): wrong type, out of range, not finite, empty."""
        node = _resolve(self.root, node)
        options: list[st.SearchStrategy[Any]] = [st.sampled_from([[], {}, "x", 7, -1.5, True])]
        for bound, step in (("minimum", -1), ("exclusiveMinimum", 0), ("maximum", 1), ("exclusiveMaximum", 0)):
            if bound in node:
                options.append(st.just(node[bound] + step))
        if any(t.get("type") == "number" for t in [node, *node.get("anyOf", [])]):
            options.append(st.sampled_from([math.inf, -math.inf, math.nan, 1e308]))
        if node.get("minLength"):
            options.append(st.just(""))
        if "maxLength" in node:
            options.append(st.just("a" * (node["maxLength"] + 1)))
        if "enum" in node:
            options.append(st.text(max_size=8).filter(lambda v: v not in node["enum"]))
        if node.get("type") == "object" or "properties" in node:
            options.append(self.near_valid(node))
        if node.get("type") == "array":
            options.append(st.lists(self.invalid(node.get("items", {}), name), min_size=1, max_size=2))
            if node.get("minItems"):
                options.append(st.just([]))
        return st.one_of(options)

    def near_valid(self, node: dict[str, Any] | None = None) -> st.SearchStrategy[dict[str, Any]]:
        """A valid object with exactly one mistake: a missing required key, an extra key, or one bad value."""
        node = _resolve(self.root, node or self.root)
        properties = node.get("properties", {})
        required = [k for k in node.get("required", []) if k in properties]

        @st.composite
        def one_mistake(draw: st.DrawFn) -> dict[str, Any]:
            value = dict(draw(self._object(node)))
            choices = ["extra"] + (["missing"] if required else []) + (["bad"] if properties else [])
            mistake = draw(st.sampled_from(choices))
            if mistake == "missing":
                value.pop(draw(st.sampled_from(required)), None)
            elif mistake == "extra":
                value[
                    draw(
                        st.text(alphabet=string.ascii_lowercase, min_size=1, max_size=8).filter(
                            lambda k: k not in properties
                        )
                    )
                ] = draw(st.sampled_from([1, "x", None, [1]]))
            else:
                key = draw(st.sampled_from(sorted(properties)))
                value[key] = draw(self.invalid(properties[key], key))
            return value

        return one_mistake()


# ---- the properties -------------------------------------------------------------------------------------------


def assert_handled(tool: str, result: Any) -> None:
    """A result, or an error the tool meant to raise, with something to read; never a crash."""
    dumped = result.model_dump_json()
    assert API_KEY not in dumped
    if not result.is_error:
        return
    text = result.content[0].text if result.content else ""
    assert text != f"Error executing tool {tool}", f"{tool} crashed (an exception leaked)"
    prefix = f"Error executing tool {tool}: "
    assert text.startswith(prefix) and text[len(prefix) :].strip(), text


@pytest.fixture
async def placed_world(fuzz_client: Client, world: dict[str, str]) -> dict[str, str]:
    made = await fuzz_client.call_tool("create_finetune", {"name": "fuzz-target", "rank": 8})
    return {**world, "finetune": made.structured_content["finetune_id"]}


def calls(kind: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """(tool name, arguments) for every tool: valid arguments, or near-valid ones."""

    def for_tool(name: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
        schemas = Schemas(TOOLS[name])
        arguments = schemas.valid(schemas.root) if kind == "valid" else schemas.near_valid()
        return st.tuples(st.just(name), arguments)

    return st.one_of([for_tool(name) for name in sorted(TOOLS)])


# Draws happen in @given, never inside the test body: hypothesis stops a test that overruns its data with a
# BaseException, which would also stop anyio's test runner for every test after it.
@settings(FUZZ, max_examples=20 * len(TOOLS))
@given(call=calls("valid"))
async def test_valid_arguments_from_each_tools_schema_never_crash_it(
    fuzz_client: Client, placed_world: dict[str, str], call: tuple[str, dict[str, Any]]
) -> None:
    name, arguments = call
    with anyio.fail_after(30):
        result = await fuzz_client.call_tool(name, placed(arguments, placed_world))
    assert_handled(name, result)


@settings(FUZZ, max_examples=20 * len(TOOLS))
@given(call=calls("near-valid"))
async def test_near_valid_arguments_are_refused_or_handled_never_crash(
    fuzz_client: Client, placed_world: dict[str, str], call: tuple[str, dict[str, Any]]
) -> None:
    name, arguments = call
    with anyio.fail_after(30):
        result = await fuzz_client.call_tool(name, placed(arguments, placed_world))
    assert_handled(name, result)


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("get_finetune", {"finetune_id": "\x1f"}),
        ("batch_status", {"batch_id": "a\nb"}),
    ],
)
async def test_ids_that_would_break_the_url_are_refused_not_crashed(
    fuzz_client: Client, tool: str, arguments: dict[str, Any]
) -> None:
    result = await fuzz_client.call_tool(tool, arguments)
    assert_handled(tool, result)


@pytest.mark.parametrize(
    ("finetune_id", "reaches"),
    [
        (".", []),  # a dot segment would be normalized away into the list endpoint: refused unsent
        ("..", []),
        # Escaped into one segment (the log shows it decoded: "?c#d" stayed in the path, not a query): a 404.
        ("a/b?c#d", ["/v1/tuning/finetunes/a/b?c#d"]),
    ],
)
async def test_ids_that_would_break_the_url_cannot_reach_another_endpoint(
    fuzz_client: Client, fuzz_emulator: RunningEmulator, finetune_id: str, reaches: list[str]
) -> None:
    before = len(fuzz_emulator.emulator.requests)
    result = await fuzz_client.call_tool("get_finetune", {"finetune_id": finetune_id})
    assert [r.path for r in fuzz_emulator.emulator.requests[before:]] == reaches
    assert_handled("get_finetune", result)


HEADERS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBP", b"BM", b"II*\x00"]


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # Pillow's word on hostile bytes
@settings(FUZZ, max_examples=40)
@given(header=st.sampled_from(HEADERS), noise=st.binary(max_size=2048), as_file=st.booleans())
async def test_random_bytes_as_images_give_clear_image_errors(
    fuzz_client: Client, world: dict[str, str], header: bytes, noise: bytes, as_file: bool
) -> None:
    data = header + noise
    if as_file:
        target = Path(world["dir"]) / "random.png"
        target.write_bytes(data)
        ref = str(target)
    else:
        ref = "data:image/png;base64," + base64.b64encode(data).decode()
    with anyio.fail_after(30):
        result = await fuzz_client.call_tool("detect", {"image": ref, "object": "red"})
    assert_handled("detect", result)
    assert result.is_error
    assert any(reason in result.content[0].text for reason in IMAGE_ERRORS), result.content[0].text


# ---- over real stdio: nothing but protocol on stdout ---------------------------------------------------------


class StdioServer:
    """The console script as a desktop client runs it, spoken to in raw JSON-RPC lines."""

    def __init__(self, process: anyio.abc.Process) -> None:
        self.process = process
        self.buffer = b""
        self.lines: list[str] = []
        self.next_id = 10

    async def call(self, message: bytes, id_: int) -> dict[str, Any]:
        await self.process.stdin.send(message)
        while True:
            if b"\n" not in self.buffer:
                self.buffer += await self.process.stdout.receive()
                continue
            line, _, self.buffer = self.buffer.partition(b"\n")
            self.lines.append(line.decode())
            parsed = json.loads(line)  # anything but JSON on stdout fails the test here
            assert parsed["jsonrpc"] == "2.0", line
            if parsed.get("id") == id_:
                return parsed


@pytest.fixture
async def stdio_server(fuzz_emulator: RunningEmulator, world: dict[str, str]) -> AsyncIterator[StdioServer]:
    env = server_env(fuzz_emulator, Path(world["dir"]), Path(world["tmp"]))
    errors: list[bytes] = []

    async def drain(stream: Any) -> None:
        async for chunk in stream:  # a chatty stderr must never fill the pipe and stall the server
            errors.append(chunk)

    async with (
        await anyio.open_process([sys.executable, "-m", "moondream_mcp", "--log-level", "DEBUG"], env=env) as process,
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(drain, process.stderr)
        server = StdioServer(process)
        with anyio.fail_after(30):
            await server.call(
                rpc(
                    1,
                    "initialize",
                    {
                        "protocolVersion": "2025-06-18",
                        "capabilities": {},
                        "clientInfo": {"name": "fuzz", "version": "0"},
                    },
                ),
                1,
            )
            await process.stdin.send(rpc(None, "notifications/initialized"))
        yield server
        await process.stdin.aclose()
        with anyio.fail_after(15):
            await process.wait()
    assert API_KEY not in b"".join(errors).decode(errors="replace")


@settings(FUZZ, max_examples=40)
@given(call=calls("valid") | calls("near-valid"))
async def test_a_fuzz_round_over_stdio_leaves_nothing_but_json_rpc_on_stdout(
    stdio_server: StdioServer, world: dict[str, str], call: tuple[str, dict[str, Any]]
) -> None:
    name, arguments = call
    arguments = placed(arguments, {**world, "finetune": "no-such-finetune"})
    stdio_server.next_id += 1
    try:
        message = (
            json.dumps(
                {
                    "jsonrpc": "2.0",
                    "id": stdio_server.next_id,
                    "method": "tools/call",
                    "params": {"name": name, "arguments": arguments},
                },
                allow_nan=False,
            )
            + "\n"
        )
    except ValueError:  # a NaN or infinity: not JSON, so no client could send it
        return
    with anyio.fail_after(30):
        answer = await stdio_server.call(message.encode(), stdio_server.next_id)
    assert "result" in answer, answer
    text = answer["result"]["content"][0]["text"] if answer["result"].get("isError") else ""
    assert text != f"Error executing tool {name}", f"{name} crashed on {arguments!r}"
