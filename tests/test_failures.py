"""Messages for the model: secrets scrubbed exactly, and nothing else touched."""

from __future__ import annotations

import pytest

from moondream_mcp.client import APIConnectionError, AuthenticationError
from moondream_mcp.config import Settings, split_credentials
from moondream_mcp.failures import describe, redact
from moondream_mcp.files import FileError

MESSAGE = "the file is outside the allowed directories: /tmp/a.png; allowed: /home/me. e.g. set it (a), 42"


@pytest.mark.parametrize("key", ["", " ", "e", "a", "t", "he", "the", "1", "/", "."])
def test_an_empty_or_tiny_key_never_garbles_a_message(key: str) -> None:
    assert redact(MESSAGE, [key]) == MESSAGE
    assert describe(FileError(MESSAGE), endpoint="http://x/v1", secrets=[key]) == MESSAGE


def test_a_short_key_is_replaced_where_it_stands_alone_not_inside_words() -> None:
    assert redact("invalid key abcd; abcdef and xabcd stay", ["abcd"]) == "invalid key ***; abcdef and xabcd stay"


def test_a_long_key_is_replaced_wherever_it_occurs() -> None:
    key = "md-live-0123456789abcdef"
    text = f"key={key}, Bearer{key}, '{key}'"
    assert redact(text, [key]) == "key=***, Bearer***, '***'"


def test_a_key_that_contains_another_secret_is_replaced_whole() -> None:
    assert redact("token md-abcdefgh-pass9", ["pass9", "md-abcdefgh-pass9"]) == "token ***"


def test_an_auth_error_echoing_the_key_shows_it_nowhere() -> None:
    key = "md-test-key-0123456789abcdef"
    error = AuthenticationError(f"invalid API key {key}", status_code=401)
    assert key not in describe(error, endpoint="http://x/v1", secrets=[key])


def test_credentials_in_the_endpoint_are_split_from_it() -> None:
    assert split_credentials("http://bob:s%40cret@127.0.0.1:2020/v1") == ("http://127.0.0.1:2020/v1", ("bob", "s@cret"))
    assert split_credentials("https://api.moondream.ai/v1") == ("https://api.moondream.ai/v1", None)


def test_a_connection_error_names_the_endpoint_without_its_credentials() -> None:
    settings = Settings(endpoint="http://robot:hunter2-long-pass@10.1.2.3:2020/v1")
    error = APIConnectionError("could not connect to http://robot:hunter2-long-pass@10.1.2.3:2020/v1/caption")

    text = describe(error, endpoint=settings.shown_endpoint, secrets=settings.secrets)

    assert "hunter2" not in text and "robot" not in text
    assert text.startswith("could not reach the Moondream API at http://10.1.2.3:2020/v1: ")
