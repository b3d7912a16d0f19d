"""The tuning API's handlers under /v1/tuning: a checked body in, the state changed, the API's answer out."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..model.policy import Policy
from . import checks
from .finetunes import RLGroup, TuningState
from .rewards import GroundTruth, box_reward, point_reward
from .rollouts import Sampled, sample, wire_text

PREFIX = "/v1/tuning"


@dataclass(frozen=True)
class Received:
    """A request's body as the gate read it."""

    body: Any  # the parsed JSON, or None when the body was empty or not JSON
    text: str | None  # the body as text, when it was UTF-8

    def json_object(self) -> dict[str, Any]:
        return checks.json_object(self.body)


Handler = Callable[[Request, Received], Awaitable[Response]]


class TuningApi:
    def __init__(self, state: TuningState, *, step_seconds: Callable[[], float] = lambda: 0.0) -> None:
        self.state = state
        self._step_seconds = step_seconds  # how long a train step computes before it is applied

    def routes(self, wrap: Callable[[Handler], Callable[[Request], Awaitable[Response]]]) -> list[Route]:
        """The routes, each handler wrapped by the server (body, errors) with `wrap`."""
        table: list[tuple[str, str, Handler]] = [
            ("/finetunes", "POST", self.create_finetune),
            ("/finetunes", "GET", self.list_finetunes),
            ("/finetunes/{finetune_id}", "GET", self.get_finetune),
            ("/finetunes/{finetune_id}", "DELETE", self.delete_finetune),
            ("/rollouts", "POST", self.rollouts),
            ("/train_step", "POST", self.train_step),
            ("/finetunes/{finetune_id}/metrics", "POST", self.log_metrics),
            ("/finetunes/{finetune_id}/checkpoints", "GET", self.list_checkpoints),
            ("/finetunes/{finetune_id}/checkpoints/save", "POST", self.save_checkpoint),
            ("/finetunes/{finetune_id}/checkpoints/{step}", "DELETE", self.delete_checkpoint),
        ]
        return [Route(PREFIX + path, wrap(handler), methods=[method]) for path, method, handler in table]

    # --- finetunes -------------------------------------------------------------------------------

    async def create_finetune(self, request: Request, received: Received) -> Response:
        body = received.json_object()
        name, rank = checks.name(body), checks.rank(body)
        finetune = self.state.create(name, rank)
        return JSONResponse({"finetune_id": finetune.finetune_id})

    async def list_finetunes(self, request: Request, received: Received) -> Response:
        limit, cursor = checks.page(request.query_params)
        finetunes, next_cursor, has_more = self.state.finetunes(limit, cursor)
        return JSONResponse(
            {"finetunes": [f.as_dict() for f in finetunes], "next_cursor": next_cursor, "has_more": has_more}
        )

    async def get_finetune(self, request: Request, received: Received) -> Response:
        # The contract allows flat or wrapped; wrapped keeps clients honest about accepting both.
        return JSONResponse({"finetune": self.state.live(request.path_params["finetune_id"]).as_dict()})

    async def delete_finetune(self, request: Request, received: Received) -> Response:
        self.state.delete(request.path_params["finetune_id"])
        return JSONResponse({"ok": True})

    async def log_metrics(self, request: Request, received: Received) -> Response:
        finetune_id = request.path_params["finetune_id"]
        self.state.live(finetune_id)
        step, metrics = checks.metrics(received.json_object())
        count = self.state.log_metrics(finetune_id, step, metrics)
        return JSONResponse({"ok": True, "step": step, "logged_count": count})

    # --- rollouts and steps ----------------------------------------------------------------------

    async def rollouts(self, request: Request, received: Received) -> Response:
        body = received.json_object()
        finetune_id = checks.finetune_id(body)
        count = checks.num_rollouts(body)
        finetune = self.state.live(finetune_id)
        skill_request = await checks.skill_request(checks.required(body, "request"), "request")
        truth = checks.ground_truth(body.get("ground_truth"), skill_request.skill)
        policy = Policy(finetune.scale)
        texts: list[tuple[str, float]] = []
        rewards: list[float] = []
        for _ in range(count):
            sampled = sample(skill_request, policy, finetune.rng)
            texts.append((wire_text(skill_request.skill, sampled, skill_request.settings, finetune.rng), sampled.error))
            if truth is not None:
                rewards.append(_reward(sampled, truth))
        self.state.issue(finetune_id, skill_request.body, texts)
        # Built as text: the request goes back as it came, the rollouts as they were written.
        echoed = _member_text(received.text, "request") or json.dumps(skill_request.body, ensure_ascii=False)
        rewards_text = json.dumps(rewards, separators=(",", ":")) if truth is not None else "null"
        rollouts_text = ",".join(t for t, _ in texts)
        text = f'{{"request":{echoed},"rollouts":[{rollouts_text}],"rewards":{rewards_text}}}'
        return Response(text, media_type="application/json")

    async def train_step(self, request: Request, received: Received) -> Response:
        body = received.json_object()
        finetune_id = checks.finetune_id(body)
        self.state.live(finetune_id)
        lr = checks.lr(body)
        groups = checks.groups(body)
        rl: dict[int, RLGroup] = {}
        sft = 0
        for index, group in enumerate(groups):
            if checks.mode(group, index) == "rl":
                rl[index] = checks.rl_group(group, index)
            else:
                await checks.sft_group(group, index)
                sft += 1
        # A real step computes for tens of seconds to minutes, then is applied whether or not the caller
        # still waits for the answer: a client that gives up sooner sees a timeout for an applied step.
        if (seconds := self._step_seconds()) > 0:
            await anyio.sleep(seconds)
        return JSONResponse(self.state.apply_step(finetune_id, groups, rl, sft, lr))

    # --- checkpoints -----------------------------------------------------------------------------

    async def list_checkpoints(self, request: Request, received: Received) -> Response:
        finetune_id = request.path_params["finetune_id"]
        self.state.live(finetune_id)
        limit, cursor = checks.page(request.query_params)
        checkpoints, next_cursor, has_more = self.state.checkpoints(finetune_id, limit, cursor)
        return JSONResponse(
            {
                "checkpoints": [c.as_dict() for c in checkpoints],
                "next_cursor": next_cursor,
                "has_more": has_more,
            }
        )

    async def save_checkpoint(self, request: Request, received: Received) -> Response:
        checkpoint = self.state.save(request.path_params["finetune_id"])
        return JSONResponse({"ok": True, "checkpoint": checkpoint.as_dict()})

    async def delete_checkpoint(self, request: Request, received: Received) -> Response:
        finetune_id = request.path_params["finetune_id"]
        self.state.live(finetune_id)
        self.state.delete_checkpoint(finetune_id, checks.step_number(request.path_params["step"]))
        return JSONResponse({"ok": True})


def _reward(sampled: Sampled, truth: GroundTruth) -> float:
    if "objects" in sampled.output:  # detect
        return round(box_reward(sampled.boxes, truth.boxes or ()), 6)
    return round(point_reward(sampled.points, truth), 6)


def _member_text(text: str | None, key: str) -> str | None:
    """The raw text of a top-level member of the JSON object `text`, or None if it cannot be found."""
    if text is None:
        return None
    decoder = json.JSONDecoder()
    whitespace = " \t\n\r"

    def skip(i: int) -> int:
        while i < len(text) and text[i] in whitespace:
            i += 1
        return i

    found = None
    try:
        i = skip(0)
        if text[i] != "{":
            return None
        i = skip(i + 1)
        while i < len(text) and text[i] != "}":
            name, i = decoder.raw_decode(text, i)
            i = skip(i)
            if text[i] != ":":
                return None
            start = skip(i + 1)
            _, end = decoder.raw_decode(text, start)
            if name == key:
                found = text[start:end]  # the last one wins, as when parsing
            i = skip(end)
            if text[i] == ",":
                i = skip(i + 1)
        return found
    except (ValueError, IndexError):
        return None
