"""The lines of a batch file, and the output record of each: the skill endpoints' own checks and answers.

An input line is `{id?, skill, image, question? | object? | length?, reasoning?, settings?}` with the image as
raw base64. Its record is `{line_index, id, status: "ok", result, usage}`, or `{line_index, id, status:
"error", error: {code, message}}` with one of the documented per-line codes (LINE_ERRORS) when the line is
refused: anything the endpoint would refuse, and more (segment, a data: URL, a line over 10 MB).

As documented: `reasoning` defaults to true on batch query lines (unlike the query endpoint), and
`settings` apply to caption and query lines only (on detect and point lines they are ignored).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ApiError
from ..model import answers
from ..skills import validation
from ..skills.handlers import PLAIN_ANSWERS

MAX_LINE_BYTES = 10 * 1024 * 1024
BATCH_SKILLS = ("caption", "query", "detect", "point")
_READ_BLOCK = 1024 * 1024
_IMAGE_TOKENS = 729  # as answers.metrics counts an image
_TOKENS_PER_BOX, _TOKENS_PER_POINT = 3, 2  # as tuning/rollouts.py writes them; plus one to end the answer


def lines(paths: Sequence[Path]) -> Iterator[tuple[int, bytes | None]]:
    """(line_index, the line) for each line of the files read as one, blank ones too (a final newline ends
    the last line, it starts none); the line is None when it is over MAX_LINE_BYTES (never held in memory
    whole)."""
    limit = MAX_LINE_BYTES
    index = 0
    pending = bytearray()
    too_long = False
    for path in paths:
        with path.open("rb") as file:
            while block := file.read(_READ_BLOCK):
                start = 0
                while True:
                    end = block.find(b"\n", start)
                    piece = block[start:] if end < 0 else block[start:end]
                    if not too_long:
                        if len(pending) + len(piece) > limit:
                            too_long = True
                            pending.clear()
                        else:
                            pending += piece
                    if end < 0:
                        break
                    yield index, None if too_long else bytes(pending)
                    index += 1
                    pending.clear()
                    too_long = False
                    start = end + 1
    if too_long or pending:
        yield index, None if too_long else bytes(pending)


def blank(line: bytes | None) -> bool:
    return line is not None and not line.strip()


def parses(line: bytes | None) -> bool:
    """Whether the line is JSON at all (what tells a JSONL file from any other)."""
    if line is None:
        return False
    try:
        json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


# The documented per-line error codes; the skill checks' own codes map onto them.
LINE_ERRORS = ("invalid_request", "image_decode_failed", "unknown_skill", "processing_error")
_DECODE_FAILURES = ("invalid_base64", "invalid_image")  # what sight_of and the base64 check raise


def _raw_image(body: dict[str, Any], required: bool) -> bytes:
    """The decoded `image`: raw base64, no data: URL. Every batch line needs one, whatever its skill."""
    value = body.get("image")
    if value is None:
        raise ApiError(400, "image is required", param="image", code="missing_field")
    if not isinstance(value, str):
        raise ApiError(400, "image must be a base64 string", param="image", code="invalid_field")
    if value.startswith("data:"):
        raise ApiError(400, "image must be raw base64, without a data: URL prefix", param="image", code="invalid_field")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "image is not valid base64", param="image", code="invalid_base64") from None
    if not data:
        raise ApiError(400, "undecodable image: no data", param="image", code="invalid_image")
    return data


def _usage(skill: str, body: dict[str, Any], result: dict[str, Any]) -> dict[str, int]:
    if "metrics" in result:  # query, caption
        metrics = result["metrics"]
        return {"input_tokens": metrics["input_tokens"], "output_tokens": metrics["output_tokens"]}
    prompt = _IMAGE_TOKENS + len(answers.tokens(body["object"]))
    if skill == "detect":
        return {"input_tokens": prompt, "output_tokens": 1 + _TOKENS_PER_BOX * len(result["objects"])}
    return {"input_tokens": prompt, "output_tokens": 1 + _TOKENS_PER_POINT * len(result["points"])}


def _error(line_index: int, line_id: Any, code: str, message: str) -> dict[str, Any]:
    return {"line_index": line_index, "id": line_id, "status": "error", "error": {"code": code, "message": message}}


def answer_line(
    line_index: int,
    line: bytes | None,
    *,
    model: str | None,
    checkpoint_policy: validation.CheckpointLookup,
    fail: bool = False,
) -> dict[str, Any]:
    """The output record of one line (None: over the size limit), answered by `model` (None: the base
    model); `fail` makes it an internal error, as a worker crash would."""
    if line is None:
        return _error(line_index, None, "invalid_request", "line too large: the limit is 10 MB a line")
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return _error(line_index, None, "invalid_request", "line is not valid JSON")
    if not isinstance(record, dict):
        return _error(line_index, None, "invalid_request", "line must be a JSON object")
    line_id = record.get("id")
    if fail:
        return _error(
            line_index, line_id, "processing_error", "the line could not be processed (injected by the emulator)"
        )
    skill = record.get("skill")
    if skill is None:
        return _error(line_index, line_id, "invalid_request", "skill is required")
    if skill not in BATCH_SKILLS:
        return _error(
            line_index,
            line_id,
            "unknown_skill",
            f"skill must be one of {', '.join(BATCH_SKILLS)} (segment is not available in batch)",
        )
    # The job's model answers every line; a line's own model, or image_url, means nothing here.
    dropped = {"id", "skill", "model", "image_url"} | ({"settings"} if skill in ("detect", "point") else set())
    body = {key: value for key, value in record.items() if key not in dropped}
    if skill == "query":
        body.setdefault("reasoning", True)
    if model is not None:
        body["model"] = model
    try:
        result = PLAIN_ANSWERS[skill](body, _raw_image, checkpoint_policy)
    except ApiError as error:
        code = "image_decode_failed" if error.code in _DECODE_FAILURES else "invalid_request"
        return _error(line_index, line_id, code, error.message)
    return {
        "line_index": line_index,
        "id": line_id,
        "status": "ok",
        "result": result,
        "usage": _usage(skill, body, result),
    }
