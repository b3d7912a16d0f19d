"""Guided use of the finetuning loop: prompts that walk an agent through it, and a resource per run (its log)."""

from __future__ import annotations

import glob
import json
from pathlib import PurePath
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
   groups_per_step=8, rollouts_per_group=4, eval_every=5{mode}. It returns a run_id at once, and how many
   API calls the run makes (dry_run=true tells that without starting: ask the person if it is many);
   training goes on in the background and survives server restarts.
4. Watch it: call training_status with the run_id and wait_seconds=60 (it answers as soon as a step lands);
   with chart=true it also returns a picture of reward per step and eval score. Rising reward (RL steps;
   SFT steps have none) and eval score mean it is learning. If both stay flat after ~10 steps,
   stop_training and reconsider the data.
5. Compare: when the state is completed, call evaluate with dataset="{dataset}" and models=[<best_model from
   training_status>]. Report both rows side by side: the base model and the checkpoint.
6. Use it: pass the best checkpoint as model="moondream3-preview/<finetune_id>@<step>" to {skill_tools}.
   If the checkpoint is not better than the base model, say so and keep using the base model."""


_LABEL = """\
First make the dataset (the labels are what the model learns: a wrong label teaches a wrong answer):
A. Label: call label_images with images="{photos}", classes={classes} and output="{dataset}" (skill="point" to
   train pointing instead). Each class is asked on its own; each answer becomes an example marked
   reviewed=false. For thousands of photos pass engine="batch_api" (half price) and call again later with the
   same arguments to write the dataset.
B. Review: call review_labels with dataset="{dataset}" and unreviewed=true. Each contact sheet shows numbered
   photos with their boxes numbered; `cells` maps each cell to its line. Look at found="nothing" and
   found="many" too. Show the sheets to the person when unsure.
C. Fix: call fix_labels with fixes by line: accept the right ones (many lines in one fix), drop wrong boxes by
   number, replace misplaced ones with corrected boxes, none where the object is absent, remove photos that
   do not belong. Repeat B and C until unreviewed=true shows nothing.
D. Export (only if the person wants the dataset for another tool): call export_dataset with format coco, yolo
   or voc and a new folder.

Then train on it:
"""


def _dataset_for(photos: str) -> str:
    """Where the labels of `photos` go by default: labels.jsonl in the folder (a glob's fixed part)."""
    if not photos:
        return "<a new labels.jsonl beside the photos>"
    parts = PurePath(photos).parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    return str(PurePath(*parts[:fixed]) / "labels.jsonl") if fixed else "labels.jsonl"


def register(server: MCPServer[AppState]) -> None:
    @server.prompt(name="finetune-detector", title="Finetune a detector, from photos or labelled boxes")
    def finetune_detector(
        dataset: Annotated[
            str,
            Field(description="A JSONL dataset of detect/point examples, or a COCO JSON / YOLO folder to import."),
        ] = "",
        photos: Annotated[str, Field(description="Or: a folder or glob of unlabelled photos to label first.")] = "",
        classes: Annotated[str, Field(description="With photos: what to find, comma-separated.")] = "",
        steps: Annotated[str, Field(description="Train steps to take (default 20).")] = "20",
    ) -> str:
        """Walk through finetuning Moondream's detect (or point) skill: (label, review, fix, export,) inspect,
        baseline, train, watch, compare, use."""
        labelling = ""
        if photos or not dataset:
            dataset = _dataset_for(photos)
            labelling = _LABEL.format(
                photos=photos or "<the folder of photos>",
                classes=json.dumps([c.strip() for c in classes.split(",") if c.strip()])
                if classes.strip()
                else '[<what to find: ask the person, e.g. "solar panel">]',
                dataset=dataset,
            )
        looks_raw = not labelling and not dataset.endswith(".jsonl")
        hint = (
            (
                "\n   It does not look like a JSONL file: if it is a COCO JSON or a YOLO folder, first call "
                f'import_dataset with source="{dataset}", format="coco" or "yolo" and an output .jsonl path, then '
                "use that output as the dataset below."
            )
            if looks_raw
            else ""
        )
        start = "starting from unlabelled photos" if labelling else "from labelled boxes"
        return (
            f"You are finetuning Moondream to detect objects better, {start}.\n\n"
            + labelling
            + _LOOP.format(
                dataset=dataset,
                steps=steps or "20",
                import_hint=hint,
                metric="mean IoU and F1 (detect) or hit rate (point)",
                baseline_hint="RL needs the base model to be partly right already: with mode auto the run trains on "
                "the labels (SFT) while the eval score is below sft_below (0.5), then with RL.",
                skill_tools="detect (or point)",
                mode=', mode="auto"',
            )
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
                mode="",
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
