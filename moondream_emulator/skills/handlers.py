"""The five skill handlers: a request body in, the API's answer (plain JSON or an event stream) out.

Detect, point and query answer with a policy: the base model's unless `model` names a saved finetune
checkpoint (see model/policy.py: only a few hard colours are seen imperfectly). Caption and segment answer
the same whatever the model. The answers of query, caption, detect and point are computed by blocking
functions (PLAIN_ANSWERS) that batch jobs share.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..errors import ApiError
from ..model import answers
from ..model.policy import confused
from ..model.sight import look, matching, sight_of
from ..model.vision import Box, Region
from . import validation

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
#
# Blocking (they decode and analyse the image): the endpoints run them in a worker thread.

# Reads the decoded image of a request: (body, required) -> bytes, or None when absent and not required.
ImageReader = Callable[[dict[str, Any], bool], bytes | None]


def _image_url(body: dict[str, Any], required: bool) -> bytes | None:
    return validation.image_bytes(body, required=required)


def query_answer(
    body: dict[str, Any], read_image: ImageReader, checkpoint_policy: validation.CheckpointLookup
) -> dict[str, Any]:
    """{answer, finish_reason, metrics, reasoning?}."""
    question = validation.text(body, "question")
    data = read_image(body, False)
    reasoning = validation.flag(body, "reasoning")
    validation.flag(body, "stream")
    settings = validation.settings(body)
    validation.spatial_refs(body)
    policy = validation.model(body, checkpoint_policy)
    scene = None
    if data is not None:
        sight = sight_of(data)
        scene = confused(sight.scene) if policy.confuses(sight.scene, sight.digest, question) else sight.scene
    answer, finish_reason = answers.limit(answers.answer(question, scene), settings.max_tokens)
    out: dict[str, Any] = {
        "answer": answer,
        "finish_reason": finish_reason,
        "metrics": answers.metrics(question, answer, with_image=scene is not None),
    }
    if reasoning:
        out["reasoning"] = answers.reasoning(question, scene, answer).as_dict()
    return out


def caption_answer(
    body: dict[str, Any], read_image: ImageReader, checkpoint_policy: validation.CheckpointLookup
) -> dict[str, Any]:
    """{caption, finish_reason, metrics}."""
    data = read_image(body, True)
    length = validation.caption_length(body)
    validation.flag(body, "stream")
    settings = validation.settings(body)
    validation.model(body, checkpoint_policy)
    assert data is not None
    scene = sight_of(data).scene
    caption, finish_reason = answers.limit(answers.caption(scene, length), settings.max_tokens)
    metrics = answers.metrics(f"Describe this image ({length}).", caption, with_image=True)
    return {"caption": caption, "finish_reason": finish_reason, "metrics": metrics}


def _found(
    body: dict[str, Any], read_image: ImageReader, checkpoint_policy: validation.CheckpointLookup
) -> tuple[Any, Any, list[Any]]:
    """What detect and point share: the checked request, the policy answering, the regions named."""
    data = read_image(body, True)
    object_text = validation.text(body, "object")
    settings = validation.settings(body)
    policy = validation.model(body, checkpoint_policy)
    assert data is not None
    validation.spatial_refs(body)  # point takes hints (as query and segment do); checked, then not needed
    sight = sight_of(data)
    return sight, policy, matching(sight.scene, object_text)[: settings.max_objects]


def detect_answer(
    body: dict[str, Any], read_image: ImageReader, checkpoint_policy: validation.CheckpointLookup
) -> dict[str, Any]:
    """{objects}."""
    sight, policy, regions = _found(body, read_image, checkpoint_policy)
    return {"objects": [_box(policy.box(r, sight.digest)) for r in regions]}


def point_answer(
    body: dict[str, Any], read_image: ImageReader, checkpoint_policy: validation.CheckpointLookup
) -> dict[str, Any]:
    """{points}."""
    sight, policy, regions = _found(body, read_image, checkpoint_policy)
    placed = [policy.point(r, sight.digest) for r in regions]
    return {"points": [{"x": round(x, 6), "y": round(y, 6)} for x, y in placed]}


PlainAnswer = Callable[[dict[str, Any], ImageReader, validation.CheckpointLookup], dict[str, Any]]
PLAIN_ANSWERS: dict[str, PlainAnswer] = {
    "query": query_answer,
    "caption": caption_answer,
    "detect": detect_answer,
    "point": point_answer,
}


async def _plain(skill: str, body: dict[str, Any], ctx: SkillContext) -> dict[str, Any]:
    # Decoding a large image takes tens of milliseconds: off the event loop, so other requests go on.
    return await anyio.to_thread.run_sync(PLAIN_ANSWERS[skill], body, _image_url, ctx.checkpoint_policy)


def _station_stats(metrics: dict[str, Any]) -> dict[str, Any]:
    """Station's usage figures: {tokens, duration (s), tokens_per_sec}."""
    tokens = metrics["output_tokens"]
    duration = round((metrics["prefill_time_ms"] + metrics["decode_time_ms"]) / 1000, 4)
    return {"tokens": tokens, "duration": duration, "tokens_per_sec": round(tokens / duration, 2) if duration else 0.0}


def _answered(out: dict[str, Any], ctx: SkillContext) -> Response:
    """A non-streamed answer: the cloud adds its request id; Station its usage, as `_stats`."""
    if ctx.station:
        stats = {"_stats": _station_stats(out["metrics"])} if "metrics" in out else {}
        return JSONResponse({**out, **stats})
    return JSONResponse({**out, "request_id": ctx.request_id})


async def _query(body: dict[str, Any], ctx: SkillContext) -> Response:
    if ctx.station and body.get("image_url") is None:
        raise ApiError(400, "image_url is required", param="image_url", code="missing_field")
    out = await _plain("query", body, ctx)
    if validation.flag(body, "stream"):
        # The official SDK streams with reasoning on. Where the reasoning goes then is unsure: here it rides
        # on the completing event, which clients that only join chunks ignore.
        extra = {"reasoning": out["reasoning"]} if "reasoning" in out else {}
        return _text_stream(out["answer"], out["finish_reason"], out["metrics"], ctx, extra)
    return _answered(out, ctx)


async def _caption(body: dict[str, Any], ctx: SkillContext) -> Response:
    out = await _plain("caption", body, ctx)
    if validation.flag(body, "stream"):
        return _text_stream(out["caption"], out["finish_reason"], out["metrics"], ctx)
    return _answered(out, ctx)


async def _detect(body: dict[str, Any], ctx: SkillContext) -> Response:
    return _answered(await _plain("detect", body, ctx), ctx)


async def _point(body: dict[str, Any], ctx: SkillContext) -> Response:
    return _answered(await _plain("point", body, ctx), ctx)


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


def _text_stream(
    text: str, finish_reason: str, metrics: dict[str, Any], ctx: SkillContext, extra: dict[str, Any] | None = None
) -> Response:
    if ctx.station:
        # Station: one token per event, then usage, then a bare completion marker.
        events: list[dict[str, Any]] = [{"chunk": word} for word in answers.tokens(text)]
        events.append({"stats": _station_stats(metrics)})
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
            **(extra or {}),
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
