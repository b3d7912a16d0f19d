"""The five skill handlers: a request body in, the API's answer (plain JSON or an event stream) out."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import anyio.to_thread
from PIL import Image, UnidentifiedImageError
from starlette.responses import JSONResponse, Response, StreamingResponse

from . import answers, validation
from .errors import ApiError
from .vision import ANALYSIS_SIDE, Box, Region, Scene, analyse, colour_in

SKILLS = ("query", "caption", "detect", "point", "segment")
_WORDS_PER_CHUNK = 3
_COARSE_TOLERANCE = 4.0  # analysis pixels; the streamed preview path is rougher than the final one


@dataclass(frozen=True)
class SkillContext:
    """What a handler needs from the server around it."""

    request_id: str
    station: bool  # answer in Moondream Station's dialect
    take_truncate: Callable[[], bool]  # consumes one pending "truncate the next stream" fault
    abort_connection: Callable[[], None]  # ends the connection at once, mid-response
    checkpoint_exists: validation.CheckpointLookup


async def run_skill(skill: str, body: Any, ctx: SkillContext) -> Response:
    """The response to one skill request; raises ApiError when the request is refused."""
    handler = _HANDLERS[skill]
    return await handler(validation.request_object(body), ctx)


# --- seeing -------------------------------------------------------------------------------------

_SCENES: OrderedDict[bytes, Scene] = OrderedDict()
_SCENES_LOCK = threading.Lock()
_SCENES_KEPT = 32  # benchmarks send one image over and over; analysing it once is enough


def _scene_of(data: bytes) -> Scene:
    key = hashlib.sha256(data).digest()
    with _SCENES_LOCK:
        if key in _SCENES:
            _SCENES.move_to_end(key)
            return _SCENES[key]
    try:
        with Image.open(io.BytesIO(data)) as image:
            size = image.size
            image.draft("RGB", (ANALYSIS_SIDE, ANALYSIS_SIDE))  # JPEG only: decode at a reduced scale
            image.load()
            scene = replace(analyse(image), width=size[0], height=size[1])
    except Image.DecompressionBombError:
        raise ApiError(400, "image has too many pixels", param="image_url", code="invalid_image") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise ApiError(400, "undecodable image", param="image_url", code="invalid_image") from None
    with _SCENES_LOCK:
        _SCENES[key] = scene
        while len(_SCENES) > _SCENES_KEPT:
            _SCENES.popitem(last=False)
    return scene


async def _see(data: bytes) -> Scene:
    # Decoding a large image takes tens of milliseconds: off the event loop, so other requests go on.
    return await anyio.to_thread.run_sync(_scene_of, data)


def _matching(scene: Scene, object_text: str) -> list[Region]:
    colour = colour_in(object_text)
    return scene.of_colour(colour) if colour else []


def _box(box: Box) -> dict[str, float]:
    return {key: round(value, 6) for key, value in box.as_dict().items()}


# --- plain answers ------------------------------------------------------------------------------


async def _query(body: dict[str, Any], ctx: SkillContext) -> Response:
    question = validation.text(body, "question")
    data = validation.image_bytes(body, required=False)
    reasoning = validation.flag(body, "reasoning")
    stream = validation.flag(body, "stream")
    settings = validation.settings(body)
    validation.spatial_refs(body)
    validation.model(body, ctx.checkpoint_exists)
    if stream and reasoning:
        raise ApiError(400, "streaming is not supported with reasoning", param="stream", code="invalid_field")
    scene = await _see(data) if data is not None else None
    answer, finish_reason = answers.limit(answers.answer(question, scene), settings.max_tokens)
    metrics = answers.metrics(question, answer, with_image=scene is not None)
    if stream:
        return _text_stream(answer, finish_reason, metrics, ctx)
    out: dict[str, Any] = {
        "answer": answer,
        "request_id": ctx.request_id,
        "finish_reason": finish_reason,
        "metrics": metrics,
    }
    if reasoning:
        out["reasoning"] = answers.reasoning(question, scene, answer).as_dict()
    return JSONResponse(out)


async def _caption(body: dict[str, Any], ctx: SkillContext) -> Response:
    data = validation.image_bytes(body, required=True)
    length = validation.caption_length(body)
    stream = validation.flag(body, "stream")
    settings = validation.settings(body)
    validation.model(body, ctx.checkpoint_exists)
    assert data is not None
    scene = await _see(data)
    caption, finish_reason = answers.limit(answers.caption(scene, length), settings.max_tokens)
    metrics = answers.metrics(f"Describe this image ({length}).", caption, with_image=True)
    if stream:
        return _text_stream(caption, finish_reason, metrics, ctx)
    return JSONResponse(
        {"caption": caption, "request_id": ctx.request_id, "finish_reason": finish_reason, "metrics": metrics}
    )


async def _detect(body: dict[str, Any], ctx: SkillContext) -> Response:
    data = validation.image_bytes(body, required=True)
    object_text = validation.text(body, "object")
    settings = validation.settings(body)
    validation.model(body, ctx.checkpoint_exists)
    assert data is not None
    regions = _matching(await _see(data), object_text)[: settings.max_objects]
    return JSONResponse({"objects": [_box(r.box) for r in regions], "request_id": ctx.request_id})


async def _point(body: dict[str, Any], ctx: SkillContext) -> Response:
    data = validation.image_bytes(body, required=True)
    object_text = validation.text(body, "object")
    settings = validation.settings(body)
    validation.model(body, ctx.checkpoint_exists)
    assert data is not None
    regions = _matching(await _see(data), object_text)[: settings.max_objects]
    points = [{"x": round(r.centre[0], 6), "y": round(r.centre[1], 6)} for r in regions]
    return JSONResponse({"points": points, "request_id": ctx.request_id})


def _chosen(regions: list[Region], refs: list[list[float]]) -> Region | None:
    """The region a spatial hint points into, else the largest."""
    for ref in refs:
        x, y = (ref[0], ref[1]) if len(ref) == 2 else ((ref[0] + ref[2]) / 2, (ref[1] + ref[3]) / 2)
        for region in regions:
            if region.box.contains(x, y):
                return region
    return regions[0] if regions else None


def svg_path(outline: list[tuple[float, float]], box: Box) -> str:
    """ "M x y L x y ... Z" with coordinates relative to the box (0-1 inside it), as the API sends."""
    width = (box.x_max - box.x_min) or 1.0
    height = (box.y_max - box.y_min) or 1.0

    def local(x: float, y: float) -> str:
        u = min(1.0, max(0.0, (x - box.x_min) / width))
        v = min(1.0, max(0.0, (y - box.y_min) / height))
        return f"{u:.4f} {v:.4f}"

    if not outline:
        return ""
    first, *rest = outline
    return " ".join([f"M {local(*first)}", *(f"L {local(*p)}" for p in rest), "Z"])


async def _segment(body: dict[str, Any], ctx: SkillContext) -> Response:
    data = validation.image_bytes(body, required=True)
    object_text = validation.text(body, "object")
    refs = validation.spatial_refs(body)
    stream = validation.flag(body, "stream")
    validation.settings(body)
    validation.model(body, ctx.checkpoint_exists)
    assert data is not None
    region = _chosen(_matching(await _see(data), object_text), refs)
    if region is None:
        final: dict[str, Any] = {"path": "", "bbox": None}
        coarse = None
    else:
        final = {"path": svg_path(region.outline(), region.box), "bbox": _box(region.box)}
        coarse = svg_path(region.outline(_COARSE_TOLERANCE), region.box)
    if not stream:
        return JSONResponse({**final, "request_id": ctx.request_id})
    events: list[dict[str, Any]] = []
    if region is not None:
        events.append({"type": "bbox", "bbox": final["bbox"]})
        events.append({"type": "path_delta", "chunk": coarse, "completed": False})
    events.append({"type": "final", **final, "completed": True, "request_id": ctx.request_id})
    return _event_stream(events, ctx)


# --- streams ------------------------------------------------------------------------------------


def _pieces(text: str, size: int) -> list[str]:
    words = answers.tokens(text)
    return ["".join(words[i : i + size]) for i in range(0, len(words), size)] or [""]


def _text_stream(text: str, finish_reason: str, metrics: dict[str, Any], ctx: SkillContext) -> Response:
    if ctx.station:
        # Station: one token per event, then usage, then a bare completion marker.
        events: list[dict[str, Any]] = [{"chunk": word} for word in answers.tokens(text)]
        events.append({"stats": {"tokens": metrics["output_tokens"], "ttft_ms": metrics["ttft_ms"]}})
        events.append({"completed": True})
        return _event_stream(events, ctx)
    *leading, last = _pieces(text, _WORDS_PER_CHUNK)
    events = [{"chunk": piece, "completed": False, "request_id": ctx.request_id} for piece in leading]
    events.append(
        {
            "chunk": last,
            "completed": True,
            "request_id": ctx.request_id,
            "finish_reason": finish_reason,
            "metrics": metrics,
        }
    )
    return _event_stream(events, ctx)


def _event_stream(events: list[dict[str, Any]], ctx: SkillContext) -> Response:
    truncate = ctx.take_truncate()

    async def lines() -> AsyncIterator[bytes]:
        for i, event in enumerate(events):
            yield f"data: {json.dumps(event)}\n\n".encode()
            if truncate and i == 0:
                # The stream dies mid-way, as a dropped proxy connection does: no completion event.
                ctx.abort_connection()
                return

    return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


_HANDLERS: dict[str, Callable[[dict[str, Any], SkillContext], Awaitable[Response]]] = {
    "query": _query,
    "caption": _caption,
    "detect": _detect,
    "point": _point,
    "segment": _segment,
}
