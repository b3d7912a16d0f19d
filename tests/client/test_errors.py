"""Error bodies of every documented shape become the right error, with the API's message."""

from __future__ import annotations

import httpx2
import pytest

from moondream_mcp.client import errors


def response(status: int, *, json: object = None, text: str | None = None, headers: dict | None = None):
    request = httpx2.Request("POST", "https://api.moondream.ai/v1/detect")
    if json is not None:
        return httpx2.Response(status, json=json, headers=headers, request=request)
    return httpx2.Response(status, text=text or "", headers=headers, request=request)


def test_a_nested_error_body_gives_message_and_code() -> None:
    err = errors.status_error(
        response(
            400,
            json={
                "error": {
                    "message": "object is required",
                    "type": "invalid",
                    "param": "object",
                    "code": "missing_object",
                }
            },
        )
    )
    assert isinstance(err, errors.BadRequestError)
    assert (err.message, err.code, err.status_code) == ("object is required", "missing_object", 400)


def test_a_flat_error_body_gives_its_message() -> None:
    err = errors.status_error(response(404, json={"error": "finetune not found"}))
    assert isinstance(err, errors.NotFoundError) and err.message == "finetune not found"


def test_a_plain_text_body_gives_its_text() -> None:
    err = errors.status_error(response(524, text="error code: 524"))
    assert isinstance(err, errors.ServerError) and err.message == "error code: 524"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, errors.AuthenticationError),
        (409, errors.ConflictError),
        (410, errors.GoneError),
        (413, errors.PayloadTooLargeError),
        (429, errors.RateLimitError),
        (502, errors.ServerError),
        (418, errors.APIStatusError),
    ],
)
def test_each_status_has_its_own_error(status: int, kind: type) -> None:
    assert type(errors.status_error(response(status, json={"error": "x"}))) is kind


def test_retry_after_is_read_in_seconds() -> None:
    err = errors.status_error(response(429, json={"error": "slow down"}, headers={"Retry-After": "3"}))
    assert err.retry_after == 3.0


def test_an_empty_body_falls_back_to_the_status() -> None:
    assert errors.status_error(response(503, text="")).message == "HTTP 503"


HOSTILE = "bad\r\nrequest\x1b[2J\u202eevil\x00 done\u200b!"


@pytest.mark.parametrize(
    "body",
    [
        {"json": {"error": {"message": HOSTILE, "code": "x\ny"}}},
        {"json": {"error": HOSTILE}},
        {"json": {"detail": HOSTILE}},
        {"text": HOSTILE},
    ],
)
def test_control_characters_in_an_api_error_message_are_removed(body: dict) -> None:
    err = errors.status_error(response(400, **body))

    assert err.message == "bad request [2J evil done !"
    assert err.code in (None, "x y")


def test_an_error_message_of_nothing_but_control_characters_falls_back_to_the_status() -> None:
    err = errors.status_error(response(400, json={"error": "\n\x1b\t"}))

    assert err.message == "HTTP 400"
