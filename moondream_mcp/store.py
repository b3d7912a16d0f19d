"""Local SQLite state that must outlive a tool call or a restart: rollout sets kept for train_step,
the image behind each line of a submitted batch, and training runs with their steps, evaluations and
checkpoints.

Several server processes may share one data directory (the default does), so what must have one
holder at a time is claimed atomically here: a finetune has at most one running run (checked and
inserted in one write transaction), a rollout set is claimed by one train_step call at a time, and a
run is driven by the one process holding its lease (an exclusive lock the kernel lets go when that
process ends, however it ends)."""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: one process per data directory is assumed
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")

CLAIM_SECONDS = 15 * 60  # a rollout set's claim outlives any train_step call; after a crash it lapses


class Refused(Exception):
    """What the store will not do because someone else holds it, or it is gone; the message is for the agent."""


SCHEMA = [
    # version 1
    """
    CREATE TABLE rollout_sets (
        id           TEXT PRIMARY KEY,
        finetune_id  TEXT NOT NULL,
        skill        TEXT NOT NULL,
        response     TEXT NOT NULL,      -- the /rollouts answer exactly as received
        rewards      TEXT,               -- JSON list from ground truth, or NULL
        num_rollouts INTEGER NOT NULL,
        created_at   REAL NOT NULL,
        used_step    INTEGER,            -- the train step that consumed it
        used_at      REAL
    );
    CREATE INDEX rollout_sets_created ON rollout_sets(created_at);
    """,
    # version 2
    """
    CREATE TABLE batches (
        id          TEXT PRIMARY KEY,   -- the Batch API's id
        skill       TEXT NOT NULL,
        images      TEXT NOT NULL,      -- JSON list: the reference behind each line id ("0", "1", ...)
        created_at  REAL NOT NULL
    );
    """,
    # version 3: training runs (training.py)
    """
    CREATE TABLE runs (
        id             TEXT PRIMARY KEY,
        finetune_id    TEXT NOT NULL,
        dataset        TEXT NOT NULL,     -- the dataset file, resolved
        config         TEXT NOT NULL,     -- JSON: the run's parameters as started
        examples       TEXT NOT NULL,     -- JSON {"train": [...], "eval": [...]}: the dataset as it was at start
        state          TEXT NOT NULL,     -- running | completed | failed | stopped
        total_steps    INTEGER NOT NULL,
        steps_done     INTEGER NOT NULL DEFAULT 0,
        base_step      INTEGER,           -- the finetune's API step before the run's first step
        last_api_step  INTEGER,           -- the API step of the last recorded step
        in_flight      TEXT,              -- JSON: the step whose train_step may be on the wire, until recorded
        stop_requested INTEGER NOT NULL DEFAULT 0,
        best_api_step  INTEGER,
        best_score     REAL,
        error          TEXT,
        created_at     REAL NOT NULL,
        updated_at     REAL NOT NULL,
        finished_at    REAL
    );
    CREATE INDEX runs_state ON runs(state);
    CREATE TABLE run_steps (
        run_id       TEXT NOT NULL,
        step         INTEGER NOT NULL,    -- 1..total_steps within the run
        api_step     INTEGER NOT NULL,    -- the finetune's step as the API reported it
        reward_mean  REAL,
        reward_std   REAL,
        rollouts     INTEGER NOT NULL,
        seconds      REAL,
        metrics      TEXT,                -- JSON: what train_step reported
        at           REAL NOT NULL,
        PRIMARY KEY (run_id, step)
    );
    CREATE TABLE run_evals (
        run_id    TEXT NOT NULL,
        step      INTEGER NOT NULL,
        api_step  INTEGER NOT NULL,
        score     REAL,
        metrics   TEXT,                   -- JSON: per-skill metrics
        errors    INTEGER NOT NULL,
        output    TEXT,                   -- the per-example JSONL file
        seconds   REAL,
        at        REAL NOT NULL,
        PRIMARY KEY (run_id, step)
    );
    CREATE TABLE run_checkpoints (
        run_id     TEXT NOT NULL,
        api_step   INTEGER NOT NULL,
        step       INTEGER NOT NULL,
        best       INTEGER NOT NULL DEFAULT 0,
        last       INTEGER NOT NULL DEFAULT 0,
        evaluated  INTEGER NOT NULL DEFAULT 0,
        deleted    INTEGER NOT NULL DEFAULT 0,
        at         REAL NOT NULL,
        PRIMARY KEY (run_id, api_step)
    );
    """,
    # version 4: a rollout set is claimed by one train_step call at a time
    """
    ALTER TABLE rollout_sets ADD COLUMN claimed_at REAL;
    """,
]


