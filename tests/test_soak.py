"""The fault soak: hundreds of tool calls, 32 at a time, against an emulator failing about one request in
five (429 with Retry-After, 500/502/503, reset connections, timeouts, truncated streams). Every call ends
with a correct result or a clear error, none hangs, and no train step is ever applied twice.

How faults are injected: before each call, a seeded random generator decides (one call in four) whether
to arm one fault, and which, on the emulator's knobs (inject / inject_drop / inject_delay / inject_truncate)
for the path that call will hit. The next request to that path takes it, whichever call it belongs to, so
faults land on first attempts and retries alike, as they would in the wild. Retries add requests, so about
one request in five ends up faulted; the test measures it from the emulator's request log.
"""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters

from moondream_emulator import Emulator, EmulatorConfig, RunningEmulator, running_emulator
from moondream_mcp.client import MoondreamClient, MoondreamError
from moondream_mcp.config import Settings
from moondream_mcp.images import ImageLoader
from moondream_mcp.server import build_server
from tests.support.keys import API_KEY
from tests.support.pictures import canvas, save
from tests.support.stdio import server_env

pytestmark = pytest.mark.anyio

SEED = 20261121
FAULT_RATE = 0.25  # of calls; about 0.2 of requests once retries are counted
TIMEOUT = 2.0  # seconds per API request: an injected delay of DELAY is a timeout
DELAY = TIMEOUT + 0.5
BOX = (0.25, 0.2, 0.5, 0.6)  # the red square in canvas()
# What a call that failed after all the retries it was allowed may say; anything else is a bug.
CLEAR_FAILURES = (
    "even after retries",
    "did not answer in time",
    "could not reach the Moondream API",
    "train_step outcome unknown",
    "answer broke off",
    "is rate limiting this key",
)
FAULTS = ["429", "500", "502", "503", "drop", "timeout"]
FAULT_WEIGHTS = [3, 2, 1, 2, 2, 1]


@pytest.fixture
def soak_emulator() -> Iterator[RunningEmulator]:
    """An emulator of the soak's own: its faults must not leak into other tests."""
    with running_emulator(Emulator(EmulatorConfig(keys=frozenset({API_KEY})))) as running:
        yield running


@pytest.fixture
def soak_settings(soak_emulator: RunningEmulator, workdir: Path, tmp_path: Path) -> Settings:
    return Settings(
        api_key=API_KEY,
        endpoint=soak_emulator.url,
        allowed_dirs=[workdir],
        data_dir=tmp_path / "data",
        timeout=TIMEOUT,
        retry_after_cap=0.2,
    )


@dataclass
class Tally:
    """What happened, for the assertions and for the report printed at the end."""

    calls: Counter[str] = field(default_factory=Counter)
    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    armed: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    unknown_steps: int = 0
    steps: list[tuple[str, int]] = field(default_factory=list)

    def report(self) -> str:
        return (
            f"calls {sum(self.calls.values())} {dict(self.calls)}; ok {sum(self.ok.values())}; "
            f"failed {sum(self.failed.values())} {dict(self.failed)}; faults armed {sum(self.armed.values())} "
            f"{dict(self.armed)}; failure reasons {dict(self.reasons)}"
        )


class FaultDriver:
    """Arms one fault for exactly FAULT_RATE of the calls (in blocks of 20), which ones and which fault
    chosen by a seeded generator: the rate holds for any seed, the pattern differs."""

    BLOCK = 20

    def __init__(self, emulator: Emulator, rng: random.Random, tally: Tally) -> None:
        self.emulator = emulator
        self.rng = rng
        self.tally = tally
        self._pending: list[bool] = []

    def _armed_next(self) -> bool:
        if not self._pending:
            faulty = round(FAULT_RATE * self.BLOCK)
            self._pending = [True] * faulty + [False] * (self.BLOCK - faulty)
            self.rng.shuffle(self._pending)
        return self._pending.pop()

    def maybe(self, path: str, *, streamed: bool = False) -> None:
        if not self._armed_next():
            return
        kinds = [*FAULTS, "truncate"] if streamed else FAULTS
        kind = self.rng.choices(kinds, weights=[*FAULT_WEIGHTS, 4][: len(kinds)])[0]
        self.tally.armed[kind] += 1
        if kind == "429":
            self.emulator.inject(429, retry_after=0.1, path=path)
        elif kind in ("500", "502", "503"):
            self.emulator.inject(int(kind), path=path)
        elif kind == "drop":
            self.emulator.inject_drop(path=path)
        elif kind == "timeout":
            self.emulator.inject_delay(DELAY, path=path)
        else:
            self.emulator.inject_truncate(path=path)


