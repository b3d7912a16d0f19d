"""A dataset named to a tool: its path parameter, reading it, and refusing it when it has problems."""

from __future__ import annotations

from typing import Annotated

import anyio
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from .. import datasets
from ..datasets import Dataset, Problem
from ..state import AppState
from . import bounds
from .schemas import NonEmpty

REFUSAL_PROBLEMS = 10  # listed in a refusal to start

DatasetPath = Annotated[NonEmpty, Field(max_length=bounds.PATH_CHARS, description="Dataset.")]


async def read_dataset(state: AppState, path: str) -> tuple[Dataset, list[Problem], int]:
    """The dataset, every problem (lines, then images), and how many image URLs went unchecked."""
    with state.errors():
        return await anyio.to_thread.run_sync(datasets.read_checked, state.files, path)


def refuse(what: str, path: str, problems: list[Problem]) -> ToolError:
    """The error to raise for a dataset with problems: what was refused, and the first few problems."""
    listed = "; ".join(str(p) for p in problems[:REFUSAL_PROBLEMS])
    more = f" (and {len(problems) - REFUSAL_PROBLEMS} more)" if len(problems) > REFUSAL_PROBLEMS else ""
    return ToolError(
        f"{what}: the dataset {path} has {len(problems)} problem(s): {listed}{more}. Fix them "
        "(inspect_dataset lists them all) and try again."
    )
