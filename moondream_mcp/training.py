"""Training runs: a Runner, owned by the server's lifespan, drives each run as a background task — sample
groups, roll out, reward, train_step, record, evaluate, save — and resumes unfinished runs when the
server starts again. Knows nothing of MCP.

A step. Run step i samples `groups_per_step` train examples (seeded by the run's seed and i, so a
redone step asks the same questions). An RL step asks /rollouts for each concurrently, rewards them
(point and detect: the API's ground-truth rewards; query: the label's match rule, scoring.py), and sends
one train_step with the echoed requests and rollouts byte for byte (client.tuning.rl_group). An SFT step
sends the labels themselves as targets (client.tuning.sft_group): no rollouts. The run's mode says which:
rl, sft, or auto — SFT while the latest eval score (before the first step: a baseline of the finetune as
it was) is below `sft_below`, RL from then on; RL helps only where the model already partly succeeds.
Each step's mode is recorded with it.

Exactly once, across crashes. train_step is not idempotent, so the run's row in SQLite is a journal:
1. Before train_step is sent, the run is marked in flight: {step i, the API step it should produce
   (the last recorded API step + 1), its reward statistics}.
2. When the API answers, the step is recorded under the step number the API returned, and the mark
   cleared, in one transaction (Store.record_step). Nothing moves on before that commit.
3. If the answer never comes — kill -9, a timeout or a 5xx after sending, the server shutting down —
   the mark survives, and before anything else the run reconciles: POST /checkpoints/save saves and
   returns the finetune's current step (idempotent; every step has an implicit checkpoint). If that
   reached the marked step, the step was applied and is recorded (its rewards came from the mark; the
   API's own metrics for it are lost). If not, the mark is cleared and the step redone. So no step is
   lost and none is applied twice, and a restart resumes from the last completed step.
The finetune's step before the run (base_step) is learnt the same way before the first step
(404 from save: never trained, 0).

One driver. Every server sharing the data directory resumes the runs left running, so each run is driven
only by the process holding its lease (Store.lease): the others leave it be, and look again every
ADOPT_SECONDS, taking it over once its driver has gone (the lease goes with the process, however it ends).

Evaluation and checkpoints. A `model` string can only name a saved checkpoint, so each evaluated step
is saved, then scored on the eval split at temperature 0 (evaluation.py). The best score so far marks
its checkpoint best; at the end the last step is saved too. Checkpoints the save policy does not keep
are deleted once they are no longer the finetune's latest (deleting the latest would block training),
and only those this run made (above base_step).
"""

from __future__ import annotations

import logging
import random
import statistics
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import anyio
from anyio.abc import TaskGroup
from pydantic import BaseModel, ConfigDict, field_validator

from . import evaluation, jsonl
from .client import (
    APIConnectionError,
    APIStatusError,
    GoneError,
    MoondreamClient,
    NotFoundError,
    Sampling,
    ServerError,
    StreamError,
)
from .client.rawjson import array_items, member
from .client.tuning import (
    DEFAULT_LR,
    checkpoint_model,
    ground_truth,
    rl_group,
    sft_group,
    sft_target,
    skill_request,
)
from .config import IN_FLIGHT
from .datasets import Example
from .failures import EXPECTED, Explain
from .files import FileGuard
from .images import ImageLoader
from .jsonl import LineWriter
from .store import Run, RunLease, RunStep, Store, new_id

log = logging.getLogger(__name__)

SavePolicy = Literal["best_and_last", "last", "all"]
ADOPT_SECONDS = 10.0  # how often runs driven by another process are looked at, to take over when it is gone


Mode = Literal["rl", "sft", "auto"]


