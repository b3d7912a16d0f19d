"""`moondream-mcp doctor` against the emulator: each problem found, named, and given a fix; exit 1 when any."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from moondream_emulator import Emulator, EmulatorConfig, RunningEmulator, running_emulator
from moondream_mcp import cli
from moondream_mcp.config import Settings
from moondream_mcp.doctor import run_doctor
from tests.support.keys import API_KEY

pytestmark = pytest.mark.anyio


async def doctor(settings: Settings) -> tuple[int, str]:
    out = io.StringIO()
    status = await run_doctor(settings, out)
    return status, out.getvalue()


async def test_a_healthy_setup_passes_every_check(settings: Settings, workdir: Path) -> None:
    status, report = await doctor(settings)

    assert (status, report) == (
        0,
        "\n".join(
            [
                "moondream-mcp doctor",
                f"  ok    reached {settings.endpoint}",
                "  ok    the API key was accepted",
                f"  ok    the data directory {settings.data_dir} is writable",
                f"  ok    the allowed directory {workdir} exists",
                "  ok    MOONDREAM_MCP_TOKEN is not set: `serve --transport http` will listen on loopback only",
                "All checks passed.",
            ]
        )
        + "\n",
    )


async def test_a_wrong_key_is_reported_with_what_to_fix(settings: Settings) -> None:
    status, report = await doctor(settings.model_copy(update={"api_key": SecretStr("md-wrong-key")}))

    assert status == 1
    assert "  FAIL  the API refused the key (HTTP 401): invalid API key\n" in report
    assert "        fix: check MOONDREAM_API_KEY: copy the key again from the Moondream console" in report
    assert "md-wrong-key" not in report and API_KEY not in report
    assert report.endswith("1 problem found.\n")


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_an_unreachable_endpoint_is_reported(settings: Settings, closed_port: int) -> None:
    endpoint = f"http://127.0.0.1:{closed_port}/v1"
    status, report = await doctor(settings.model_copy(update={"endpoint": endpoint}))

    assert status == 1
    assert f"  FAIL  cannot reach {endpoint}: could not connect to {endpoint}/tuning/finetunes" in report
    assert "        fix: check MOONDREAM_ENDPOINT (is that server running?)" in report
    assert API_KEY not in report


async def test_an_unreachable_station_says_to_start_it(settings: Settings) -> None:
    station = settings.model_copy(update={"endpoint": "http://localhost:2020/v1", "api_key": None})
    status, report = await doctor(station)
    if "reached http://localhost:2020/v1" in report:
        pytest.skip("something answers on localhost:2020 on this machine")

    assert status == 1
    assert "        fix: start Moondream Station, or set MOONDREAM_ENDPOINT to where it listens\n" in report


async def test_an_unwritable_data_directory_is_reported(settings: Settings, tmp_path: Path) -> None:
    # A path under a regular file: no user can create it, root included (tests may run as root).
    (tmp_path / "a-file").write_text("")
    data_dir = tmp_path / "a-file" / "data"
    status, report = await doctor(settings.model_copy(update={"data_dir": data_dir}))

    assert status == 1
    assert f"  FAIL  the data directory {data_dir} is not writable: Not a directory\n" in report
    assert "        fix: set MOONDREAM_MCP_DATA_DIR to a directory this user can write" in report


async def test_a_missing_allowed_directory_is_reported(settings: Settings, workdir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-album"
    status, report = await doctor(settings.model_copy(update={"allowed_dirs": [workdir, missing]}))

    assert status == 1
    assert f"  ok    the allowed directory {workdir} exists\n" in report
    assert f"  FAIL  the allowed directory {missing} does not exist\n" in report
    assert "        fix: create it, or fix MOONDREAM_MCP_ALLOWED_DIRS" in report


async def test_the_cloud_without_a_key_is_reported_without_calling_it(settings: Settings) -> None:
    cloud = settings.model_copy(update={"endpoint": "https://api.moondream.ai/v1", "api_key": None})
    status, report = await doctor(cloud)

    assert status == 1
    assert "  FAIL  MOONDREAM_API_KEY is not set, and the endpoint is Moondream Cloud\n" in report


@pytest.fixture
def station() -> Iterator[RunningEmulator]:
    with running_emulator(Emulator(EmulatorConfig(no_auth=True))) as running:
        yield running


async def test_a_station_without_tuning_is_reachable_and_says_what_works(
    settings: Settings, station: RunningEmulator
) -> None:
    status, report = await doctor(settings.model_copy(update={"endpoint": station.url, "api_key": None}))

    assert status == 0
    assert (
        f"  ok    reached {station.url} (no tuning API: Moondream Station?); the vision tools work, "
        "the finetuning and Batch API tools will not\n"
    ) in report


async def test_a_short_http_token_is_reported_as_guessable(settings: Settings) -> None:
    status, report = await doctor(settings.model_copy(update={"token": SecretStr("hunter2")}))

    assert status == 1
    assert "  FAIL  MOONDREAM_MCP_TOKEN is only 7 characters: easy to guess\n" in report
    assert "hunter2" not in report


def test_the_doctor_command_reads_the_environment_and_exits_1_on_a_problem(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], emulator, tmp_path: Path
) -> None:
    monkeypatch.setenv("MOONDREAM_API_KEY", API_KEY)
    monkeypatch.setenv("MOONDREAM_ENDPOINT", emulator.url)
    monkeypatch.setenv("MOONDREAM_MCP_ALLOWED_DIRS", str(tmp_path / "gone"))
    monkeypatch.setenv("MOONDREAM_MCP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MOONDREAM_MCP_TOKEN", raising=False)
    with pytest.raises(SystemExit) as exited:
        cli.main(["doctor"])

    assert exited.value.code == 1
    out = capsys.readouterr().out
    assert f"  FAIL  the allowed directory {tmp_path / 'gone'} does not exist\n" in out
    assert "  ok    the API key was accepted\n" in out
    assert API_KEY not in out


def test_a_setting_that_does_not_parse_is_reported_by_its_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MOONDREAM_TIMEOUT", "soon")
    with pytest.raises(SystemExit) as exited:
        cli.main(["doctor"])

    assert exited.value.code == 1
    assert (
        capsys.readouterr().out
        == "\n".join(
            [
                "moondream-mcp doctor",
                "  FAIL  MOONDREAM_TIMEOUT: Input should be a valid number, unable to parse string as a number",
                "        fix: fix MOONDREAM_TIMEOUT: Seconds to wait for one API request.",
                "1 problem found.",
            ]
        )
        + "\n"
    )


async def test_credentials_in_the_endpoint_are_never_shown(settings: Settings, closed_port: int) -> None:
    password = "hunter2-swordfish"
    endpoint = f"http://robot:{password}@127.0.0.1:{closed_port}/v1"
    status, report = await doctor(settings.model_copy(update={"endpoint": endpoint}))

    assert status == 1
    shown = f"http://127.0.0.1:{closed_port}/v1"
    assert f"  FAIL  cannot reach {shown}: could not connect to {shown}/tuning/finetunes" in report
    assert password not in report and "robot" not in report


@pytest.mark.parametrize("key", ["", "e", "a"])
async def test_a_tiny_key_leaves_the_report_ungarbled(settings: Settings, closed_port: int, key: str) -> None:
    endpoint = f"http://127.0.0.1:{closed_port}/v1"
    status, report = await doctor(settings.model_copy(update={"endpoint": endpoint, "api_key": SecretStr(key)}))

    assert status == 1 and "***" not in report
    assert "        fix: check MOONDREAM_ENDPOINT (is that server running?)" in report
