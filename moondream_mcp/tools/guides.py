"""Guided use of the finetuning loop: prompts that walk an agent through it, and a resource per run (its log)."""

from __future__ import annotations

import json
from typing import Annotated

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from pydantic import Field

from ..state import AppState, Ctx
from .runs import RUN_URI, run_status

_LOOP = """\
1. Check the data: call inspect_dataset with path="{dataset}". Fix every problem it lists (missing or unreadable
   images, boxes out of range or inverted, empty labels) before going on; look at its counts by split: the
   eval split is what every comparison below is measured on.{import_hint}
2. Measure the starting point: call evaluate with dataset="{dataset}" (base model only). Note the {metric}.
   {baseline_hint}
3. Start training: call start_training with dataset="{dataset}", name="<a short name>", steps={steps},
   groups_per_step=8, rollouts_per_group=4, eval_every=5. It returns a run_id at once; training goes on in
   the background and survives server restarts.
4. Watch it: call training_status with the run_id and wait_seconds=60 (it answers as soon as a step lands);
   with chart=true it also returns a picture of reward per step and eval score. Rising reward and eval
   score mean it is learning. If reward stays flat after ~10 steps, stop_training and reconsider the data.
5. Compare: when the state is completed, call evaluate with dataset="{dataset}" and models=[<best_model from
   training_status>]. Report both rows side by side: the base model and the checkpoint.
6. Use it: pass the best checkpoint as model="moondream3-preview/<finetune_id>@<step>" to {skill_tools}.
   If the checkpoint is not better than the base model, say so and keep using the base model."""


def register(server: MCPServer[AppState]) -> None:
    @server.prompt(name="finetune-detector", title="Finetune a detector on labelled boxes")
    def finetune_detector(
        dataset: Annotated[
            str,
            Field(
                description="The JSONL dataset of detect/point examples, or a COCO JSON / YOLO folder to import first."
            ),
        ],
        steps: Annotated[str, Field(description="Train steps to take (default 20).")] = "20",
    ) -> str:
        """Walk through finetuning Moondream's detect (or point) skill: inspect, baseline, train, watch, compare,
        use."""
        looks_raw = not dataset.endswith(".jsonl")
        hint = (
            (
                "\n   It does not look like a JSONL file: if it is a COCO JSON or a YOLO folder, first call "
                f'import_dataset with source="{dataset}", format="coco" or "yolo" and an output .jsonl path, then '
                "use that output as the dataset below."
            )
            if looks_raw
            else ""
        )
        return "You are finetuning Moondream to detect objects better, from labelled boxes.\n\n" + _LOOP.format(
            dataset=dataset,
            steps=steps or "20",
            import_hint=hint,
            metric="mean IoU and F1 (detect) or hit rate (point)",
            baseline_hint="RL needs the base model to be partly right already: a mean IoU near 0 means the "
            "labels or the object names need another look first.",
            skill_tools="detect (or point)",
        )

    @server.prompt(name="finetune-query", title="Finetune question answering on labelled answers")
    def finetune_query(
        dataset: Annotated[
            str,
            Field(
                description="The JSONL dataset of query examples (question + answer, optional choices and match rule)."
            ),
        ],
        steps: Annotated[str, Field(description="Train steps to take (default 20).")] = "20",
    ) -> str:
        """Walk through finetuning Moondream's query skill: inspect, baseline, train, watch, compare, use."""
        return (
            "You are finetuning Moondream to answer questions about images better, from labelled answers. "
            "Rewards are computed by each example's match rule (exact / normalized / regex / contains, or "
            "choices), so check that the rule accepts every right phrasing of an answer.\n\n"
            + _LOOP.format(
                dataset=dataset,
                steps=steps or "20",
                import_hint="",
                metric="accuracy",
                baseline_hint="If the base model is already near 100%, there is little to gain; near 0%, "
                "check the labels and the match rule before training.",
                skill_tools="query",
            )
        )

    @server.resource(
        RUN_URI,
        name="training-run",
        title="Training run log",
        mime_type="application/json",
        description="A training run's full log: parameters, state, every step's reward, evaluations and checkpoints.",
    )
    async def run_log(run_id: str, ctx: Ctx) -> str:
        state: AppState = ctx.request_context.lifespan_context
        run = await state.store.run(run_id)
        if run is None:
            raise ResourceNotFoundError(f"no training run {run_id}")
        status = await run_status(state, run, history=None)
        return json.dumps(status.model_dump(mode="json"), separators=(",", ":"))
