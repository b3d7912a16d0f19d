"""The tuning state: finetunes with their policy, steps, checkpoints and metrics, and every rollout issued.

Each method is one thing the API does to that state, under one lock (tests read it from their own
thread), and raises the ApiError the API answers with when it cannot be done.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import statistics
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ApiError
from ..ids import UlidGenerator
from ..model import policy
from ..model.policy import Policy

ISSUED_KEPT = 20_000  # rollouts remembered per finetune; older ones are refused like modified ones


@dataclass
class AppliedStep:
    """A train step the emulator applied: tests check no step was applied twice."""

    finetune_id: str
    step: int
    groups: list[dict[str, Any]]  # as received, parsed
    at: float  # time.monotonic()


@dataclass(frozen=True)
class Issued:
    request_key: bytes  # fingerprint of the request the rollout answered
    error: float  # how far the rollout was from the truth: what rewards are judged against


@dataclass(frozen=True)
class RLGroup:
    request: Any
    rollouts: list[Any]
    rewards: list[float]


@dataclass
class Checkpoint:
    checkpoint_id: str
    finetune_id: str
    step: int
    scale: float  # the policy's error scale at this step
    created_at_ms: int
    updated_at_ms: int
    saved: bool = False
    deleted: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "checkpoint_id": self.checkpoint_id,
            "finetune_id": self.finetune_id,
            "step": self.step,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
            "expires_at_ms": None,  # saved checkpoints are kept until deleted
        }


@dataclass
class Finetune:
    finetune_id: str
    name: str
    rank: int
    created_at_ms: int
    updated_at_ms: int
    rng: random.Random = field(repr=False)
    scale: float = 1.0
    step: int = 0
    deleted: bool = False
    blocked_at: int | None = None  # the step whose checkpoint was deleted while it was the latest
    checkpoints: dict[int, Checkpoint] = field(default_factory=dict)
    issued: OrderedDict[bytes, Issued] = field(default_factory=OrderedDict, repr=False)
    metrics: list[tuple[int, str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "finetune_id": self.finetune_id,
            "name": self.name,
            "rank": self.rank,
            "created_at_ms": self.created_at_ms,
            "updated_at_ms": self.updated_at_ms,
        }


def fingerprint(value: Any) -> bytes:
    """A digest of parsed JSON that tells apart any change of key, key order, value or number type."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).digest()


