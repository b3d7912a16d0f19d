"""The five skills on one image reference, and questions about several images at once (the chat
endpoint) — load the images, call the API, shape what came back — and the typed results they return (the
vision tools' output schemas). Shared by the skill tools, local batches and anything else that looks at
images. Knows nothing of MCP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from . import shapes
from .client import MoondreamClient, NotFoundError, Sampling
from .client.chat import Turn, user_turn
from .client.skills import Box as APIBox
from .client.skills import Reasoning as APIReasoning
from .failures import InputError
from .images import ImageLoader, PreparedImage


class ImageSize(BaseModel):
    """Pixel size of the image as displayed (EXIF orientation applied), before any downscaling."""

    width: int = Field(description="Width in pixels; multiply normalized x by it for pixels.")
    height: int = Field(description="Height in pixels; multiply normalized y by it for pixels.")


class Box(BaseModel):
    x_min: float = Field(description="Left edge, 0-1 from the left.")
    y_min: float = Field(description="Top edge, 0-1 from the top.")
    x_max: float = Field(description="Right edge, 0-1 from the left.")
    y_max: float = Field(description="Bottom edge, 0-1 from the top.")


class Point(BaseModel):
    x: float = Field(description="0-1 from the left.")
    y: float = Field(description="0-1 from the top.")


class Caption(BaseModel):
    caption: str
    finish_reason: str | None = Field(description="Why generation stopped, as the API reported it.")
    request_id: str | None
    image: ImageSize


class Grounding(BaseModel):
    start_idx: int = Field(description="Start character offset into reasoning.text.")
    end_idx: int = Field(description="End character offset into reasoning.text.")
    points: list[Point] = Field(description="Where in the image that part of the reasoning looked.")


class ReasoningTrace(BaseModel):
    text: str
    grounding: list[Grounding]


class Answer(BaseModel):
    answer: str
    reasoning: ReasoningTrace | None = Field(description="The model's reasoning, when reasoning was on.")
    request_id: str | None
    image: ImageSize | None = Field(description="Size of the image asked about; null for a text-only question.")


class Reply(BaseModel):
    answer: str
    reasoning: ReasoningTrace | None = Field(description="The model's reasoning, when it gave one.")
    finish_reason: str | None
    images: list[ImageSize] = Field(description="Each image's size, in the order given.")


class Detection(BaseModel):
    objects: list[Box] = Field(description="One box per object found, normalized 0-1, origin top-left.")
    count: int
    request_id: str | None
    image: ImageSize
    picture: str | None = Field(default=None, description="annotate=true: where the drawn picture was saved.")


class Pointing(BaseModel):
    points: list[Point] = Field(description="One point per object found, normalized 0-1, origin top-left.")
    count: int
    request_id: str | None
    image: ImageSize
    picture: str | None = Field(default=None, description="annotate=true: where the drawn picture was saved.")


class Segmentation(BaseModel):
    path: str = Field(description="SVG path data exactly as the API returned it: coordinates 0-1 relative to bbox.")
    bbox: Box | None = Field(description="The object's bounding box in the image, normalized 0-1; null if not found.")
    image_path: str = Field(
        description="The same outline as SVG path data in whole-image coordinates (0-1); "
        "scale by image.width/height for pixels."
    )
    request_id: str | None
    image: ImageSize
    picture: str | None = Field(default=None, description="annotate=true: where the drawn picture was saved.")


class ChatUnavailable(InputError):
    """The endpoint serves no chat completions (Moondream Station)."""


# ---- the calls ----------------------------------------------------------------------------------


def _size(prepared: PreparedImage) -> ImageSize:
    return ImageSize(width=prepared.width, height=prepared.height)


def _box(box: APIBox) -> Box:
    return Box(x_min=box.x_min, y_min=box.y_min, x_max=box.x_max, y_max=box.y_max)


def _trace(reasoning: APIReasoning | None) -> ReasoningTrace | None:
    if reasoning is None:
        return None
    return ReasoningTrace(
        text=reasoning.text,
        grounding=[
            Grounding(start_idx=g.start_idx, end_idx=g.end_idx, points=[Point(x=p.x, y=p.y) for p in g.points])
            for g in reasoning.grounding
        ],
    )


def corners(box: Box) -> tuple[float, float, float, float]:
    return box.x_min, box.y_min, box.x_max, box.y_max


@dataclass(frozen=True)
class Vision:
    """The skills, each returning its result and the image as prepared (for drawing on it)."""

    client: MoondreamClient
    images: ImageLoader

    async def caption(
        self,
        image: str,
        *,
        length: Literal["short", "normal", "long"] = "normal",
        model: str | None = None,
        sampling: Sampling | None = None,
    ) -> tuple[Caption, PreparedImage]:
        prepared = await self.images.load(image)
        result = await self.client.skills.caption(prepared.data_url, length=length, model=model, settings=sampling)
        return Caption(
            caption=result.caption,
            finish_reason=result.finish_reason,
            request_id=result.request_id,
            image=_size(prepared),
        ), prepared

    async def query(
        self,
        question: str,
        image: str | None = None,
        *,
        reasoning: bool = False,
        spatial_refs: list[list[float]] | None = None,
        model: str | None = None,
        sampling: Sampling | None = None,
    ) -> tuple[Answer, PreparedImage | None]:
        prepared = await self.images.load(image) if image is not None else None
        result = await self.client.skills.query(
            question,
            image_url=prepared.data_url if prepared else None,
            reasoning=reasoning,
            spatial_refs=spatial_refs,
            model=model,
            settings=sampling,
        )
        return Answer(
            answer=result.answer,
            reasoning=_trace(result.reasoning),
            request_id=result.request_id,
            image=_size(prepared) if prepared else None,
        ), prepared

    async def detect(
        self, image: str, object: str, *, model: str | None = None, sampling: Sampling | None = None
    ) -> tuple[Detection, PreparedImage]:
        prepared = await self.images.load(image)
        result = await self.client.skills.detect(prepared.data_url, object, model=model, settings=sampling)
        boxes = [_box(b) for b in result.objects]
        return Detection(objects=boxes, count=len(boxes), request_id=result.request_id, image=_size(prepared)), prepared

    async def point(
        self,
        image: str,
        object: str,
        *,
        spatial_refs: list[list[float]] | None = None,
        model: str | None = None,
        sampling: Sampling | None = None,
    ) -> tuple[Pointing, PreparedImage]:
        prepared = await self.images.load(image)
        result = await self.client.skills.point(
            prepared.data_url, object, spatial_refs=spatial_refs, model=model, settings=sampling
        )
        points = [Point(x=p.x, y=p.y) for p in result.points]
        return Pointing(points=points, count=len(points), request_id=result.request_id, image=_size(prepared)), prepared

    async def segment(
        self,
        image: str,
        object: str,
        *,
        spatial_refs: list[list[float]] | None = None,
        model: str | None = None,
        sampling: Sampling | None = None,
    ) -> tuple[Segmentation, PreparedImage]:
        prepared = await self.images.load(image)
        result = await self.client.skills.segment(
            prepared.data_url, object, spatial_refs=spatial_refs, model=model, settings=sampling
        )
        bbox = _box(result.bbox) if result.bbox is not None else None
        image_path = ""
        if bbox is not None and result.path:
            image_path = shapes.to_image_coordinates(result.path, corners(bbox))
        return Segmentation(
            path=result.path, bbox=bbox, image_path=image_path, request_id=result.request_id, image=_size(prepared)
        ), prepared

    async def ask(
        self,
        question: str,
        images: list[str],
        *,
        history: Sequence[Turn] = (),
        reasoning: bool = False,
        sampling: Sampling | None = None,
    ) -> Reply:
        """One question about one or more images (after earlier text turns), through the chat endpoint."""
        prepared = [await self.images.load(ref) for ref in images]
        messages = [turn.model_dump() for turn in history]
        messages.append(user_turn(question, [p.data_url for p in prepared]))
        settings = sampling or Sampling()
        try:
            reply = await self.client.chat.complete(
                messages,
                reasoning=reasoning,
                temperature=settings.temperature,
                top_p=settings.top_p,
                max_tokens=settings.max_tokens,
            )
        except NotFoundError:
            raise ChatUnavailable(
                f"{self.client.api.endpoint} serves no chat endpoint (Moondream Station has none): ask needs "
                "Moondream Cloud; for one image, use query"
            ) from None
        return Reply(
            answer=reply.content,
            reasoning=_trace(reply.reasoning),
            finish_reason=reply.finish_reason,
            images=[_size(p) for p in prepared],
        )
