"""Over stdio, every malformed JSON-RPC line gets an answer: a parse or invalid-request error under the
line's id when it has one, never silence (the SDK's own transport drops such lines)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stdio import StdioPeer, rpc, server_env


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StdioPeer]:
    """One server process for the module: none of these lines may disturb it for the next."""
    tmp = tmp_path_factory.mktemp("stdio")

    class NoEmulator:
        url = "http://127.0.0.1:9/v1"  # nothing here is ever sent

    running = StdioPeer(server_env(NoEmulator(), tmp, tmp))
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
