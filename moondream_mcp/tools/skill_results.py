"""What the skill tools return: typed results whose schemas clients see."""

from __future__ import annotations

from pydantic import BaseModel, Field


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


class CaptionOutput(BaseModel):
    caption: str
    finish_reason: str | None = Field(description="Why generation stopped, as the API reported it.")
    request_id: str | None
    image: ImageSize


class Grounding(BaseModel):
    start_idx: int = Field(description="Start character offset into reasoning.text.")
    end_idx: int = Field(description="End character offset into reasoning.text.")
    points: list[Point] = Field(description="Where in the image that part of the reasoning looked.")


class ReasoningOutput(BaseModel):
    text: str
    grounding: list[Grounding]


class QueryOutput(BaseModel):
    answer: str
    reasoning: ReasoningOutput | None = Field(description="The model's reasoning, when reasoning was on.")
    request_id: str | None
    image: ImageSize | None = Field(description="Size of the image asked about; null for a text-only question.")


class DetectOutput(BaseModel):
    objects: list[Box] = Field(description="One box per object found, normalized 0-1, origin top-left.")
    count: int
    request_id: str | None
    image: ImageSize


class PointOutput(BaseModel):
    points: list[Point] = Field(description="One point per object found, normalized 0-1, origin top-left.")
    count: int
    request_id: str | None
    image: ImageSize


class SegmentOutput(BaseModel):
    path: str = Field(description="SVG path data exactly as the API returned it: coordinates 0-1 relative to bbox.")
    bbox: Box | None = Field(description="The object's bounding box in the image, normalized 0-1; null if not found.")
    image_path: str = Field(description="The same outline as SVG path data in whole-image coordinates (0-1); "
                            "scale by image.width/height for pixels.")
    request_id: str | None
    image: ImageSize