def near(actual: dict[str, float], expected: tuple[float, ...], keys: tuple[str, ...]) -> bool:
    return all(abs(actual[k] - e) <= 0.02 for k, e in zip(keys, expected))


def check_result(tool: str, data: dict[str, Any]) -> None:
    """The answer is right, not merely present: faults must never corrupt a result."""
    corners = ("x_min", "y_min", "x_max", "y_max")
    if tool == "detect":
        assert data["count"] == 1 and near(data["objects"][0], BOX, corners), data
    elif tool == "point":
        assert data["count"] == 1 and near(data["points"][0], (0.375, 0.4), ("x", "y")), data
    elif tool == "segment":
        assert near(data["bbox"], BOX, corners) and data["image_path"].startswith("M"), data
    elif tool == "caption":
        assert "red" in data["caption"], data
    elif tool == "query":
        assert data["answer"] == "1", data
    elif tool == "generate_rollouts":
        assert len(data["outputs"]) == 4 and len(data["rewards"]) == 4, data
    elif tool == "train_step":
        assert isinstance(data["step"], int) and data["step"] >= 1, data


class Soak:
    def __init__(
        self,
        client: Client,
        driver: FaultDriver,
        tally: Tally,
        image: str,
        finetunes: list[str],
        direct: MoondreamClient,
        data_url: str,
    ) -> None:
        self.client = client
        self.driver = driver
        self.tally = tally
        self.image = image
        self.finetunes = finetunes
        self.direct = direct
        self.data_url = data_url

    async def call(self, tool: str, arguments: dict[str, Any], path: str) -> dict[str, Any] | None:
        self.driver.maybe(path)
        self.tally.calls[tool] += 1
        with anyio.fail_after(60):
            result = await self.client.call_tool(tool, arguments)
        if not result.is_error:
            check_result(tool, result.structured_content)
            self.tally.ok[tool] += 1
            return result.structured_content
        text = result.content[0].text
        assert text.startswith(f"Error executing tool {tool}: "), text  # the bare prefix is a crash
        assert any(reason in text for reason in CLEAR_FAILURES), text
        assert API_KEY not in text
        self.tally.failed[tool] += 1
        self.tally.reasons[next(r for r in CLEAR_FAILURES if r in text)] += 1
        if "outcome unknown" in text:
            self.tally.unknown_steps += 1
        return None

    async def skill(self, tool: str) -> None:
        arguments: dict[str, Any] = {"image": self.image}
        if tool == "query":
            arguments["question"] = "How many red squares are there?"
        elif tool != "caption":
            arguments["object"] = "red"
        await self.call(tool, arguments, f"/{tool}")

    async def train(self, finetune_id: str) -> None:
        rollouts = await self.call(
            "generate_rollouts",
            {
                "finetune_id": finetune_id,
                "skill": "detect",
                "image": self.image,
                "object": "red",
                "num_rollouts": 4,
                "ground_truth": {"boxes": [dict(zip(("x_min", "y_min", "x_max", "y_max"), BOX))]},
            },
            "/rollouts",
        )
        if rollouts is None:
            return
        step = await self.call(
            "train_step",
            {"finetune_id": finetune_id, "groups": [{"rollout_set_id": rollouts["rollout_set_id"]}]},
            "/train_step",
        )
        if step is not None:
            self.tally.steps.append((finetune_id, step["step"]))

    async def stream(self, skill: str) -> None:
        # The tools never stream; the client's streaming path meets truncated streams here.
        self.driver.maybe(f"/{skill}", streamed=True)
        name = f"stream_{skill}"
        self.tally.calls[name] += 1
        try:
            with anyio.fail_after(60):
                if skill == "caption":
                    text = (await self.direct.skills.caption(self.data_url, stream=True)).caption
                    assert "red" in text, text
                else:
                    text = (
                        await self.direct.skills.query(
                            "How many red squares are there?", image_url=self.data_url, stream=True
                        )
                    ).answer
                    assert text == "1", text
        except MoondreamError as exc:
            assert str(exc) and API_KEY not in str(exc)
            self.tally.failed[name] += 1
            self.tally.reasons[type(exc).__name__] += 1
        else:
            self.tally.ok[name] += 1

    async def one(self, rng_choice: str, index: int) -> None:
        if rng_choice == "train":
            await self.train(self.finetunes[index % len(self.finetunes)])
        elif rng_choice.startswith("stream_"):
            await self.stream(rng_choice.removeprefix("stream_"))
        else:
            await self.skill(rng_choice)