@dataclass(frozen=True)
class RolloutSet:
    id: str
    finetune_id: str
    skill: str
    response: str
    rewards: list[float] | None
    num_rollouts: int
    created_at: float
    used_step: int | None
    used_at: float | None

    @property
    def used(self) -> bool:
        return self.used_at is not None


def _columns(row: sqlite3.Row) -> dict[str, Any]:
    # Values are taken by column name (dict() pairs keys() with row[key]), so reordering or
    # extending a SELECT cannot shift one into the wrong dataclass field; SELECT lists use the
    # field names for exactly this.
    return dict(row)


_RUN_ID = re.compile(r"^[a-z]+_[0-9a-f]+$")


class RunLease:
    """Held while this process drives a run: an exclusive lock on a file of the run's own."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the file lets the lock go
            self._fd = -1

    def __del__(self) -> None:
        # Dropped unreleased (its taker was cancelled while a worker thread took it): still let go.
        self.release()


def new_id(prefix: str) -> str:
    # Time-ordered (sortable) and unguessable enough for a local store.
    return f"{prefix}_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


class Store:
    """One SQLite connection, used from worker threads one call at a time (WAL mode)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        # One worker at a time: sqlite3 connections are not safe for concurrent use.
        self._limiter = anyio.CapacityLimiter(1)

    async def __aenter__(self) -> Store:
        await self._run(self._open)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._run(self._close)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.row_factory = sqlite3.Row
        version = db.execute("PRAGMA user_version").fetchone()["user_version"]
        for number, script in enumerate(SCHEMA[version:], start=version + 1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version={number}; COMMIT;")
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    # ---- rollout sets ---------------------------------------------------------------------

    async def add_rollout_set(
        self, *, finetune_id: str, skill: str, response: str, rewards: list[float] | None, num_rollouts: int
    ) -> str:
        set_id = new_id("rs")

        def insert() -> None:
            self.db.execute(
                "INSERT INTO rollout_sets (id, finetune_id, skill, response, rewards, num_rollouts, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    set_id,
                    finetune_id,
                    skill,
                    response,
                    None if rewards is None else json.dumps(rewards),
                    num_rollouts,
                    time.time(),
                ),
            )

        await self._run(insert)
        return set_id

    _SET_COLUMNS = "id, finetune_id, skill, response, rewards, num_rollouts, created_at, used_step, used_at"

    @staticmethod
    def _set_row(row: sqlite3.Row) -> RolloutSet:
        fields = {k: row[k] for k in RolloutSet.__dataclass_fields__}
        return RolloutSet(**{**fields, "rewards": json.loads(row["rewards"]) if row["rewards"] else None})

    async def rollout_set(self, set_id: str) -> RolloutSet | None:
        def select() -> RolloutSet | None:
            row = self.db.execute(f"SELECT {self._SET_COLUMNS} FROM rollout_sets WHERE id = ?", (set_id,)).fetchone()
            return self._set_row(row) if row is not None else None

        return await self._run(select)

    async def claim_rollout_sets(self, set_ids: list[str], *, finetune_id: str, allow_reuse: bool) -> list[RolloutSet]:
        """Claim sets for one train_step, all or none, in one transaction: refused if one is listed twice,
        unknown, another finetune's, claimed by a call still in progress, or (unless `allow_reuse`) used."""

        def work(db: sqlite3.Connection) -> list[RolloutSet]:
            now = time.time()
            seen: set[str] = set()
            claimed = []
            for set_id in set_ids:
                if set_id in seen:
                    raise Refused(f"rollout set {set_id} is listed twice; a set trains once in a step")
                seen.add(set_id)
                row = db.execute(
                    f"SELECT {self._SET_COLUMNS}, claimed_at FROM rollout_sets WHERE id = ?", (set_id,)
                ).fetchone()
                if row is None:
                    raise Refused(f"unknown or expired rollout set {set_id}: generate new rollouts")
                found = self._set_row(row)
                if found.finetune_id != finetune_id:
                    raise Refused(f"rollout set {set_id} belongs to finetune {found.finetune_id}, not {finetune_id}")
                if row["claimed_at"] is not None and row["claimed_at"] > now - CLAIM_SECONDS:
                    raise Refused(
                        f"rollout set {set_id} is being trained on by another train_step call right now; wait for "
                        "it, or generate new rollouts"
                    )
                if found.used and not allow_reuse:
                    raise Refused(
                        f"rollout set {set_id} was already used in step {found.used_step}; its rollouts come "
                        "from an older policy. Generate new rollouts, or pass allow_reuse=true."
                    )
                claimed.append(found)
            db.executemany("UPDATE rollout_sets SET claimed_at = ? WHERE id = ?", [(now, i) for i in set_ids])
            return claimed

        return await self._run(self._atomic, work)

    async def release_rollout_sets(self, set_ids: list[str]) -> None:
        """Let claimed sets go unused (their train_step never applied them, or may not have)."""

        def update() -> None:
            self.db.executemany("UPDATE rollout_sets SET claimed_at = NULL WHERE id = ?", [(i,) for i in set_ids])

        await self._run(update)

    async def mark_used(self, set_ids: list[str], step: int | None) -> None:
        def update() -> None:
            now = time.time()
            self.db.executemany(
                "UPDATE rollout_sets SET used_step = ?, used_at = ?, claimed_at = NULL WHERE id = ?",
                [(step, now, set_id) for set_id in set_ids],
            )

        await self._run(update)

    async def purge_rollout_sets(self, older_than: float) -> int:
        """Delete sets created more than `older_than` seconds ago; returns how many went."""

        def delete() -> int:
            cursor = self.db.execute("DELETE FROM rollout_sets WHERE created_at < ?", (time.time() - older_than,))
            return cursor.rowcount

        return await self._run(delete)

    # ---- batches --------------------------------------------------------------------------

    async def add_batch(self, batch_id: str, skill: str, images: list[str]) -> None:
        def insert() -> None:
            self.db.execute(
                "INSERT OR REPLACE INTO batches (id, skill, images, created_at) VALUES (?, ?, ?, ?)",
                (batch_id, skill, json.dumps(images), time.time()),
            )

        await self._run(insert)

    async def batch_images(self, batch_id: str) -> list[str] | None:
        """The image reference of each line, by line id; None for a batch submitted elsewhere."""

        def select() -> list[str] | None:
            row = self.db.execute("SELECT images FROM batches WHERE id = ?", (batch_id,)).fetchone()
            return json.loads(row["images"]) if row is not None else None

        return await self._run(select)

    # ---- training runs --------------------------------------------------------------------

    def _atomic(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one transaction (called on the store's worker thread)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            result = work(self.db)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")
        return result

    async def create_run(
        self,
        *,
        run_id: str,
        finetune_id: str,
        dataset: str,
        config: dict[str, Any],
        examples: dict[str, list[dict[str, Any]]],
        total_steps: int,
    ) -> None:
        """A new running run; Refused if the finetune already has one (checked and inserted in one write
        transaction, so two callers, or two processes, cannot both start one)."""

        def work(db: sqlite3.Connection) -> None:
            busy = db.execute(
                "SELECT id FROM runs WHERE finetune_id = ? AND state = 'running' ORDER BY created_at LIMIT 1",
                (finetune_id,),
            ).fetchone()
            if busy is not None:
                raise Refused(
                    f"finetune {finetune_id} is already training in run {busy['id']}; stop it (stop_training) or "
                    "wait for it to finish"
                )
            now = time.time()
            db.execute(
                "INSERT INTO runs (id, finetune_id, dataset, config, examples, state, total_steps, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?)",
                (run_id, finetune_id, dataset, json.dumps(config), json.dumps(examples), total_steps, now, now),
            )

        await self._run(self._atomic, work)

    def lease(self, run_id: str) -> RunLease | None:
        """The right to drive `run_id`, or None while another process (or task) holds it. Quick and
        non-blocking; kept until released, or until this process ends."""
        if not _RUN_ID.match(run_id):
            raise ValueError(f"not a run id: {run_id!r}")
        folder = self.path.parent / "leases"
        folder.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(folder / f"{run_id}.lock", flags, 0o600)
        if fcntl is not None:
            try:
                # flock, not fcntl locks: held per open file, so two stores in one process exclude each other too.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return None
        return RunLease(fd)

    _RUN_COLUMNS = (
        "id, finetune_id, dataset, config, state, total_steps, steps_done, base_step, last_api_step,"
        " in_flight, stop_requested, best_api_step, best_score, error, created_at, updated_at,"
        " finished_at"
    )

    @staticmethod
    def _run_row(row: sqlite3.Row) -> Run:
        return Run(
            **{
                **_columns(row),
                "config": json.loads(row["config"]),
                "in_flight": json.loads(row["in_flight"]) if row["in_flight"] else None,
                "stop_requested": bool(row["stop_requested"]),
            }
        )

    async def run(self, run_id: str) -> Run | None:
        def select() -> Run | None:
            row = self.db.execute(f"SELECT {self._RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)).fetchone()
            return self._run_row(row) if row is not None else None

        return await self._run(select)

    async def runs(
        self, *, state: str | None = None, finetune_id: str | None = None, limit: int | None = None
    ) -> list[Run]:
        """Runs, newest first."""

        def select() -> list[Run]:
            where, args = [], []
            if state is not None:
                where.append("state = ?")
                args.append(state)
            if finetune_id is not None:
                where.append("finetune_id = ?")
                args.append(finetune_id)
            sql = f"SELECT {self._RUN_COLUMNS} FROM runs"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY created_at DESC, id DESC"
            if limit is not None:
                sql += f" LIMIT {int(limit)}"
            return [self._run_row(row) for row in self.db.execute(sql, args).fetchall()]

        return await self._run(select)

    async def run_examples(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        def select() -> dict[str, list[dict[str, Any]]]:
            row = self.db.execute("SELECT examples FROM runs WHERE id = ?", (run_id,)).fetchone()
            return json.loads(row["examples"]) if row is not None else {}

        return await self._run(select)

    async def update_run(self, run_id: str, **fields: Any) -> None:
        """Set columns of a run: base_step, in_flight (a dict, or None), stop_requested, state, error,
        finished_at."""
        allowed = {"base_step", "in_flight", "stop_requested", "state", "error", "finished_at"}
        if not fields or not set(fields) <= allowed:
            raise ValueError(f"cannot update {sorted(set(fields) - allowed)}")
        if "in_flight" in fields and fields["in_flight"] is not None:
            fields["in_flight"] = json.dumps(fields["in_flight"])

        def update() -> None:
            assignments = ", ".join(f"{name} = ?" for name in fields)
            self.db.execute(
                f"UPDATE runs SET {assignments}, updated_at = ? WHERE id = ?", (*fields.values(), time.time(), run_id)
            )

        await self._run(update)

    async def record_step(
        self,
        run_id: str,
        *,
        step: int,
        api_step: int,
        reward_mean: float | None,
        reward_std: float | None,
        rollouts: int,
        seconds: float | None,
        metrics: dict[str, Any],
    ) -> None:
        """The step, the run's progress and the end of its in-flight mark, in one transaction: after a
        crash, either all of it is there or none."""

        def work(db: sqlite3.Connection) -> None:
            now = time.time()
            db.execute(
                "INSERT INTO run_steps (run_id, step, api_step, reward_mean, reward_std, rollouts, seconds, metrics,"
                " at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, step, api_step, reward_mean, reward_std, rollouts, seconds, json.dumps(metrics), now),
            )
            db.execute(
                "UPDATE runs SET steps_done = ?, last_api_step = ?, in_flight = NULL, updated_at = ? WHERE id = ?",
                (step, api_step, now, run_id),
            )

        await self._run(self._atomic, work)

    async def run_steps(self, run_id: str) -> list[RunStep]:
        def select() -> list[RunStep]:
            rows = self.db.execute(
                "SELECT step, api_step, reward_mean, reward_std, rollouts, seconds, metrics, at FROM run_steps"
                " WHERE run_id = ? ORDER BY step",
                (run_id,),
            ).fetchall()
            return [
                RunStep(**{**_columns(row), "metrics": json.loads(row["metrics"]) if row["metrics"] else {}})
                for row in rows
            ]

        return await self._run(select)

    async def add_run_checkpoint(
        self, run_id: str, *, api_step: int, step: int, evaluated: bool = False, last: bool = False
    ) -> None:
        def work(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR IGNORE INTO run_checkpoints (run_id, api_step, step, at) VALUES (?, ?, ?, ?)",
                (run_id, api_step, step, time.time()),
            )
            if evaluated:
                db.execute(
                    "UPDATE run_checkpoints SET evaluated = 1 WHERE run_id = ? AND api_step = ?", (run_id, api_step)
                )
            if last:
                db.execute("UPDATE run_checkpoints SET last = 1 WHERE run_id = ? AND api_step = ?", (run_id, api_step))

        await self._run(self._atomic, work)

    async def mark_checkpoint_deleted(self, run_id: str, api_step: int) -> None:
        def update() -> None:
            self.db.execute(
                "UPDATE run_checkpoints SET deleted = 1 WHERE run_id = ? AND api_step = ?", (run_id, api_step)
            )

        await self._run(update)

    async def run_checkpoints(self, run_id: str) -> list[RunCheckpoint]:
        def select() -> list[RunCheckpoint]:
            rows = self.db.execute(
                "SELECT api_step, step, best, last, evaluated, deleted, at FROM run_checkpoints WHERE run_id = ?"
                " ORDER BY api_step",
                (run_id,),
            ).fetchall()
            flags = ("best", "last", "evaluated", "deleted")  # stored as 0/1
            return [RunCheckpoint(**{**_columns(row), **{flag: bool(row[flag]) for flag in flags}}) for row in rows]

        return await self._run(select)

    async def record_eval(
        self,
        run_id: str,
        *,
        step: int,
        api_step: int,
        score: float | None,
        metrics: dict[str, Any],
        errors: int,
        output: str,
        seconds: float,
    ) -> bool:
        """The evaluation, and its checkpoint made the run's best if it beats every earlier one, in one
        transaction. Returns whether it is the new best."""

        def work(db: sqlite3.Connection) -> bool:
            now = time.time()
            db.execute(
                "INSERT INTO run_evals (run_id, step, api_step, score, metrics, errors, output, seconds, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, step, api_step, score, json.dumps(metrics), errors, output, seconds, now),
            )
            best = db.execute("SELECT best_score FROM runs WHERE id = ?", (run_id,)).fetchone()["best_score"]
            if score is None or (best is not None and score <= best):
                return False
            db.execute(
                "UPDATE runs SET best_api_step = ?, best_score = ?, updated_at = ? WHERE id = ?",
                (api_step, score, now, run_id),
            )
            db.execute("UPDATE run_checkpoints SET best = (api_step = ?) WHERE run_id = ?", (api_step, run_id))
            return True

        return await self._run(self._atomic, work)

    async def run_evals(self, run_id: str) -> list[RunEval]:
        def select() -> list[RunEval]:
            rows = self.db.execute(
                "SELECT step, api_step, score, metrics, errors, output, seconds, at FROM run_evals"
                " WHERE run_id = ? ORDER BY step",
                (run_id,),
            ).fetchall()
            return [
                RunEval(**{**_columns(row), "metrics": json.loads(row["metrics"]) if row["metrics"] else {}})
                for row in rows
            ]

        return await self._run(select)


@dataclass(frozen=True)
class Run:
    id: str
    finetune_id: str
    dataset: str
    config: dict[str, Any]
    state: str
    total_steps: int
    steps_done: int
    base_step: int | None
    last_api_step: int | None
    in_flight: dict[str, Any] | None
    stop_requested: bool
    best_api_step: int | None
    best_score: float | None
    error: str | None
    created_at: float
    updated_at: float
    finished_at: float | None


@dataclass(frozen=True)
class RunStep:
    step: int
    api_step: int
    reward_mean: float | None
    reward_std: float | None
    rollouts: int
    seconds: float | None
    metrics: dict[str, Any]
    at: float


@dataclass(frozen=True)
class RunEval:
    step: int
    api_step: int
    score: float | None
    metrics: dict[str, Any]
    errors: int
    output: str | None
    seconds: float | None
    at: float


@dataclass(frozen=True)
class RunCheckpoint:
    api_step: int
    step: int
    best: bool
    last: bool
    evaluated: bool
    deleted: bool
    at: float
