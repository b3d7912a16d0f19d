"""Request bodies holding a data URL made by the image pipeline: the same JSON, written without escaping it."""

from __future__ import annotations

import json

from moondream_mcp.client.base import _body
from moondream_mcp.images.prepared import DataURL

URL = DataURL("data:image/jpeg;base64," + "QUJD" * 1000)


def test_a_data_url_goes_in_as_it_is_and_the_body_reads_the_same() -> None:
    body = {"object": 'the "red" car\n', "image_url": URL, "settings": {"max_objects": 3}, "note": "café"}

    sent = _body(body, None, None)

    assert json.loads(sent["content"]) == body
    assert sent["headers"] == {"Content-Type": "application/json"}
    assert URL.encode() in sent["content"]


def test_a_body_without_one_is_left_to_the_http_client() -> None:
    body = {"image_url": str(URL), "object": "car"}
    assert _body(body, None, {"X-Trace": "1"}) == {"json": body, "content": None, "headers": {"X-Trace": "1"}}


def test_a_body_of_nothing_but_the_data_url_is_valid_json() -> None:
    assert json.loads(_body({"image_url": URL}, None, None)["content"]) == {"image_url": URL}