def faulted_requests(emulator: Emulator, tally: Tally) -> int:
    """Requests answered with an injected status or dropped (in the log), plus those delayed or truncated."""
    failed = sum(1 for r in emulator.requests if r.status in (0, 429, 500, 502, 503))
    return failed + tally.armed["timeout"] + tally.armed["truncate"]


def assert_no_step_applied_twice(emulator: Emulator, tally: Tally) -> None:
    applied = emulator.train_steps
    pairs = [(s.finetune_id, s.step) for s in applied]
    assert len(pairs) == len(set(pairs))
    # The same groups (the same rollouts) applied in two steps would mean a train_step was re-sent.
    payloads = [json.dumps(s.groups, sort_keys=True) for s in applied]
    assert len(payloads) == len(set(payloads))
    # Every reported step was applied; beyond them only those whose outcome was reported unknown.
    assert set(tally.steps) <= set(pairs)
    assert len(tally.steps) <= len(applied) <= len(tally.steps) + tally.unknown_steps


async def test_hundreds_of_calls_under_faults_end_correctly_or_clearly(
    soak_settings: Settings, soak_emulator: RunningEmulator, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(SEED)
    tally = Tally()
    emulator = soak_emulator.emulator
    image = save(canvas(), workdir / "square.png")
    kinds = ["caption", "query", "detect", "point", "segment", "train", "stream_caption", "stream_query"]
    plan = rng.choices(kinds, weights=[3, 3, 4, 3, 3, 4, 2, 2], k=300)

    with anyio.fail_after(90):
        async with (
            Client(build_server(soak_settings)) as client,
            MoondreamClient(
                endpoint=soak_settings.endpoint, api_key=API_KEY, timeout=TIMEOUT, retry_after_cap=0.2
            ) as direct,
        ):
            finetunes = []
            for n in range(4):  # set up before any fault is armed
                made = await client.call_tool("create_finetune", {"name": f"soak-{SEED}-{n}", "rank": 8})
                finetunes.append(made.structured_content["finetune_id"])
            async with ImageLoader(allowed_dirs=[workdir]) as loader:
                data_url = (await loader.load(image)).data_url
            soak = Soak(client, FaultDriver(emulator, rng, tally), tally, image, finetunes, direct, data_url)
            limit = anyio.CapacityLimiter(32)

            async def bounded(choice: str, index: int) -> None:
                async with limit:
                    await soak.one(choice, index)

            async with anyio.create_task_group() as tasks:
                for index, choice in enumerate(plan):
                    tasks.start_soon(bounded, choice, index)

    with capsys.disabled():
        sys.stderr.write(
            f"\nsoak: {tally.report()}; requests {len(emulator.requests)}, faulted "
            f"{faulted_requests(emulator, tally)}; train steps applied {len(emulator.train_steps)}\n"
        )
    total = sum(tally.calls.values())
    assert total >= 300
    assert sum(tally.ok.values()) + sum(tally.failed.values()) == total  # every call ended one way or the other
    faulted = faulted_requests(emulator, tally)
    assert 0.15 <= faulted / len(emulator.requests) <= 0.35
    assert sum(tally.ok.values()) >= 0.8 * total  # retries absorb most faults
    assert tally.steps, "no train step succeeded: the soak proved nothing about double steps"
    assert_no_step_applied_twice(emulator, tally)


async def test_32_concurrent_calls_to_one_server_process_over_stdio_all_end(
    soak_emulator: RunningEmulator, workdir: Path, tmp_path: Path
) -> None:
    image = save(canvas(), workdir / "square.png")
    rng = random.Random(SEED + 1)
    tally = Tally()
    driver = FaultDriver(soak_emulator.emulator, rng, tally)
    env = {
        **server_env(soak_emulator, workdir, tmp_path),
        "MOONDREAM_TIMEOUT": str(TIMEOUT),
        "MOONDREAM_MCP_RETRY_AFTER_CAP": "0.2",
    }
    params = StdioServerParameters(command=sys.executable, args=["-m", "moondream_mcp", "serve"], env=env)
    outcomes: list[str] = []

    async def one(tool: str) -> None:
        arguments: dict[str, Any] = {"image": image, "object": "red"}
        driver.maybe(f"/{tool}")
        result = await client.call_tool(tool, arguments)
        if result.is_error:
            assert any(reason in result.content[0].text for reason in CLEAR_FAILURES), result.content[0].text
            outcomes.append("error")
        else:
            check_result(tool, result.structured_content)
            outcomes.append("ok")

    with anyio.fail_after(60):
        async with Client(params) as client, anyio.create_task_group() as tasks:
            for n in range(32):
                tasks.start_soon(one, ("detect", "point", "segment")[n % 3])

    assert len(outcomes) == 32
    assert outcomes.count("ok") >= 24
