"""Local SQLite state that must outlive a tool call or a restart: rollout sets kept for train_step, and
the image behind each line of a submitted batch."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

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
        version = db.execute("PRAGMA user_version").fetchone()[0]
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
                (set_id, finetune_id, skill, response, None if rewards is None else json.dumps(rewards),
                 num_rollouts, time.time()),
            )

        await self._run(insert)
        return set_id

    async def rollout_set(self, set_id: str) -> RolloutSet | None:
        def select() -> RolloutSet | None:
            row = self.db.execute(
                "SELECT id, finetune_id, skill, response, rewards, num_rollouts, created_at, used_step, used_at"
                " FROM rollout_sets WHERE id = ?",
                (set_id,),
            ).fetchone()
            if row is None:
                return None
            return RolloutSet(*row[:4], json.loads(row[4]) if row[4] else None, *row[5:])

        return await self._run(select)

    async def mark_used(self, set_ids: list[str], step: int | None) -> None:
        def update() -> None:
            now = time.time()
            self.db.executemany("UPDATE rollout_sets SET used_step = ?, used_at = ? WHERE id = ?",
                                [(step, now, set_id) for set_id in set_ids])

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
            self.db.execute("INSERT OR REPLACE INTO batches (id, skill, images, created_at) VALUES (?, ?, ?, ?)",
                            (batch_id, skill, json.dumps(images), time.time()))

        await self._run(insert)

    async def batch_images(self, batch_id: str) -> list[str] | None:
        """The image reference of each line, by line id; None for a batch submitted elsewhere."""

        def select() -> list[str] | None:
            row = self.db.execute("SELECT images FROM batches WHERE id = ?", (batch_id,)).fetchone()
            return json.loads(row[0]) if row else None

        return await self._run(select)
