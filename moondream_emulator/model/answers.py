"""What the emulator says about a scene: captions, answers to questions and grounded reasoning.

Every sentence is a deterministic function of the regions found, so tests can predict it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .vision import Region, Scene, colour_in

NO_IMAGE_ANSWER = "I need an image to answer that."
_NUMBERS = [
    "no",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
]
_MAX_DESCRIBED = 8  # regions placed one by one in a long caption


@dataclass(frozen=True)
class Reasoning:
    text: str
    grounding: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "grounding": self.grounding}


def count_phrase(count: int, colour: str) -> str:
    """ "two red shapes", "one blue shape"."""
    number = _NUMBERS[count] if count < len(_NUMBERS) else str(count)
    return f"{number} {colour} shape{'' if count == 1 else 's'}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _groups(scene: Scene) -> list[tuple[str, list[Region]]]:
    return [(colour, scene.of_colour(colour)) for colour in scene.colours()]


def inventory(scene: Scene) -> str:
    """ "two red shapes and one blue shape" (colours in the order of their largest region)."""
    return _join([count_phrase(len(regions), colour) for colour, regions in _groups(scene)])


def _background(scene: Scene) -> str:
    return f" on a {scene.background} background" if scene.background else ""


def place(region: Region) -> str:
    """Where a region's centre is: "top left", "center", "bottom", ..."""
    x, y = region.centre
    horizontal = "left" if x < 1 / 3 else "right" if x > 2 / 3 else ""
    vertical = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else ""
    return " ".join(word for word in (vertical, horizontal) if word) or "center"


def caption(scene: Scene, length: str) -> str:
    if not scene.regions:
        plain = f"plain {scene.background}" if scene.background else "featureless"
        if length == "short":
            return f"A {plain} image."
        return f"An image with no distinct shapes: a {plain} surface."
    things = inventory(scene)
    if length == "short":
        return things[0].upper() + things[1:] + "."
    normal = f"An image showing {things}{_background(scene)}."
    if length == "normal":
        return normal
    placed = [f"a {r.colour} shape at the {place(r)}" for r in scene.regions[:_MAX_DESCRIBED]]
    largest = scene.regions[0]
    return (
        f"{normal} There is {_join(placed)}. The largest is the {largest.colour} shape, "
        f"covering about {round(largest.area * 100)}% of the image."
    )


def answer(question: str, scene: Scene | None) -> str:
    """A short answer: counts as digits, colours present, yes/no, or what is there."""
    if scene is None:
        return NO_IMAGE_ANSWER
    lowered = question.lower()
    colour = colour_in(question)
    matching = scene.of_colour(colour) if colour else list(scene.regions)
    if re.search(r"\bhow many\b", lowered):
        return str(len(matching))
    if re.search(r"\b(what|which) colou?rs?\b", lowered):
        colours = scene.colours()
        if not colours:
            return "There are no coloured shapes."
        listed = _join(colours)
        return listed[0].upper() + listed[1:] + "."
    if re.match(r"\s*(is|are) there\b", lowered):
        return "Yes" if matching else "No"
    if not scene.regions:
        return "I see no distinct shapes."
    return f"I see {inventory(scene)}{_background(scene)}."


def reasoning(question: str, scene: Scene | None, final: str) -> Reasoning:
    """Reasoning text naming each colour group, grounded at the centres of that group's regions."""
    if scene is None:
        return Reasoning("There is no image to look at, so I answer from what I know.", [])
    if not scene.regions:
        return Reasoning(f"I look at the image and see no distinct shapes. So the answer is: {final}", [])
    text = "I look at the image and see "
    grounding: list[dict[str, Any]] = []
    phrases = []
    for colour, regions in _groups(scene):
        phrases.append((count_phrase(len(regions), colour), regions))
    for i, (phrase, regions) in enumerate(phrases):
        if i:
            text += " and " if i == len(phrases) - 1 else ", "
        grounding.append(
            {
                "start_idx": len(text),
                "end_idx": len(text) + len(phrase),
                "points": [[round(r.centre[0], 6), round(r.centre[1], 6)] for r in regions],
            }
        )
        text += phrase
    text += f". So the answer is: {final}"
    return Reasoning(text, grounding)


