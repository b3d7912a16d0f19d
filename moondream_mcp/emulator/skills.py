"""The five skill handlers: a request body in, the API's answer (plain JSON or an event stream) out.

Detect, point and query answer with a policy: the base model's unless `model` names a saved finetune
checkpoint (see policy.py: only a few hard colours are seen imperfectly). Caption and segment answer
the same whatever the model.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response, StreamingResponse

from . import answers, validation
from .errors import ApiError
from .policy import confused
from .sight import look, matching
from .vision import Box, Region

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
    checkpoint_policy: validation.CheckpointLookup


async def run_skill(skill: str, body: Any, ctx: SkillContext) -> Response:
    """The response to one skill request; raises ApiError when the request is refused."""
    handler = _HANDLERS[skill]
    return await handler(validation.request_object(body), ctx)


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
    policy = validation.model(body, ctx.checkpoint_policy)
    if stream and reasoning:
        raise ApiError(400, "streaming is not supported with reasoning", param="stream", code="invalid_field")
    scene = None
    if data is not None:
        sight = await look(data)
        scene = confused(sight.scene) if policy.confuses(sight.scene, sight.digest, question) else sight.scene
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
    validation.model(body, ctx.checkpoint_policy)
    assert data is not None
    scene = (await look(data)).scene
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
    policy = validation.model(body, ctx.checkpoint_policy)
    assert data is not None
    sight = await look(data)
    regions = matching(sight.scene, object_text)[: settings.max_objects]
    boxes = [_box(policy.box(r, sight.digest)) for r in regions]
    return JSONResponse({"objects": boxes, "request_id": ctx.request_id})


async def _point(body: dict[str, Any], ctx: SkillContext) -> Response:
    data = validation.image_bytes(body, required=True)
    object_text = validation.text(body, "object")
    settings = validation.settings(body)
    policy = validation.model(body, ctx.checkpoint_policy)
    assert data is not None
    sight = await look(data)
    regions = matching(sight.scene, object_text)[: settings.max_objects]
    placed = [policy.point(r, sight.digest) for r in regions]
    points = [{"x": round(x, 6), "y": round(y, 6)} for x, y in placed]
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
    validation.model(body, ctx.checkpoint_policy)
    assert data is not None
    region = _chosen(matching((await look(data)).scene, object_text), refs)
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