class RunConfig(BaseModel):
    """A run's parameters, stored with it."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    mode: Mode = "rl"
    sft_below: float = 0.5  # auto: SFT while the latest eval score is below this
    steps: int
    groups_per_step: int
    rollouts_per_group: int
    lr: float = DEFAULT_LR
    temperature: float = 1.0
    eval_every: int = 0
    save: SavePolicy = "best_and_last"
    seed: int = 0

    @field_validator("lr", mode="before")
    @classmethod
    def _stored_none(cls, value: Any) -> Any:
        # Runs stored before lr was always sent hold null: they go on at the default.
        return DEFAULT_LR if value is None else value


@dataclass(frozen=True)
class Plan:
    """The API calls a run will make, so a person can judge its cost before it starts."""

    rollouts: int  # /rollouts calls, at most (auto: if every step turns out RL)
    rollouts_at_least: int
    train_steps: int
    evaluation: int  # skill calls scoring checkpoints on the eval split (and auto's baseline)
    checkpoints: int  # saves and deletes, at most

    @property
    def total(self) -> int:
        return self.rollouts + self.train_steps + self.evaluation + self.checkpoints


def eval_steps(steps: int, every: int) -> list[int]:
    """The steps after which a run evaluates: every `every` steps, and after the last."""
    return sorted({i for i in range(1, steps + 1) if i % every == 0} | {steps}) if every > 0 else []


def plan(config: RunConfig, *, eval_examples: int) -> Plan:
    evals = len(eval_steps(config.steps, config.eval_every)) if eval_examples else 0
    rl = config.steps * config.groups_per_step
    return Plan(
        rollouts=0 if config.mode == "sft" else rl,
        rollouts_at_least=rl if config.mode == "rl" else 0,
        train_steps=config.steps,
        evaluation=eval_examples * (evals + (config.mode == "auto")),
        checkpoints=2 + 2 * evals,  # the first and the last save, a save per evaluation, a delete for each
    )


class RunFailed(Exception):
    """A run cannot go on; the message is meant for the agent."""


GROUP_FAILURES: tuple[type[Exception], ...] = (*EXPECTED, RunFailed)  # what ends one group, not the step


def choose_examples(train: Sequence[Example], count: int, seed: int, step: int) -> list[Example]:
    """The step's examples: seeded shuffles of the train split, concatenated until there are `count`."""
    if not train:
        raise RunFailed("the train split is empty")
    rng = random.Random(f"{seed}:{step}")  # a str seed is hashed with SHA-512: stable across processes
    picked: list[int] = []
    while len(picked) < count:
        order = list(range(len(train)))
        rng.shuffle(order)
        picked += order
    return [train[i] for i in picked[:count]]


async def request_rollouts(
    client: MoondreamClient, example: Example, config: RunConfig, finetune_id: str, image_url: str
) -> tuple[dict[str, Any], str]:
    """One example's rollouts; point and detect carry the label as ground truth, so the API rewards them."""
    sampling = Sampling(temperature=config.temperature)
    if example.skill == "query":
        request = skill_request(
            "query", question=example.question, image_url=image_url, reasoning=False, settings=sampling
        )
        return await client.tuning.rollouts(finetune_id, request, num_rollouts=config.rollouts_per_group)
    request = skill_request(example.skill, object=example.object, image_url=image_url, settings=sampling)
    truth = (
        ground_truth(points=list(example.points))
        if example.points is not None
        else ground_truth(boxes=list(example.boxes or ()))
    )
    return await client.tuning.rollouts(
        finetune_id, request, num_rollouts=config.rollouts_per_group, ground_truth=truth
    )


def query_rewards(example: Example, rollouts: list[Any]) -> list[float]:
    rewards = []
    for rollout in rollouts:
        output = rollout.get("output") if isinstance(rollout, dict) else None
        answer = output.get("answer") if isinstance(output, dict) else None
        correct = isinstance(answer, str) and evaluation.query_correct(example, answer)
        rewards.append(1.0 if correct else 0.0)
    return rewards


