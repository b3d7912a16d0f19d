"""Confirmation before harm: destructive or costly tools ask the user through elicitation when the client
can show a question, stop when the user says no, and behave as before with clients that cannot ask."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import mcp.types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext

from moondream_mcp.config import Settings
from moondream_mcp.server import build_server
from tests.support.calls import call, refusal, unique
from tests.support.labelled import detect_dataset
from tests.support.pictures import canvas, save

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]  # the input-required round of newer connections, and a request mid-call


class User:
    """Answers every question with `action` (and `confirm`), remembering the questions asked."""

    def __init__(self, action: str = "accept", confirm: bool = True) -> None:
        self.action = action
        self.confirm = confirm
        self.questions: list[str] = []

    async def __call__(self, _context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.questions.append(params.message)
        content = {"confirm": self.confirm} if self.action == "accept" else None
        return types.ElicitResult(action=self.action, content=content)


@asynccontextmanager
async def asking(settings: Settings, user: User | None, mode: str) -> AsyncIterator[Client]:
    async with Client(build_server(settings), mode=mode, elicitation_callback=user) as client:
        yield client


async def finetune(client: Client) -> dict:
    return await call(client, "create_finetune", name=unique("confirm"), rank=8)


async def checkpoints_of(client: Client, finetune_id: str) -> list[int]:
    return [c["step"] for c in (await call(client, "list_checkpoints", finetune_id=finetune_id))["checkpoints"]]


async def saved_checkpoint(client: Client, photo: str) -> tuple[str, int]:
    made = await finetune(client)
    target = {"boxes": [{"x_min": 0.25, "y_min": 0.2, "x_max": 0.5, "y_max": 0.6}]}
    groups = [{"skill": "detect", "image": photo, "object": "red", "target": target}]
    await call(client, "train_step", finetune_id=made["finetune_id"], groups=groups)
    saved = await call(client, "save_checkpoint", finetune_id=made["finetune_id"])
    return made["finetune_id"], saved["checkpoint"]["step"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_finetune_is_deleted_only_after_the_user_agrees(settings: Settings, mode: str) -> None:
    user = User("accept")
    async with asking(settings, user, mode) as client:
        made = await finetune(client)
        assert (await call(client, "delete_finetune", finetune_id=made["finetune_id"]))["ok"] is True
        assert "404" in await refusal(client, "get_finetune", finetune_id=made["finetune_id"])

    (question,) = user.questions
    assert made["name"] in question and made["finetune_id"] in question and "cannot be undone" in question


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("action", "confirm"), [("decline", True), ("cancel", True), ("accept", False)])
async def test_a_finetune_the_user_refuses_to_delete_stays(
    settings: Settings, mode: str, action: str, confirm: bool
) -> None:
    async with asking(settings, User(action, confirm), mode) as client:
        made = await finetune(client)
        text = await refusal(client, "delete_finetune", finetune_id=made["finetune_id"])
        kept = await call(client, "get_finetune", finetune_id=made["finetune_id"])

    assert "the user" in text and "was not deleted" in text
    assert kept["finetune_id"] == made["finetune_id"]


@pytest.mark.parametrize("mode", MODES)
async def test_without_elicitation_a_delete_goes_ahead_as_before(settings: Settings, mode: str) -> None:
    async with asking(settings, None, mode) as client:
        made = await finetune(client)
        assert (await call(client, "delete_finetune", finetune_id=made["finetune_id"]))["ok"] is True


@pytest.mark.parametrize("mode", MODES)
async def test_deleting_the_latest_checkpoint_warns_that_training_stops(
    settings: Settings, workdir: Path, mode: str
) -> None:
    photo = save(canvas(), workdir / "square.png")
    user = User("decline")
    async with asking(settings, user, mode) as client:
        finetune_id, step = await saved_checkpoint(client, photo)
        text = await refusal(client, "delete_checkpoint", finetune_id=finetune_id, step=step)
        assert await checkpoints_of(client, finetune_id) == [step]

    (question,) = user.questions
    assert f"{finetune_id}@{step}" in question and "latest" in question
    assert "was not deleted" in text


async def test_a_missing_checkpoint_is_reported_without_asking(settings: Settings) -> None:
    user = User("accept")
    async with asking(settings, user, "auto") as client:
        made = await finetune(client)
        assert "404" in await refusal(client, "delete_checkpoint", finetune_id=made["finetune_id"], step=7)
    assert user.questions == []


@pytest.fixture
def small_batches(settings: Settings) -> Settings:
    return settings.model_copy(update={"confirm_batch_above": 2})


@pytest.mark.parametrize("mode", MODES)
async def test_a_batch_above_the_size_setting_is_submitted_only_after_the_user_agrees(
    small_batches: Settings, emulator, workdir: Path, mode: str
) -> None:
    folder = workdir / "many"
    folder.mkdir()
    for i in range(3):
        save(canvas(), folder / f"{i}.png")
    declining, agreeing = User("decline"), User("accept")
    async with asking(small_batches, declining, mode) as client:
        text = await refusal(client, "submit_batch", skill="caption", images=str(folder))
    assert "the batch was not submitted" in text
    assert not [r for r in emulator.emulator.requests if "/batch" in r.path]

    async with asking(small_batches, agreeing, mode) as client:
        submitted = await call(client, "submit_batch", skill="caption", images=str(folder))
    assert submitted["lines"] == 3
    (question,) = agreeing.questions
    assert "3 images" in question and "3 API calls" in question


async def test_a_batch_within_the_size_setting_is_submitted_without_asking(
    small_batches: Settings, workdir: Path
) -> None:
    images = [save(canvas(), workdir / f"{i}.png") for i in range(2)]
    user = User("decline")
    async with asking(small_batches, user, "auto") as client:
        assert (await call(client, "submit_batch", skill="caption", images=images))["lines"] == 2
    assert user.questions == []


@pytest.mark.parametrize("mode", MODES)
async def test_a_training_run_the_user_declines_never_starts(
    settings: Settings, emulator, workdir: Path, mode: str
) -> None:
    dataset = detect_dataset(workdir, count=6)
    user = User("decline")
    async with asking(settings, user, mode) as client:
        text = await refusal(
            client,
            "start_training",
            dataset=str(dataset),
            name=unique(),
            steps=3,
            groups_per_step=2,
            rollouts_per_group=4,
            eval_every=2,
        )
        runs = await call(client, "list_runs")

    assert "the run was not started" in text
    assert runs["runs"] == []
    assert not [r for r in emulator.emulator.requests if "/tuning" in r.path]
    (question,) = user.questions
    assert "3 steps of 2 examples x 4 rollouts" in question and "2 evaluation(s)" in question
    assert "API calls" in question
