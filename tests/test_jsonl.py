"""The rule every JSONL output follows: written only when new, or when it is the same job's own earlier output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from moondream_mcp.files import FileError, FileGuard
from moondream_mcp.jsonl import LineWriter, job_id
from tests.support.pictures import canvas, save

JOB = job_id(tool="test", n=1)


def claim(allowed: Path, name: str, mode: str = "resume", job: str = JOB) -> LineWriter:
    return LineWriter.claim(FileGuard([allowed], 1 << 20).open_output(str(allowed / name)), job, mode, tool="test")


def refused(path: Path) -> str:
    return (
        f"refused to write {path}: the file is there and is not an earlier test output of this same job, so it "
        "was left untouched; give a new file name."
    )


def test_a_new_file_gets_every_line_marked_with_its_job(allowed: Path) -> None:
    with claim(allowed, "out.jsonl") as lines:
        lines.write({"image": "a.png", "ok": True})
        lines.write({"image": "b.png", "ok": False})

    text = (allowed / "out.jsonl").read_text()
    assert text.splitlines()[0].startswith(f'{{"job":"{JOB}",')
    assert [json.loads(line) for line in text.splitlines()] == [
        {"job": JOB, "image": "a.png", "ok": True},
        {"job": JOB, "image": "b.png", "ok": False},
    ]


@pytest.mark.parametrize("mode", ["resume", "replace"])
@pytest.mark.parametrize(
    "content",
    [
        "png",
        b"plain notes\nsecond line\n",
        b'{"image": "a.png", "skill": "detect", "object": "car", "boxes": []}\n',  # a dataset
        f'{{"job":"{job_id(tool="test", n=2)}","ok":true}}\n'.encode(),  # another job's output
        f'{{"job":"{JOB}0","ok":true}}\n'.encode(),  # a job id that merely starts like this one
        f'{{"ok":true,"job":"{JOB}"}}\n'.encode(),  # the marker not where this server puts it
    ],
)
def test_a_file_that_is_not_this_jobs_own_is_refused_and_left_untouched(
    allowed: Path, content: str | bytes, mode: str
) -> None:
    path = allowed / "victim.jsonl"
    if content == "png":
        save(canvas(), path, format="PNG")
    else:
        path.write_bytes(content)  # type: ignore[arg-type]
    before = path.read_bytes()

    with pytest.raises(FileError) as caught:
        claim(allowed, "victim.jsonl", mode)

    assert str(caught.value) == refused(path)
    assert path.read_bytes() == before


def test_the_same_jobs_file_is_resumed_after_its_torn_last_line_is_cut(allowed: Path) -> None:
    path = allowed / "out.jsonl"
    path.write_text(f'{{"job":"{JOB}","image":"a.png"}}\n{{"job":"{JOB}","ima')

    with claim(allowed, "out.jsonl") as lines:
        assert list(lines.existing()) == [f'{{"job":"{JOB}","image":"a.png"}}'.encode()]
        lines.write({"image": "b.png"})

    assert [json.loads(line)["image"] for line in path.read_text().splitlines()] == ["a.png", "b.png"]


def test_an_empty_file_is_anyones_to_write(allowed: Path) -> None:
    (allowed / "empty.jsonl").touch()

    with claim(allowed, "empty.jsonl") as lines:
        lines.write({"n": 1})

    assert json.loads((allowed / "empty.jsonl").read_text()) == {"job": JOB, "n": 1}


def test_replacing_starts_afresh_only_at_the_first_write(allowed: Path) -> None:
    path = allowed / "out.jsonl"
    path.write_text(f'{{"job":"{JOB}","n":1}}\n{{"job":"{JOB}","n":2}}\n')
    before = path.read_bytes()

    claim(allowed, "out.jsonl", "replace").close()
    assert path.read_bytes() == before  # claimed, nothing written: the earlier output stands

    with claim(allowed, "out.jsonl", "replace") as lines:
        lines.write({"n": 3})
    assert path.read_text() == f'{{"job":"{JOB}","n":3}}\n'


def test_abandoning_removes_a_file_the_call_made_and_empties_one_it_had_begun_to_rewrite(allowed: Path) -> None:
    made = claim(allowed, "new.jsonl", "replace")
    made.write({"n": 1})
    made.abandon()
    assert not (allowed / "new.jsonl").exists()

    path = allowed / "old.jsonl"
    path.write_text(f'{{"job":"{JOB}","n":1}}\n')
    untouched = claim(allowed, "old.jsonl", "replace")
    untouched.abandon()
    assert path.read_text() == f'{{"job":"{JOB}","n":1}}\n'
    begun = claim(allowed, "old.jsonl", "replace")
    begun.write({"n": 2})
    begun.abandon()
    assert path.read_bytes() == b""


def test_writes_go_to_the_file_opened_even_if_its_name_is_swapped_for_a_symlink(allowed: Path, outside: Path) -> None:
    path = allowed / "out.jsonl"
    with claim(allowed, "out.jsonl") as lines:
        lines.write({"n": 1})
        path.rename(allowed / "moved.jsonl")
        path.symlink_to(outside / "planted.jsonl")
        lines.write({"n": 2})

    assert not (outside / "planted.jsonl").exists()
    assert [json.loads(line)["n"] for line in (allowed / "moved.jsonl").read_text().splitlines()] == [1, 2]
