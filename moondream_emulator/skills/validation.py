"""Checks of skill request fields, each raising the ApiError the real API would answer with."""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ApiError
from ..model.policy import BASE, Policy

MAX_IMAGE_URL_CHARS = 10 * 1024 * 1024
BASE_MODEL = "moondream3-preview"
# The docs name the base model with or without the provider prefix; checkpoints without it.
BASE_MODEL_NAMES = (BASE_MODEL, f"moondream/{BASE_MODEL}")
CAPTION_LENGTHS = ("short", "normal", "long")
DEFAULT_MAX_OBJECTS = 50

_DATA_URL = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,", re.IGNORECASE)
_CHECKPOINT = re.compile(re.escape(BASE_MODEL) + r"/(?P<finetune>[^/@\s]+)@(?P<step>\d+)")

# The policy of a saved finetune checkpoint (finetune_id, step), or None when there is no such checkpoint.
CheckpointLookup = Callable[[str, int], Policy | None]


@dataclass(frozen=True)
class Settings:
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_objects: int = DEFAULT_MAX_OBJECTS


def request_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", code="invalid_json")
    return body


def image_bytes(body: dict[str, Any], *, required: bool) -> bytes | None:
    """The decoded bytes of `image_url`, a base64 data URL; None when absent and not required."""
    url = body.get("image_url")
    if url is None:
        if required:
            raise ApiError(400, "image_url is required", param="image_url", code="missing_field")
        return None
    if not isinstance(url, str):
        raise ApiError(400, "image_url must be a string", param="image_url", code="invalid_image_url")
    # Checked before decoding: refusing a huge upload must not cost the time to decode it.
    if len(url) > MAX_IMAGE_URL_CHARS:
        raise ApiError(413, "image too large: the limit is 10 MB", param="image_url", code="image_too_large")
    prefix = _DATA_URL.match(url)
    if prefix is None:
        raise ApiError(
            400,
            "image_url must be a data URL (data:image/<type>;base64,...); URLs are not fetched",
            param="image_url",
            code="invalid_image_url",
        )
    try:
        data = base64.b64decode(url[prefix.end() :], validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "image_url is not valid base64", param="image_url", code="invalid_base64") from None
    if not data:
        raise ApiError(400, "undecodable image: no data", param="image_url", code="invalid_image")
    return data


def text(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if value is None:
        raise ApiError(400, f"{name} is required", param=name, code="missing_field")
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"{name} must be a non-empty string", param=name, code="invalid_field")
    return value


def flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false", param=name, code="invalid_field")
    return value


def caption_length(body: dict[str, Any]) -> str:
    value = body.get("length")
    if value is None:
        return "normal"
    if value not in CAPTION_LENGTHS:
        raise ApiError(400, "length must be one of short, normal, long", param="length", code="invalid_field")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return _number(value) and float(value).is_integer()


def settings(body: dict[str, Any]) -> Settings:
    raw = body.get("settings")
    if raw is None:
        return Settings()
    if not isinstance(raw, dict):
        raise ApiError(400, "settings must be an object", param="settings", code="invalid_field")

    def bad(name: str, rule: str) -> ApiError:
        return ApiError(400, f"settings.{name} must be {rule}", param=f"settings.{name}", code="invalid_field")

    temperature, top_p = raw.get("temperature"), raw.get("top_p")
    max_tokens, max_objects = raw.get("max_tokens"), raw.get("max_objects")
    if temperature is not None and not (_number(temperature) and temperature >= 0):
        raise bad("temperature", "a number >= 0")
    if top_p is not None and not (_number(top_p) and 0 < top_p <= 1):
        raise bad("top_p", "a number in (0, 1]")
    if max_tokens is not None and not (_integer(max_tokens) and max_tokens > 0):
        raise bad("max_tokens", "an integer > 0")
    if max_objects is not None and not (_integer(max_objects) and max_objects > 0):
        raise bad("max_objects", "an integer > 0")
    return Settings(
        temperature=temperature,
        top_p=top_p,
        max_tokens=None if max_tokens is None else int(max_tokens),
        max_objects=DEFAULT_MAX_OBJECTS if max_objects is None else int(max_objects),
    )


def model(body: dict[str, Any], checkpoint_policy: CheckpointLookup) -> Policy:
    """The policy that answers: the base model's, or a saved finetune checkpoint's
    (`moondream3-preview/{id}@{step}`)."""
    value = body.get("model")
    if value is None or value in BASE_MODEL_NAMES:
        return BASE
    match = _CHECKPOINT.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ApiError(
            400,
            f"unknown model {value!r}: use {BASE_MODEL} or {BASE_MODEL}/<finetune_id>@<step>",
            param="model",
            code="invalid_model",
        )
    policy = checkpoint_policy(match["finetune"], int(match["step"]))
    if policy is None:
        raise ApiError(404, f"checkpoint not found: {value}", param="model", code="checkpoint_not_found")
    return policy


def spatial_refs(body: dict[str, Any]) -> list[list[float]]:
    """`spatial_refs`: points [x, y] or boxes [x_min, y_min, x_max, y_max], all within 0-1."""
    value = body.get("spatial_refs")
    if value is None:
        return []
    error = ApiError(
        400,
        "spatial_refs must be a list of [x, y] or [x_min, y_min, x_max, y_max] with values in 0-1",
        param="spatial_refs",
        code="invalid_field",
    )
    if not isinstance(value, list):
        raise error
    for ref in value:
        if not (isinstance(ref, list) and len(ref) in (2, 4) and all(_number(v) and 0 <= v <= 1 for v in ref)):
            raise error
    return [[float(v) for v in ref] for ref in value]
