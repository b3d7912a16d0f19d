"""The five skills — query, caption, detect, point, segment: typed results and the calls that fetch them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .base import APIClient, parse

CaptionLength = Literal["short", "normal", "long"]
SpatialRefs = list[list[float]]  # [x, y] points or [x_min, y_min, x_max, y_max] boxes, normalized 0-1


class _Result(BaseModel):
    # The API adds keys over time; results keep what they know and ignore the rest.
    # Built with the first answer parsed, not at start-up.
    model_config = ConfigDict(extra="ignore", defer_build=True)


class Box(_Result):
    x_min: float
    y_min: float
    x_max: float
    y_max: float


class Point(_Result):
    x: float
    y: float


def _as_point(value: Any) -> Any:
    # Grounding points come as [x, y] pairs; accept {x, y} objects too.
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return {"x": value[0], "y": value[1]}
    return value


class GroundingSpan(_Result):
    start_idx: int
    end_idx: int
    points: list[Point] = Field(default_factory=list)

    @field_validator("points", mode="before")
    @classmethod
    def _points(cls, value: Any) -> Any:
        return [_as_point(p) for p in value] if isinstance(value, list) else value


class Reasoning(_Result):
    text: str = ""
    grounding: list[GroundingSpan] = Field(default_factory=list)

    @field_validator("grounding", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return [] if value is None else value


class CaptionResult(_Result):
    caption: str
    finish_reason: str | None = None
    request_id: str | None = None
    metrics: dict[str, Any] | None = None


class QueryResult(_Result):
    answer: str
    reasoning: Reasoning | None = None
    finish_reason: str | None = None
    request_id: str | None = None


class DetectResult(_Result):
    objects: list[Box] = Field(default_factory=list)
    request_id: str | None = None


class PointResult(_Result):
    points: list[Point] = Field(default_factory=list)
    request_id: str | None = None


class SegmentResult(_Result):
    path: str = ""
    bbox: Box | None = None
    request_id: str | None = None


class Sampling(BaseModel):
    """The `settings` object; only the fields set are sent."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_objects: int | None = None

    def wire(self) -> dict[str, Any] | None:
        values = self.model_dump(exclude_none=True)
        return values or None


def _body(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        if isinstance(value, Sampling):
            value = value.wire()
            if value is None:
                continue
        body[key] = value
    return body


def _joined(events: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """Append every chunk (the final event's too) and merge the metadata the events carried."""
    text = "".join(str(e["chunk"]) for e in events if isinstance(e.get("chunk"), str))
    meta: dict[str, Any] = {}
    for event in events:
        for key in ("request_id", "finish_reason", "metrics"):
            if event.get(key) is not None:
                meta[key] = event[key]
    return text, meta


OnText = Callable[[str], None]


class Skills:
    """POST /query, /caption, /detect, /point, /segment."""

    def __init__(self, api: APIClient) -> None:
        self._api = api

    async def caption(
        self,
        image_url: str,
        *,
        length: CaptionLength = "normal",
        settings: Sampling | None = None,
        model: str | None = None,
        stream: bool = False,
        on_text: OnText | None = None,
    ) -> CaptionResult:
        body = _body(image_url=image_url, length=length, settings=settings, model=model)
        if not stream:
            return parse(CaptionResult, await self._skill("caption", body))
        text, meta = await self._stream_text("caption", body, on_text)
        return CaptionResult(caption=text, **meta)

    async def query(
        self,
        question: str,
        *,
        image_url: str | None = None,
        reasoning: bool = False,
        spatial_refs: SpatialRefs | None = None,
        settings: Sampling | None = None,
        model: str | None = None,
        stream: bool = False,
        on_text: OnText | None = None,
    ) -> QueryResult:
        # `reasoning` is always sent: the official SDK omits it unless true, and defaults differ between APIs.
        body = _body(
            question=question,
            image_url=image_url,
            reasoning=reasoning,
            spatial_refs=spatial_refs,
            settings=settings,
            model=model,
        )
        # Streaming with reasoning is allowed, but no source says whether the events carry the reasoning
        # trace: asked for reasoning, the client takes the whole answer, which surely does.
        if not stream or reasoning:
            return parse(QueryResult, await self._skill("query", body))
        text, meta = await self._stream_text("query", body, on_text)
        return QueryResult(answer=text, **meta)

    async def detect(
        self, image_url: str, object: str, *, settings: Sampling | None = None, model: str | None = None
    ) -> DetectResult:
        body = _body(image_url=image_url, object=object, settings=settings, model=model)
        return parse(DetectResult, await self._skill("detect", body))

    async def point(
        self,
        image_url: str,
        object: str,
        *,
        spatial_refs: SpatialRefs | None = None,
        settings: Sampling | None = None,
        model: str | None = None,
    ) -> PointResult:
        body = _body(image_url=image_url, object=object, spatial_refs=spatial_refs, settings=settings, model=model)
        return parse(PointResult, await self._skill("point", body))

    async def segment(
        self,
        image_url: str,
        object: str,
        *,
        spatial_refs: SpatialRefs | None = None,
        settings: Sampling | None = None,
        model: str | None = None,
        stream: bool = False,
    ) -> SegmentResult:
        body = _body(image_url=image_url, object=object, spatial_refs=spatial_refs, settings=settings, model=model)
        if not stream:
            return parse(SegmentResult, await self._skill("segment", body))
        events = await self._api.stream("segment", json={**body, "stream": True})
        # bbox → path_delta (coarse) → final: the final event has the whole answer; earlier ones fill gaps.
        merged: dict[str, Any] = {}
        for event in events:
            if event.get("type") == "path_delta":
                merged.setdefault("path", event.get("chunk", ""))
                continue
            merged.update({k: v for k, v in event.items() if v is not None})
        return parse(SegmentResult, merged)

    async def _skill(self, path: str, body: dict[str, Any]) -> Any:
        # Station reports a refused skill request as HTTP 200 {"error": ...}.
        return await self._api.request("POST", path, json=body, errors_in_body=True)

    async def _stream_text(self, path: str, body: dict[str, Any], on_text: OnText | None) -> tuple[str, dict[str, Any]]:
        def forward(event: dict[str, Any]) -> None:
            if on_text is not None and isinstance(event.get("chunk"), str) and event["chunk"]:
                on_text(event["chunk"])

        events = await self._api.stream(path, json={**body, "stream": True}, on_event=forward)
        # A server that ignored `stream` answered with one whole JSON object instead of events.
        if len(events) == 1 and "chunk" not in events[0]:
            whole = events[0]
            text = whole.get("caption", whole.get("answer", ""))
            return str(text), {k: whole[k] for k in ("request_id", "finish_reason", "metrics") if k in whole}
        return _joined(events)