def seed_of(name: str) -> int:
    """A finetune's random seed: the same name replays the same run, in this emulator or another."""
    digest = hashlib.sha256(b"moondream-emulator-finetune\0" + name.encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _not_found(finetune_id: str) -> ApiError:
    return ApiError(404, f"finetune not found: {finetune_id}", param="finetune_id", code="finetune_not_found")


Page = tuple[list[Any], str | None, bool]  # items, next_cursor, has_more


def _page(items: Sequence[Any], key: str, limit: int, cursor: str | None, ids: Sequence[str]) -> Page:
    """`limit` items after the one whose id (attribute `key`) is `cursor`; `ids` lists every id that
    ever was, in order, so a cursor stays good when its item has gone since."""
    start = 0
    if cursor is not None:
        order = {id_: i for i, id_ in enumerate(ids)}
        if cursor not in order:
            raise ApiError(
                400, "invalid cursor: pass next_cursor from the previous page", param="cursor", code="invalid_cursor"
            )
        after = order[cursor]
        start = next((i for i, item in enumerate(items) if order[getattr(item, key)] > after), len(items))
    page = list(items[start : start + limit])
    has_more = start + limit < len(items)
    return page, (getattr(page[-1], key) if has_more and page else None), has_more


class TuningState:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = UlidGenerator()
        self._finetunes: dict[str, Finetune] = {}  # every finetune ever made, in creation (= id) order
        self.applied: list[AppliedStep] = []

    def clear_log(self) -> None:
        """Forget the applied steps listed so far (the finetunes stay)."""
        with self._lock:
            self.applied.clear()

    # --- finetunes -------------------------------------------------------------------------------

    def create(self, name: str, rank: int) -> Finetune:
        with self._lock:
            for finetune in self._finetunes.values():
                if finetune.name == name and not finetune.deleted:
                    if finetune.rank != rank:
                        raise ApiError(
                            409,
                            f"a finetune named {name!r} already exists with rank {finetune.rank}",
                            param="rank",
                            code="finetune_exists",
                        )
                    return finetune
            now = _now_ms()
            finetune = Finetune(self._ids.new(now), name, rank, now, now, random.Random(seed_of(name)))
            self._finetunes[finetune.finetune_id] = finetune
            return finetune

    def live(self, finetune_id: str) -> Finetune:
        """The finetune, unless unknown or deleted (both 404)."""
        with self._lock:
            finetune = self._finetunes.get(finetune_id)
            if finetune is None or finetune.deleted:
                raise _not_found(finetune_id)
            return finetune

    def finetunes(self, limit: int, cursor: str | None) -> Page:
        with self._lock:
            live = [f for f in self._finetunes.values() if not f.deleted]
            return _page(live, "finetune_id", limit, cursor, list(self._finetunes))

    def delete(self, finetune_id: str) -> None:
        with self._lock:
            finetune = self.live(finetune_id)
            finetune.deleted = True
            finetune.updated_at_ms = _now_ms()

    def log_metrics(self, finetune_id: str, step: int, metrics: dict[str, float]) -> int:
        with self._lock:
            finetune = self.live(finetune_id)
            finetune.metrics += [(step, name, value) for name, value in metrics.items()]
            return len(metrics)

    # --- rollouts and steps ----------------------------------------------------------------------

    def issue(self, finetune_id: str, request: Any, rollouts: list[tuple[str, float]]) -> None:
        """Remember rollouts (their JSON text and error) as issued for this finetune and request."""
        request_key = fingerprint(request)
        with self._lock:
            issued = self.live(finetune_id).issued
            for text, error in rollouts:
                issued[fingerprint(json.loads(text))] = Issued(request_key, error)
            while len(issued) > ISSUED_KEPT:
                issued.popitem(last=False)

    def apply_step(
        self, finetune_id: str, groups: list[Any], rl: dict[int, RLGroup], sft: int, lr: float
    ) -> dict[str, Any]:
        """Check the RL groups against the rollouts issued, then take the step: the API's answer.

        `groups` is every group as received; `rl` the RL ones by index; `sft` the number of SFT ones.
        """
        with self._lock:
            finetune = self.live(finetune_id)
            self._check_resumable(finetune)
            agreements: list[float] = []
            rewards: list[float] = []
            for index, group in rl.items():
                request_key = fingerprint(group.request)
                errors = []
                for i, rollout in enumerate(group.rollouts):
                    issued = finetune.issued.get(fingerprint(rollout))
                    if issued is None:
                        raise ApiError(
                            400,
                            f"groups[{index}]: rollout {i} was modified (or was not issued for finetune "
                            f"{finetune_id}): send every rollout back exactly as /rollouts returned it",
                            param=f"groups[{index}].rollouts[{i}]",
                            code="rollout_modified",
                        )
                    if issued.request_key != request_key:
                        raise ApiError(
                            400,
                            f"groups[{index}]: request is not the request rollout {i} was generated for: "
                            "send the request /rollouts echoed",
                            param=f"groups[{index}].request",
                            code="request_mismatch",
                        )
                    errors.append(issued.error)
                agreements.append(policy.agreement(group.rewards, errors))
                rewards += group.rewards
            before = finetune.scale
            finetune.scale = policy.learn(before, agreements + [policy.SFT_AGREEMENT] * sft, lr)
            finetune.step += 1
            now = _now_ms()
            finetune.updated_at_ms = now
            finetune.checkpoints[finetune.step] = Checkpoint(
                self._ids.new(now), finetune_id, finetune.step, finetune.scale, now, now
            )
            self.applied.append(AppliedStep(finetune_id, finetune.step, groups, time.monotonic()))
            return _report(finetune, before, agreements, rewards, sft, len(groups))

    def _check_resumable(self, finetune: Finetune) -> None:
        if finetune.blocked_at is not None:
            raise ApiError(
                409,
                f"training cannot resume: the latest checkpoint (step {finetune.blocked_at}) of finetune "
                f"{finetune.finetune_id} was deleted",
                code="checkpoint_deleted",
            )

    # --- checkpoints -----------------------------------------------------------------------------

    def save(self, finetune_id: str) -> Checkpoint:
        with self._lock:
            finetune = self.live(finetune_id)
            checkpoint = finetune.checkpoints.get(finetune.step)
            if checkpoint is None:
                raise ApiError(
                    404,
                    f"no checkpoint to save: finetune {finetune_id} has not been trained yet",
                    code="checkpoint_not_found",
                )
            if checkpoint.deleted:
                raise ApiError(410, f"the checkpoint of step {checkpoint.step} was deleted", code="checkpoint_deleted")
            if not checkpoint.saved:
                checkpoint.saved = True
                checkpoint.updated_at_ms = finetune.updated_at_ms = _now_ms()
            return checkpoint

    def checkpoints(self, finetune_id: str, limit: int, cursor: str | None) -> Page:
        with self._lock:
            finetune = self.live(finetune_id)
            every = sorted(finetune.checkpoints.values(), key=lambda c: c.step)
            saved = [c for c in every if c.saved and not c.deleted]
            return _page(saved, "checkpoint_id", limit, cursor, [c.checkpoint_id for c in every])

    def delete_checkpoint(self, finetune_id: str, step: int) -> None:
        with self._lock:
            finetune = self.live(finetune_id)
            checkpoint = finetune.checkpoints.get(step)
            if checkpoint is None or not checkpoint.saved:
                raise ApiError(
                    404,
                    f"no saved checkpoint at step {step} of finetune {finetune_id}",
                    param="step",
                    code="checkpoint_not_found",
                )
            if checkpoint.deleted:
                raise ApiError(
                    410, f"the checkpoint of step {step} was already deleted", param="step", code="checkpoint_deleted"
                )
            checkpoint.deleted = True
            checkpoint.updated_at_ms = finetune.updated_at_ms = _now_ms()
            if step == finetune.step:
                # Training resumes from the latest checkpoint's weights: without it, nothing to resume.
                finetune.blocked_at = step

    def checkpoint_policy(self, finetune_id: str, step: int) -> Policy | None:
        """The policy of a saved, undeleted checkpoint of a live finetune; None otherwise."""
        with self._lock:
            finetune = self._finetunes.get(finetune_id)
            checkpoint = finetune.checkpoints.get(step) if finetune and not finetune.deleted else None
            if checkpoint is None or not checkpoint.saved or checkpoint.deleted:
                return None
            return Policy(checkpoint.scale)

    def scale(self, finetune_id: str) -> float:
        """The finetune's current error scale (for tests and benchmarks; the API does not show it)."""
        with self._lock:
            return self._finetunes[finetune_id].scale


def _report(
    finetune: Finetune, before: float, agreements: list[float], rewards: list[float], sft: int, groups: int
) -> dict[str, Any]:
    """Plausible training numbers: they move with the policy, and are null where they do not apply."""
    rng = finetune.rng
    drift = math.log(finetune.scale)  # how far the policy has moved from the base model
    kl = 0.02 * drift * drift + 0.002 * abs(math.log(finetune.scale / before)) + 1e-4
    signal = sum(abs(a) for a in agreements) / len(agreements) if agreements else 0.3
    return {
        "step": finetune.step,
        "applied": True,
        "kl": round(kl, 6),
        "router_kl": round(kl * 0.12, 6),
        "grad_norm": round(0.15 + 1.2 * signal + rng.uniform(0, 0.05), 6),
        "reward_mean": round(statistics.fmean(rewards), 6) if rewards else None,
        "reward_std": round(statistics.pstdev(rewards), 6) if rewards else None,
        "sft_loss": round(0.2 + 0.6 * finetune.scale + rng.uniform(0, 0.02), 6) if sft else None,
        # Not in the contract: newer servers add keys, and clients must let them through.
        "tokens_processed": 700 * groups + rng.randrange(50, 400),
    }