def tokens(text: str) -> list[str]:
    """The text cut into word tokens, each with its trailing space: joined, they give the text back."""
    return re.findall(r"\s*\S+\s*", text) if text.strip() else ([text] if text else [])


def limit(text: str, max_tokens: int | None) -> tuple[str, str]:
    """The text cut to max_tokens word tokens, and the finish reason ("stop" or "length")."""
    words = tokens(text)
    if max_tokens is None or len(words) <= max_tokens:
        return text, "stop"
    return "".join(words[:max_tokens]).rstrip(), "length"


def metrics(prompt: str, output: str, *, with_image: bool) -> dict[str, float | int]:
    """Plausible, deterministic usage numbers (an image costs a fixed 729 tokens, as 27x27 patches)."""
    input_tokens = (729 if with_image else 0) + len(tokens(prompt))
    output_tokens = len(tokens(output))
    prefill = round(20 + input_tokens * 0.05, 2)
    decode = round(output_tokens * 8.0, 2)
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "prefill_time_ms": prefill,
        "decode_time_ms": decode,
        "ttft_ms": round(prefill + 8.0, 2),
    }


# --- several images at once (the chat endpoint) -------------------------------------------------------


def _images_phrase(numbers: list[int]) -> str:
    return ("Image " if len(numbers) == 1 else "Images ") + _join([str(n) for n in numbers])


def answer_across(question: str, scenes: list[Scene]) -> str:
    """A short answer about several images, numbered from 1: counts add up, colours join, "which image"
    names the images that show the colour; anything else is described image by image."""
    if not scenes:
        return NO_IMAGE_ANSWER
    if len(scenes) == 1:
        return answer(question, scenes[0])
    lowered = question.lower()
    colour = colour_in(question)

    def matching(scene: Scene) -> list[Region]:
        return scene.of_colour(colour) if colour else list(scene.regions)

    if re.search(r"\bwhich (image|photo|picture|screenshot|one)s?\b", lowered):
        showing = [i for i, scene in enumerate(scenes, 1) if matching(scene)]
        return f"{_images_phrase(showing)}." if showing else "None of them."
    if re.search(r"\bhow many\b", lowered):
        return str(sum(len(matching(scene)) for scene in scenes))
    if re.search(r"\b(what|which) colou?rs?\b", lowered):
        colours = list(dict.fromkeys(c for scene in scenes for c in scene.colours()))
        if not colours:
            return "There are no coloured shapes."
        listed = _join(colours)
        return listed[0].upper() + listed[1:] + "."
    if re.match(r"\s*(is|are|do|does) (there|any)\b", lowered):
        return "Yes" if any(matching(scene) for scene in scenes) else "No"
    described = [
        f"image {i} shows {inventory(scene) if scene.regions else 'no distinct shapes'}"
        for i, scene in enumerate(scenes, 1)
    ]
    text = "; ".join(described) + "."
    return text[0].upper() + text[1:]


def reasoning_across(question: str, scenes: list[Scene], final: str) -> Reasoning:
    """Reasoning that looks at each image in turn, each colour group grounded at its regions' centres."""
    if len(scenes) == 1:
        return reasoning(question, scenes[0], final)
    text = ""
    grounding: list[dict[str, Any]] = []
    for i, scene in enumerate(scenes, 1):
        text += f"In image {i} I see "
        if not scene.regions:
            text += "no distinct shapes. "
            continue
        groups = _groups(scene)
        for j, (colour, regions) in enumerate(groups):
            if j:
                text += " and " if j == len(groups) - 1 else ", "
            phrase = count_phrase(len(regions), colour)
            grounding.append(
                {
                    "start_idx": len(text),
                    "end_idx": len(text) + len(phrase),
                    "points": [[round(r.centre[0], 6), round(r.centre[1], 6)] for r in regions],
                }
            )
            text += phrase
        text += ". "
    text += f"So the answer is: {final}"
    return Reasoning(text, grounding)
