"""The store's claims: one running run per finetune, one driver per run, one train_step per rollout set at a time,
held across processes sharing one data directory."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from moondream_mcp.store import Refused, Store

pytestmark = pytest.mark.anyio

RUN = "run_0123456789abcdef"


async def test_a_run_has_one_lease_at_a_time_across_stores_sharing_a_data_dir(tmp_path: Path) -> None:
    async with Store(tmp_path / "state.sqlite3") as first, Store(tmp_path / "state.sqlite3") as second:
        held = first.lease(RUN)
        assert held is not None
        assert second.lease(RUN) is None and first.lease(RUN) is None
        held.release()
        again = second.lease(RUN)
        assert again is not None
        again.release()


async def test_a_lease_is_let_go_when_its_process_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    script = (
        "import sys; from pathlib import Path; from moondream_mcp.store import Store; "
        f"lease = Store(Path(sys.argv[1])).lease({RUN!r}); print(lease is not None, flush=True); sys.stdin.read()"
    )
    with anyio.fail_after(30):
        async with await anyio.open_process([sys.executable, "-c", script, str(path)]) as holder:
            assert holder.stdout is not None
            assert (await holder.stdout.receive()).strip() == b"True"
            async with Store(path) as store:
                assert store.lease(RUN) is None  # held by the other process
                holder.kill()  # SIGKILL: no cleanup of its own
                await holder.wait()
                taken = store.lease(RUN)
                assert taken is not None
                taken.release()


async def test_two_runs_started_at_once_on_one_finetune_from_two_stores_are_one_run(tmp_path: Path) -> None:
    outcomes: list[str] = []

    async def start(store: Store, run_id: str) -> None:
        try:
            await store.create_run(
                run_id=run_id, finetune_id="ft_1", dataset="/d.jsonl", config={}, examples={}, total_steps=3
            )
            outcomes.append("started")
        except Refused as exc:
            outcomes.append(str(exc))

    async with Store(tmp_path / "state.sqlite3") as first, Store(tmp_path / "state.sqlite3") as second:
        async with anyio.create_task_group() as tasks:
            for i in range(4):
                tasks.start_soon(start, (first, second)[i % 2], f"run_{i:016x}")
        running = await first.runs(state="running", finetune_id="ft_1")

    assert len(running) == 1 and outcomes.count("started") == 1
    busy = f"finetune ft_1 is already training in run {running[0].id}; stop it (stop_training) or wait for it to finish"
    assert sorted(outcomes)[:3] == [busy] * 3


async def test_a_rollout_set_is_claimed_once_and_freed_again_by_release(tmp_path: Path) -> None:
    async with Store(tmp_path / "state.sqlite3") as store:
        set_id = await store.add_rollout_set(
            finetune_id="ft_1", skill="detect", response="{}", rewards=[1.0], num_rollouts=1
        )
        with pytest.raises(Refused, match="listed twice"):
            await store.claim_rollout_sets([set_id, set_id], finetune_id="ft_1", allow_reuse=False)
        [claimed] = await store.claim_rollout_sets([set_id], finetune_id="ft_1", allow_reuse=False)
        assert claimed.id == set_id
        with pytest.raises(Refused, match="another train_step call right now"):
            await store.claim_rollout_sets([set_id], finetune_id="ft_1", allow_reuse=True)
        await store.release_rollout_sets([set_id])
        await store.claim_rollout_sets([set_id], finetune_id="ft_1", allow_reuse=False)
        await store.mark_used([set_id], 1)
        with pytest.raises(Refused, match="already used in step 1"):
            await store.claim_rollout_sets([set_id], finetune_id="ft_1", allow_reuse=False)
