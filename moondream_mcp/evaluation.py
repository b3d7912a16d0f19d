"""Models side by side on labelled examples: each example asked of each model at temperature 0,
concurrently, scored (scoring.py) and written one line per (example, model) to a JSONL file.
Knows nothing of MCP."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from . import scoring
from .client import MoondreamClient, Sampling
from .client.tuning import BASE_MODEL
from .config import IN_FLIGHT
from .datasets import Example
from .failures import EXPECTED, Explain
from .images import ImageLoader
from .jsonl import LineWriter, job_id

GREEDY = Sampling(temperature=0)

Progress = Callable[[int, int, str], Awaitable[None]]


def job(dataset: str, split: str, limit: int | None, models: Sequence[str | None]) -> str:
    """The id marking an evaluation's output: the same dataset, split, limit and models, the same job."""
    return job_id(tool="evaluate", dataset=dataset, split=split, limit=limit, models=[label(m) for m in models])


def label(model: str | None) -> str:
    return model or BASE_MODEL


@dataclass(frozen=True)
class Scored:
    score: float  # the example's primary score, 0-1: best-match IoU, hit rate or correctness
    prediction: dict[str, Any]
    detail: dict[str, Any]  # tp/fp/fn, hits or correct


async def predict(client: MoondreamClient, images: ImageLoader, example: Example, model: str | None) -> dict[str, Any]:
    """The model's greedy answer to one example, as the API gave it (coordinates 0-1)."""
    prepared = await images.load(example.ref)
    if example.skill == "detect":
        found = await client.skills.detect(prepared.data_url, example.object or "", settings=GREEDY, model=model)
        return {"objects": [b.model_dump(include={"x_min", "y_min", "x_max", "y_max"}) for b in found.objects]}
    if example.skill == "point":
        pointed = await client.skills.point(prepared.data_url, example.object or "", settings=GREEDY, model=model)
        return {"points": [{"x": p.x, "y": p.y} for p in pointed.points]}
    answered = await client.skills.query(
        example.question or "", image_url=prepared.data_url, settings=GREEDY, model=model
    )
    return {"answer": answered.answer}


def score(example: Example, prediction: dict[str, Any]) -> Scored:
    if example.skill == "detect":
        boxes = [(b["x_min"], b["y_min"], b["x_max"], b["y_max"]) for b in prediction.get("objects", [])]
        s = scoring.score_detect(boxes, example.boxes or ())
        return Scored(s.iou, prediction, {"iou": round(s.iou, 6), "tp": s.tp, "fp": s.fp, "fn": s.fn})
    if example.skill == "point":
        points = [(p["x"], p["y"]) for p in prediction.get("points", [])]
        p = scoring.score_point(points, points=example.points, boxes=example.boxes)
        return Scored(p.hit_rate, prediction, {"hit_rate": round(p.hit_rate, 6), "hits": p.hits})
    right = query_correct(example, str(prediction.get("answer", "")))
    return Scored(1.0 if right else 0.0, prediction, {"correct": right})


def query_correct(example: Example, answer: str) -> bool:
    return scoring.answer_correct(answer, example.answer or "", example.match, example.choices)


@dataclass
class Tally:
    """One model's results, accumulated example by example."""

    model: str
    examples: int = 0
    errors: int = 0
    first_error: str | None = None
    total: float = 0.0
    by_skill: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, skill: str, scored: Scored) -> None:
        self.examples += 1
        self.total += scored.score
        s = self.by_skill.setdefault(skill, {"examples": 0, "sum": 0.0, "tp": 0, "fp": 0, "fn": 0, "hits": 0})
        s["examples"] += 1
        s["sum"] += scored.score
        for key in ("tp", "fp", "fn", "hits"):
            s[key] += scored.detail.get(key, 0)

    def fail(self, message: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = message

    @property
    def score(self) -> float | None:
        """The mean of the examples' primary scores; None when no example could be scored."""
        return self.total / self.examples if self.examples else None

    def metrics(self) -> dict[str, dict[str, int | float]]:
        """Per skill: detect mean_iou, f1, precision, recall; point hit_rate; query accuracy."""
        out: dict[str, dict[str, int | float]] = {}
        for skill, s in self.by_skill.items():
            n = int(s["examples"])
            if skill == "detect":
                tp, fp, fn = int(s["tp"]), int(s["fp"]), int(s["fn"])
                out[skill] = {
                    "examples": n,
                    "mean_iou": round(s["sum"] / n, 4),
                    "f1": round(scoring.f1(tp, fp, fn), 4),
                    "precision": round(tp / (tp + fp), 4) if tp + fp else 1.0,
                    "recall": round(tp / (tp + fn), 4) if tp + fn else 1.0,
                }
            elif skill == "point":
                out[skill] = {"examples": n, "hit_rate": round(s["sum"] / n, 4)}
            else:
                out[skill] = {"examples": n, "accuracy": round(s["sum"] / n, 4)}
        return out


async def evaluate(
    client: MoondreamClient,
    images: ImageLoader,
    examples: Sequence[Example],
    models: Sequence[str | None],
    lines: LineWriter,
    *,
    concurrency: int = IN_FLIGHT,
    progress: Progress | None = None,
    explain: Explain = str,
) -> list[Tally]:
    """Ask every model every example (None is the base model), write a line per answer to `lines` (closed at
    the end) and tally the scores, in `models` order.

    An example a model cannot answer (an image that will not load, an API error after retries) is
    written with its error and counted in `errors`, not scored. Anything unexpected propagates.
    """
    tallies = [Tally(label(m)) for m in models]
    limiter = anyio.CapacityLimiter(max(1, concurrency))
    total = len(examples) * len(models)
    done = 0

    async def one(example: Example, index: int) -> None:
        nonlocal done
        model = models[index]
        record: dict[str, Any] = {
            "model": label(model),
            "line": example.line,
            "image": example.image,
            "skill": example.skill,
            "prompt": example.prompt,
        }
        async with limiter:
            try:
                prediction = await predict(client, images, example, model)
            except EXPECTED as exc:
                message = explain(exc)
                tallies[index].fail(message)
                record["error"] = message
            else:
                scored = score(example, prediction)
                tallies[index].add(example.skill, scored)
                record.update(prediction=prediction, score=round(scored.score, 6), **scored.detail)
            await anyio.to_thread.run_sync(lines.write, record)
        done += 1
        if progress is not None:
            await progress(done, total, f"{done}/{total} answers scored")

    try:
        async with anyio.create_task_group() as tasks:
            # Example by example, each model in turn: one image is loaded once and served from the cache.
            for example in examples:
                for index in range(len(models)):
                    tasks.start_soon(one, example, index)
    finally:
        await anyio.to_thread.run_sync(lines.close)
    return tallies