def timing(
    run: Run, steps: Sequence[RunStep], eval_seconds: Sequence[float], now: float | None = None
) -> tuple[float, float | None]:
    """Elapsed seconds since the run started and an estimate of the seconds left (None until a step is done)."""
    now = time.time() if now is None else now
    elapsed = (run.finished_at or now) - run.created_at
    if run.state != "running":
        return elapsed, 0.0
    timed = [s.seconds for s in steps if s.seconds is not None]
    if not timed:
        return elapsed, None
    remaining = run.total_steps - run.steps_done
    left = remaining * statistics.fmean(timed)
    every = int(run.config.get("eval_every") or 0)
    if every and eval_seconds:
        evals_left = len(
            [i for i in range(run.steps_done + 1, run.total_steps + 1) if i % every == 0 or i == run.total_steps]
        )
        left += evals_left * statistics.fmean(eval_seconds)
    return elapsed, left


def _unwrap(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


class Runner:
    """Starts, resumes and stops runs; each runs as a task in a task group that lives as long as `serving()`."""

    def __init__(
        self,
        *,
        store: Store,
        client: MoondreamClient,
        images: ImageLoader,
        files: FileGuard,
        explain: Explain = str,
        concurrency: int = IN_FLIGHT,
    ) -> None:
        self.store = store
        self.client = client
        self.images = images
        self.files = files
        self._explain = explain
        self._concurrency = concurrency
        self._tasks: TaskGroup | None = None
        self._active: set[str] = set()
        self._changed = anyio.Event()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[Runner]:
        """Run in the background until the context exits; runs left "running" resume here unless another
        process drives them (then they are taken over once it has gone). On exit the tasks are cancelled,
        their leases let go, and their runs stay "running", to resume next time or elsewhere."""
        async with anyio.create_task_group() as tasks:
            self._tasks = tasks
            try:
                await self._adopt()
                tasks.start_soon(self._keep_adopting, name="adopting training runs")
                yield self
            finally:
                self._tasks = None
                tasks.cancel_scope.cancel()

    async def start(
        self, *, finetune_id: str, dataset: str, config: RunConfig, train: Sequence[Example], evals: Sequence[Example]
    ) -> str:
        """A new run, driven here. store.Refused if the finetune already has a running run."""
        run_id = new_id("run")
        lease = await anyio.to_thread.run_sync(self.store.lease, run_id)
        try:
            await self.store.create_run(
                run_id=run_id,
                finetune_id=finetune_id,
                dataset=dataset,
                config=config.model_dump(),
                examples={"train": [e.to_json() for e in train], "eval": [e.to_json() for e in evals]},
                total_steps=config.steps,
            )
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        self._launch(run_id, lease)
        self._notify()
        return run_id

    async def stop(self, run_id: str) -> None:
        """Ask a run to stop after its current step (whichever process drives it)."""
        await self.store.update_run(run_id, stop_requested=1)
        self._notify()

    def next_change(self) -> anyio.Event:
        """An event set when any run next records something or changes state. Take it before reading the
        store, then wait on it: a change in between is not missed."""
        return self._changed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _adopt(self) -> None:
        running = await self.store.runs(state="running")
        if self._tasks is None:
            return  # the server stopped while the store answered: the runs resume on its next start
        for run in running:
            self._launch(run.id)

    async def _keep_adopting(self) -> None:
        while True:
            await anyio.sleep(ADOPT_SECONDS)
            await self._adopt()

    def _launch(self, run_id: str, lease: RunLease | None = None) -> None:
        if self._tasks is None:
            raise RuntimeError("the runner is not serving")
        if run_id in self._active:
            return
        self._active.add(run_id)
        self._tasks.start_soon(self._drive, run_id, lease, name=f"training run {run_id}")

    async def _drive(self, run_id: str, lease: RunLease | None) -> None:
        if lease is None:
            lease = await anyio.to_thread.run_sync(self.store.lease, run_id)
            if lease is None:  # another process drives it
                self._active.discard(run_id)
                return
        try:
            await self._run(run_id)
        except Exception as exc:  # a run fails alone; the server and other runs go on
            cause = _unwrap(exc)
            if isinstance(cause, RunFailed):
                message = str(cause)
            elif isinstance(cause, EXPECTED):
                message = self._explain(cause)
            else:
                log.exception("training run %s failed", run_id)
                message = f"internal error: {type(cause).__name__}; see the server log"
            await self.store.update_run(run_id, state="failed", error=message, finished_at=time.time())
        finally:
            lease.release()
            self._active.discard(run_id)
            self._notify()

    # ---- the loop ---------------------------------------------------------------------------------

    async def _run(self, run_id: str) -> None:
        run = await self.store.run(run_id)
        if run is None or run.state != "running":
            return  # ended while its last driver still held it
        config = RunConfig.model_validate(run.config)
        snapshot = await self.store.run_examples(run_id)
        train = [Example.from_json(e) for e in snapshot.get("train", [])]
        evals = [Example.from_json(e) for e in snapshot.get("eval", [])]
        if run.base_step is None:
            await self.store.update_run(run_id, base_step=await self._current_step(run))
        if config.mode == "auto" and evals and all(e.step != 0 for e in await self.store.run_evals(run_id)):
            await self._baseline(await self._load(run_id), evals)
        while True:
            run = await self._load(run_id)
            if run.in_flight is not None:
                await self._reconcile(run)
                continue
            current = run.last_api_step if run.last_api_step is not None else run.base_step or 0
            if evals and await self._eval_due(run, config):
                await self._evaluate(run, evals, current)
                run = await self._load(run_id)
            await self._prune(run, config, current)
            if run.stop_requested or run.steps_done >= run.total_steps:
                break
            await self._step(run, config, train, current, await self._mode(run, config))
        await self._finish(run_id, config)

    async def _load(self, run_id: str) -> Run:
        run = await self.store.run(run_id)
        if run is None:
            raise RunFailed(f"run {run_id} vanished from the store")
        return run

    async def _mode(self, run: Run, config: RunConfig) -> Literal["rl", "sft"]:
        """The next step's mode. auto: RL once any step was RL (no going back), else by the latest eval."""
        if config.mode != "auto":
            return config.mode
        if any(s.mode == "rl" for s in await self.store.run_steps(run.id)):
            return "rl"
        scored = [e for e in await self.store.run_evals(run.id) if e.score is not None]
        latest = max(scored, key=lambda e: e.step) if scored else None
        return "rl" if latest is not None and latest.score is not None and latest.score >= config.sft_below else "sft"

    async def _step(
        self, run: Run, config: RunConfig, train: Sequence[Example], current: int, mode: Literal["rl", "sft"]
    ) -> None:
        step = run.steps_done + 1
        expected = current + 1
        started = time.monotonic()
        chosen = choose_examples(train, config.groups_per_step, config.seed, step)
        groups: list[str] = [""] * len(chosen)
        rewards: list[list[float]] = [[] for _ in chosen]
        failures: list[Exception] = []
        limiter = anyio.CapacityLimiter(self._concurrency)

        async def one(index: int, example: Example) -> None:
            async with limiter:
                try:
                    if mode == "sft":
                        groups[index] = await self._sft_group(example)
                    else:
                        groups[index], rewards[index] = await self._group(run.finetune_id, example, config)
                except GROUP_FAILURES as exc:
                    failures.append(exc)

        async with anyio.create_task_group() as tasks:
            for index, example in enumerate(chosen):
                tasks.start_soon(one, index, example)
        if failures:
            raise failures[0]
        flat = [r for group in rewards for r in group]
        mark: dict[str, Any] = {
            "step": step,
            "api_step": expected,
            "mode": mode,
            "rollouts": len(flat),
            "reward_mean": statistics.fmean(flat) if flat else None,
            "reward_std": statistics.pstdev(flat) if flat else None,
        }
        await self.store.update_run(run.id, in_flight=mark)
        try:
            result = await self.client.tuning.train_step(run.finetune_id, groups, config.lr)
        except APIConnectionError as exc:
            if not exc.sent:  # certainly never reached the API: nothing was applied
                await self.store.update_run(run.id, in_flight=None)
                raise
            log.warning("run %s: train_step for step %d got no answer (%s); reconciling", run.id, step, exc)
            return
        except (ServerError, StreamError) as exc:
            log.warning("run %s: train_step for step %d failed after sending (%s); reconciling", run.id, step, exc)
            return
        except APIStatusError:
            # Any other status is a refusal: the step was not applied.
            await self.store.update_run(run.id, in_flight=None)
            raise
        api_step = result.step if result.step is not None else expected
        if api_step != expected:
            log.warning(
                "run %s: expected API step %d, the API reported %d (was the finetune trained elsewhere?)",
                run.id,
                expected,
                api_step,
            )
        metrics = {k: v for k, v in (result.model_extra or {}).items() if v is not None}
        metrics["mode"] = mode
        await self.store.record_step(
            run.id,
            step=step,
            api_step=api_step,
            reward_mean=mark["reward_mean"],
            reward_std=mark["reward_std"],
            rollouts=len(flat),
            seconds=round(time.monotonic() - started, 3),
            metrics=metrics,
        )
        self._notify()

    async def _group(self, finetune_id: str, example: Example, config: RunConfig) -> tuple[str, list[float]]:
        prepared = await self.images.load(example.ref)
        answer, raw = await request_rollouts(self.client, example, config, finetune_id, prepared.data_url)
        rollouts = answer.get("rollouts") if isinstance(answer, dict) else None
        if not isinstance(rollouts, list) or not rollouts:
            raise RunFailed(f"the API returned no rollouts for line {example.line}")
        if example.skill == "query":
            rewards = query_rewards(example, rollouts)
        else:
            given = answer.get("rewards")
            if not isinstance(given, list) or len(given) != len(rollouts):
                raise RunFailed(f"the API returned no ground-truth rewards for line {example.line}")
            rewards = [float(r) for r in given]
        # The echoed request and the rollouts go back exactly as they came: sliced from the raw text.
        return rl_group(member(raw, "request"), array_items(raw, "rollouts"), rewards), rewards

    async def _sft_group(self, example: Example) -> str:
        """The example's label as an SFT target: boxes (detect), points or boxes (point), the answer (query)."""
        prepared = await self.images.load(example.ref)
        if example.skill == "query":
            request = skill_request("query", question=example.question, image_url=prepared.data_url, reasoning=False)
            return sft_group(request, sft_target("query", answer=example.answer))
        request = skill_request(example.skill, object=example.object, image_url=prepared.data_url)
        if example.points is not None:
            return sft_group(request, sft_target(example.skill, points=list(example.points)))
        return sft_group(request, sft_target(example.skill, boxes=list(example.boxes or ())))

    async def _current_step(self, run: Run) -> int:
        """The finetune's current step, learnt by saving it (idempotent); 0 when it was never trained."""
        try:
            saved = await self.client.tuning.save_checkpoint(run.finetune_id)
        except NotFoundError:
            return 0
        if saved.checkpoint is None:
            raise RunFailed("the API's checkpoint save did not say which step it saved; cannot resume safely")
        step = saved.checkpoint.step
        if run.base_step is not None and step > run.base_step:
            # This save made a checkpoint of the run's own: recorded, so the save policy can prune it.
            await self.store.add_run_checkpoint(run.id, api_step=step, step=run.steps_done)
        return step

    async def _reconcile(self, run: Run) -> None:
        mark = run.in_flight or {}
        current = await self._current_step(run)
        if current >= mark["api_step"]:
            log.info("run %s: step %d was applied before the answer was lost; recording it", run.id, mark["step"])
            await self.store.record_step(
                run.id,
                step=mark["step"],
                api_step=mark["api_step"],
                reward_mean=mark.get("reward_mean"),
                reward_std=mark.get("reward_std"),
                rollouts=mark.get("rollouts") or 0,
                seconds=None,
                metrics={"recovered": True, "mode": mark.get("mode", "rl")},
            )
        else:
            log.info("run %s: step %d was not applied; doing it again", run.id, mark["step"])
            await self.store.update_run(run.id, in_flight=None)
        self._notify()

    async def _eval_due(self, run: Run, config: RunConfig) -> bool:
        done = run.steps_done
        if done == 0 or config.eval_every <= 0:
            return False
        if done % config.eval_every and done != run.total_steps:
            return False
        return all(e.step != done for e in await self.store.run_evals(run.id))

    async def _evaluate(self, run: Run, evals: Sequence[Example], current: int) -> None:
        saved = await self.client.tuning.save_checkpoint(run.finetune_id)
        api_step = saved.checkpoint.step if saved.checkpoint is not None else current
        await self.store.add_run_checkpoint(run.id, api_step=api_step, step=run.steps_done, evaluated=True)
        await self._score(run, evals, api_step, checkpoint_model(run.finetune_id, api_step))

    async def _baseline(self, run: Run, evals: Sequence[Example]) -> None:
        """auto: score the finetune as it was before the run (the base model when never trained), as step
        0 — what decides whether the first steps are SFT. Never the run's best: no step of its own."""
        base = run.base_step or 0
        await self._score(run, evals, base, checkpoint_model(run.finetune_id, base) if base else None)

    async def _score(self, run: Run, evals: Sequence[Example], api_step: int, model: str | None) -> None:
        opened = await anyio.to_thread.run_sync(
            self.files.open_own, "runs", run.id, f"eval-step-{run.steps_done:05d}.jsonl"
        )
        job = jsonl.job_id(tool="training run evaluation", run=run.id, step=run.steps_done)
        lines = await anyio.to_thread.run_sync(partial(LineWriter.claim, opened, job, "replace", tool="evaluation"))
        output = opened.path
        started = time.monotonic()
        [tally] = await evaluation.evaluate(
            self.client,
            self.images,
            evals,
            [model],
            lines,
            concurrency=self._concurrency,
            explain=self._explain,
        )
        await self.store.record_eval(
            run.id,
            step=run.steps_done,
            api_step=api_step,
            score=tally.score,
            metrics=tally.metrics(),
            errors=tally.errors,
            output=str(output),
            seconds=round(time.monotonic() - started, 3),
            candidate=run.steps_done > 0,
        )
        if tally.first_error is not None:
            await self.store.update_run(
                run.id,
                error=f"evaluation at step {run.steps_done}: {tally.errors} "
                f"example(s) failed, e.g. {tally.first_error}",
            )
        self._notify()

    async def _prune(self, run: Run, config: RunConfig, current: int) -> None:
        for checkpoint in await self.store.run_checkpoints(run.id):
            if checkpoint.deleted or checkpoint.api_step >= current or checkpoint.api_step <= (run.base_step or 0):
                continue
            if (
                checkpoint.last
                or (checkpoint.best and config.save != "last")
                or (checkpoint.evaluated and config.save == "all")
            ):
                continue
            try:
                await self.client.tuning.delete_checkpoint(run.finetune_id, checkpoint.api_step)
            except (NotFoundError, GoneError):
                pass  # already gone: the goal is met
            await self.store.mark_checkpoint_deleted(run.id, checkpoint.api_step)

    async def _finish(self, run_id: str, config: RunConfig) -> None:
        run = await self._load(run_id)
        if run.steps_done > 0:
            saved = await self.client.tuning.save_checkpoint(run.finetune_id)
            last = saved.checkpoint.step if saved.checkpoint is not None else run.last_api_step or 0
            await self.store.add_run_checkpoint(run.id, api_step=last, step=run.steps_done, last=True)
            await self._prune(run, config, last)
        state = "completed" if run.steps_done >= run.total_steps else "stopped"
        await self.store.update_run(run_id, state=state, finished_at=time.time())
        self._notify()
