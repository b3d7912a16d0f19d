"""Over stdio, every malformed JSON-RPC line gets an answer: a parse or invalid-request error under the
line's id when it has one, never silence (the SDK's own transport drops such lines); a line over the size limit
is answered and skipped; stdin that is a file is served too; nothing but the protocol reaches stdout."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import tty
from collections.abc import Iterator
from typing import BinaryIO

import pytest

from moondream_mcp.stdio_transport import TOO_LONG, Lines
from tests.support.stdio import StdioPeer, rpc, server_env


class NoEmulatorHere:
    url = "http://127.0.0.1:9/v1"  # nothing here is ever sent


HELLO = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}


def served(tmp_path, stdin: bytes | BinaryIO) -> tuple[list[dict], subprocess.CompletedProcess]:
    """The console script run to the end of `stdin` (bytes down a pipe, or a file): its answers, how it ended."""
    done = subprocess.run(
        [sys.executable, "-m", "moondream_mcp"],
        capture_output=True,
        env=server_env(NoEmulatorHere(), tmp_path, tmp_path),
        timeout=60,
        **({"input": stdin} if isinstance(stdin, bytes) else {"stdin": stdin}),
    )
    return [json.loads(line) for line in done.stdout.splitlines()], done


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StdioPeer]:
    """One server process for the module: none of these lines may disturb it for the next."""
    tmp = tmp_path_factory.mktemp("stdio")
    running = StdioPeer(server_env(NoEmulatorHere(), tmp, tmp))
    yield running
    running.close()


def line(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


PARSE_ERROR, INVALID_REQUEST = -32700, -32600


@pytest.mark.parametrize(
    ("attack", "sent", "expected_id", "code"),
    [
        ("not json", b"{nope", None, PARSE_ERROR),
        ("truncated", b'{"jsonrpc":"2.0","id":7,"method":"ping"', None, PARSE_ERROR),
        (
            "a lone surrogate escaped",
            b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"caption","arguments":{"image":"\\ud800"}}}',
            2,
            PARSE_ERROR,
        ),
        (
            "very deep nesting",
            b'{"jsonrpc":"2.0","id":4,"method":"ping","params":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
            None,
            PARSE_ERROR,
        ),
        ("params a list", rpc(5, "tools/call").rstrip(b"}\n") + b',"params":[1,2]}', 5, INVALID_REQUEST),
        ("params a string", b'{"jsonrpc":"2.0","id":6,"method":"tools/list","params":"x"}', 6, INVALID_REQUEST),
        ("no method", b'{"jsonrpc":"2.0","id":11}', 11, INVALID_REQUEST),
        ("an object as id", b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', None, INVALID_REQUEST),
        ("a batch", b'[{"jsonrpc":"2.0","id":12,"method":"ping"}]', None, INVALID_REQUEST),
        ("a bare number", b"42", None, INVALID_REQUEST),
    ],
)
def test_a_malformed_line_gets_an_error_answer_not_silence(
    peer: StdioPeer, attack: str, sent: bytes, expected_id: int | None, code: int
) -> None:
    answer = peer.answer(sent)

    assert answer["id"] == expected_id
    assert answer["error"]["code"] == code


def test_bytes_that_are_not_utf8_get_an_answer(peer: StdioPeer) -> None:
    answer = peer.answer(b'{"jsonrpc":"2.0","id":8,"method":"ping","params":{"x":"\xff\xfe"}}')

    assert answer == {"jsonrpc": "2.0", "id": 8, "result": {}}  # replaced by U+FFFD: a valid ping after all


def test_the_server_still_serves_after_every_attack(peer: StdioPeer) -> None:
    for sent in (b"{nope", b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}', b"[" * 50_000):
        peer.answer(sent)

    tools = peer.answer(rpc(99, "tools/list"))

    assert tools["id"] == 99 and len(tools["result"]["tools"]) > 20


def test_a_line_over_the_size_limit_is_answered_and_the_next_one_served(tmp_path) -> None:
    env = server_env(NoEmulatorHere(), tmp_path, tmp_path)
    env["MOONDREAM_MCP_HTTP_MAX_BODY_BYTES"] = str(64 * 1024)
    peer = StdioPeer(env)
    try:
        # Far over the limit, and just over it (a line that may arrive in one read).
        for size in (1_000_000, 70_000):
            huge = b'{"jsonrpc":"2.0","id":3,"method":"ping","params":{"x":"' + b"a" * size + b'"}}'
            answer = peer.answer(huge)
            assert answer["id"] is None
            assert answer["error"]["code"] == INVALID_REQUEST
            assert "at most 65536 bytes" in answer["error"]["message"]
            assert peer.answer(rpc(4, "ping")) == {"jsonrpc": "2.0", "id": 4, "result": {}}
    finally:
        peer.close()


def test_every_malformed_line_is_answered_before_the_server_ends_at_the_end_of_input(tmp_path) -> None:
    answers, done = served(tmp_path, rpc(0, "initialize", HELLO) + b"{nope\n" * 40)
    assert [a["id"] for a in answers if "result" in a] == [0]
    assert [a["error"]["code"] for a in answers if "error" in a] == [PARSE_ERROR] * 40
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_a_server_reading_a_file_rather_than_a_pipe_answers_too(tmp_path) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(rpc(0, "initialize", HELLO) + rpc(None, "notifications/initialized") + rpc(1, "ping"))
    with requests.open("rb") as stdin:
        answers, _ = served(tmp_path, stdin)
    assert [a["id"] for a in answers] == [0, 1]


def test_what_the_process_writes_to_stdout_while_serving_goes_to_stderr() -> None:
    script = (
        "import os\n"
        "from moondream_mcp.stdio_transport import _claimed_standard_streams\n"
        "with _claimed_standard_streams() as (wire_in, wire_out):\n"
        "    print('stray', flush=True)\n"
        "    os.write(wire_out, b'wire')\n"
        "print(' after')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert done.stdout == b"wire after\n"
    assert done.stderr == b"stray\n"


def chunks(*parts: bytes):
    remaining = list(parts)

    async def read() -> bytes:
        return remaining.pop(0) if remaining else b""

    return read


async def all_lines(lines: Lines) -> list:
    found = []
    while (line := await lines.next()) is not None:
        found.append(line)
    return found


@pytest.mark.anyio
async def test_lines_are_joined_across_chunks_and_a_last_one_needs_no_newline() -> None:
    lines = Lines(chunks(b'{"a"', b":1}\n{", b'"b":2}\n\n', b'{"c":3}'), limit=100)
    assert await all_lines(lines) == [b'{"a":1}\n', b'{"b":2}\n', b"\n", b'{"c":3}']


@pytest.mark.anyio
async def test_a_line_over_the_limit_is_told_once_and_dropped_as_it_comes() -> None:
    lines = Lines(chunks(b"x" * 60, b"x" * 60, b"x" * 60, b"x\nok\n", b"y" * 200), limit=100)
    assert await all_lines(lines) == [TOO_LONG, b"ok\n", TOO_LONG]


@pytest.mark.anyio
async def test_a_line_over_the_limit_is_refused_even_when_it_arrives_whole() -> None:
    lines = Lines(chunks(b"x" * 100 + b"\n" + b"y" * 99 + b"\n"), limit=100)
    assert await all_lines(lines) == [TOO_LONG, b"y" * 99 + b"\n"]


def test_a_client_that_closes_its_end_ends_the_server_quietly(tmp_path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "moondream_mcp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server_env(NoEmulatorHere(), tmp_path, tmp_path),
    )
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    process.stdin.write(rpc(0, "initialize", HELLO))
    process.stdin.flush()
    assert json.loads(process.stdout.readline())["id"] == 0
    process.stdout.close()  # the client stops reading; the next answer has nowhere to go
    try:
        process.stdin.write(rpc(None, "notifications/initialized") + rpc(1, "tools/list"))
        process.stdin.flush()
    except BrokenPipeError:
        pass  # already gone
    assert process.wait(30) == 0
    errors = process.stderr.read().decode()
    assert "Traceback" not in errors
    assert "the client closed stdout" in errors


def test_a_server_reading_a_terminal_ends_without_waiting_for_another_keystroke(tmp_path) -> None:
    for _ in range(3):  # the read a stop may find under way is a matter of timing
        terminal, server_side = pty.openpty()
        tty.setraw(server_side)
        process = subprocess.Popen(
            [sys.executable, "-m", "moondream_mcp"],
            stdin=server_side,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=server_env(NoEmulatorHere(), tmp_path, tmp_path),
        )
        try:
            assert process.stdout is not None
            os.write(terminal, rpc(0, "initialize", HELLO))
            assert json.loads(process.stdout.readline())["id"] == 0
            process.stdout.close()  # the client goes; the next answer finds nobody, and the server stops
            os.write(terminal, rpc(None, "notifications/initialized") + rpc(1, "ping"))
            assert process.wait(30) == 0
        finally:
            process.kill()
            os.close(terminal)
            os.close(server_side)
