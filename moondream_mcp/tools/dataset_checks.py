"""A dataset named to a tool: its path parameter, reading it with every problem found, and refusing it when
there are problems."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from .. import datasets
from ..datasets import Dataset, DatasetError, Problem
from ..images import ImageError
from .errors import tool_errors

if TYPE_CHECKING:
    from ..server import AppState

REFUSAL_PROBLEMS = 10  # listed in a refusal to start

DatasetPath = Annotated[str, Field(min_length=1, description=(
    "The dataset: an absolute path to a JSONL file inside the allowed directories, one example a line "
    "(see inspect_dataset for the format)."))]


async def read_dataset(state: AppState, path: str) -> tuple[Dataset, list[Problem], int]:
    """The dataset, every problem (lines, then images), and how many image URLs went unchecked."""
    with tool_errors(endpoint=state.settings.endpoint, secret=state.secret):
        checked = state.images.check_path(path)
    try:
        dataset = await anyio.to_thread.run_sync(datasets.load, checked)
    except DatasetError as exc:
        raise ToolError(str(exc)) from None

    def check(ref: str) -> str | None:
        if datasets.is_url(ref):
            return None
        try:
            real = state.images.check_path(ref)
        except ImageError as exc:
            return str(exc)
        return datasets.readable_image(real)

    image_problems = await anyio.to_thread.run_sync(datasets.image_problems, dataset.examples, check)
    urls = len({e.ref for e in dataset.examples if datasets.is_url(e.ref)})
    return dataset, dataset.problems + image_problems, urls


def refuse(what: str, path: str, problems: list[Problem]) -> ToolError:
    """The error to raise for a dataset with problems: what was refused, and the first few problems."""
    listed = "; ".join(str(p) for p in problems[:REFUSAL_PROBLEMS])
    more = f" (and {len(problems) - REFUSAL_PROBLEMS} more)" if len(problems) > REFUSAL_PROBLEMS else ""
    return ToolError(f"{what}: the dataset {path} has {len(problems)} problem(s): {listed}{more}. Fix them "
                     "(inspect_dataset lists them all) and try again.")

