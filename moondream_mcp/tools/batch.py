"""The batch tool: one skill over many images, rate-limited, resumable, summarized."""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from .. import batching
from ..client import Sampling
from .errors import EXPECTED, describe, tool_errors
from .results import compact
from .skills import (
    Length,
    MaxObjects,
    MaxTokens,
    Model,
    Reasoning,
    Temperature,
    TopP,
    run_caption,
    run_detect,
    run_point,
    run_query,
    run_segment,
)

if TYPE_CHECKING:
    from mcp.server import MCPServer

    from ..server import AppState

CONCURRENCY = 8  # in flight at once; the client's rate limiter decides how fast they go out


class Failure(BaseModel):
    reason: str = Field(description="What went wrong (the image named as <image>).")
    count: int
    images: list[str] = Field(description="Up to 5 of the images that failed this way.")


class Sample(BaseModel):
    image: str
    result: dict[str, Any]


class BatchSummary(BaseModel):
    skill: str
    total: int = Field(description="Images in the batch.")
    succeeded: int = Field(description="Finished successfully in this run.")
    failed: int = Field(description="Failed in this run (a rerun tries them again).")
    skipped: int = Field(description="Already done by an earlier run with the same output and parameters.")
    output: str = Field(description="The JSONL file: one line per image, {image, ok, result | error}.")
    elapsed_s: float
    images_per_second: float = Field(description="Achieved rate in this run.")
    failures: list[Failure] = Field(description="Failures grouped by reason, most common first.")
    samples: list[Sample] = Field(description="A few results, to check they look right.")
    message: str


def _job(skill: str, params: dict[str, Any]) -> str:
    # Lines carry this, so a rerun skips only images done with the same skill and parameters.
    canonical = json.dumps({"skill": skill, **params}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def register(server: MCPServer[AppState]) -> None:
    @server.tool(title="Run a skill over many images", annotations=ToolAnnotations(
        read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True))
    @compact
    async def batch(
        skill: Annotated[Literal["caption", "query", "detect", "point", "segment"],
                         Field(description="The skill to run on every image.")],
        images: Annotated[list[str] | str, Field(description=(
            "The images: a list of references (paths, file://, http(s) or data URLs), or one string naming a "
            "directory (its image files) or a glob such as ~/shoot/**/*.jpg, inside the allowed directories."))],
        ctx: Context,
        object: Annotated[str | None, Field(description="detect / point / segment: what to look for.")] = None,
        question: Annotated[str | None, Field(description="query: the question asked of every image.")] = None,
        length: Length = "normal",
        reasoning: Reasoning = False,
        max_objects: MaxObjects = None,
        model: Model = None,
        temperature: Temperature = None,
        top_p: TopP = None,
        max_tokens: MaxTokens = None,
        output: Annotated[str | None, Field(description=(
            "Where to write the JSONL results (inside the allowed directories). Default: a file in the "
            "server's data directory named after the job. Rerunning with the same output resumes."))] = None,
    ) -> BatchSummary:
        """Run one skill on many images and append each result to a JSONL file as it completes. Requests go
        out as fast as the account's rate limit allows (shared with every other tool); rate-limit answers are
        retried. Returns a summary with counts, failures by reason and a few samples, not every result.
        Coordinates in results are 0-1, origin top-left of each image as displayed."""
        state: AppState = ctx.request_context.lifespan_context
        if skill in ("detect", "point", "segment") and not object:
            raise ToolError(f"the {skill} skill needs `object`")
        if skill == "query" and not question:
            raise ToolError("the query skill needs `question`")
        sampling = Sampling(temperature=temperature, top_p=top_p, max_tokens=max_tokens,
                            max_objects=max_objects if skill == "detect" else None)
        params = {"object": object, "question": question, "length": length, "reasoning": reasoning,
                  "model": model, **sampling.model_dump()}

        async def work(ref: str) -> dict[str, Any]:
            if skill == "caption":
                out, _ = await run_caption(state, ref, length=length, model=model, sampling=sampling)
            elif skill == "query":
                out, _ = await run_query(state, question or "", ref, reasoning=reasoning, model=model,
                                         sampling=sampling)
            elif skill == "detect":
                out, _ = await run_detect(state, ref, object or "", model=model, sampling=sampling)
            elif skill == "point":
                out, _ = await run_point(state, ref, object or "", model=model, sampling=sampling)
            else:
                out, _ = await run_segment(state, ref, object or "", sampling=sampling)
            return out.model_dump(mode="json")

        with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
            refs = batching.expand(images, state.images)
            job = _job(skill, params)
            if output is not None:
                path = state.images.check_path(output, for_writing=True)
            else:
                path = state.settings.data_dir / "batches" / f"{skill}-{job}-{_job('refs', {'r': refs})[:8]}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)

        async def progress(done: int, total: int, message: str) -> None:
            await ctx.report_progress(done, total, message)

        try:
            outcome = await batching.run(
                refs, work, batching.ResultLog(path), job=job, expected=EXPECTED,
                explain=lambda exc: describe(exc, endpoint=state.settings.endpoint, secret=state.secret),
                concurrency=CONCURRENCY, progress=progress,
            )
        except OSError as exc:
            raise ToolError(f"cannot write the results file {path}: {exc.strerror}") from None
        processed = outcome.succeeded + outcome.failed
        failures = [Failure(reason=reason, count=count, images=outcome.failed_images[reason])
                    for reason, count in outcome.failures.most_common()]
        parts = [f"{outcome.succeeded} of {processed} images done" if processed else "nothing left to do"]
        if outcome.skipped:
            parts.append(f"{outcome.skipped} skipped: already done in {path}")
        if outcome.failed:
            parts.append(f"{outcome.failed} failed (rerun with the same output to retry them)")
        return BatchSummary(
            skill=skill, total=outcome.total, succeeded=outcome.succeeded, failed=outcome.failed,
            skipped=outcome.skipped, output=str(path), elapsed_s=round(outcome.elapsed, 3),
            images_per_second=round(processed / outcome.elapsed, 3) if outcome.elapsed > 0 else 0.0,
            failures=failures, samples=[Sample(**s) for s in outcome.samples], message="; ".join(parts) + ".",
        )


