"""Whole files written through the file guard's handles: rewritten in one step, never through a link planted
in a folder being written, never over what changed meanwhile."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from moondream_mcp import outputs
from moondream_mcp.files import FileError, FileGuard


def guard(allowed: Path, own: Path | None = None) -> FileGuard:
    return FileGuard([allowed], 1 << 20, own)


def test_a_rewrite_replaces_the_file_in_one_step_keeping_its_permissions(allowed: Path) -> None:
    path = allowed / "d.jsonl"
    path.write_bytes(b"one\n")
    path.chmod(0o640)
    files = guard(allowed)
    with files.open(str(path)) as opened:
        outputs.rewrite(files, opened, b"two\n")
    assert path.read_bytes() == b"two\n"
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in allowed.iterdir()) == ["d.jsonl"]  # no temporary left behind


@pytest.mark.parametrize("change", ["appended", "replaced", "removed"])
def test_a_rewrite_of_a_file_that_changed_since_it_was_read_is_refused_and_leaves_it_as_it_is(
    allowed: Path, change: str
) -> None:
    path = allowed / "d.jsonl"
    path.write_bytes(b"one\n")
    files = guard(allowed)
    with files.open(str(path)) as opened:
        if change == "appended":
            with path.open("ab") as f:
                f.write(b"a line another call wrote\n")
        elif change == "replaced":
            (allowed / "other").write_bytes(b"new\n")
            os.replace(allowed / "other", path)
        else:
            path.unlink()
        before = path.read_bytes() if path.exists() else None
        with pytest.raises(FileError, match="changed while it was being rewritten"):
            outputs.rewrite(files, opened, b"fixed\n")
    assert (path.read_bytes() if path.exists() else None) == before
    assert [p.name for p in allowed.iterdir()] == ([] if before is None else ["d.jsonl"])


def test_a_folder_is_entered_by_name_never_through_a_symlink_in_it(allowed: Path, outside: Path) -> None:
    (allowed / "out").mkdir()
    (allowed / "elsewhere").mkdir()
    (allowed / "out" / "inside").symlink_to(allowed / "elsewhere")
    (allowed / "out" / "away").symlink_to(outside)
    with guard(allowed).open_dir(str(allowed / "out")) as folder:
        for name in ("inside", "away"):
            for create in (False, True):
                with pytest.raises(FileError, match="is not a folder"):
                    folder.child(name, create=create)
        with folder.child("new", create=True) as made:
            assert made.path == allowed / "out" / "new"
        for name in ("..", ".", "a/b", ""):
            with pytest.raises(FileError, match="not a name in"):
                folder.child(name)
    assert (allowed / "out" / "new").is_dir() and list(outside.iterdir()) == []


def test_a_file_is_created_only_new_and_a_removal_takes_the_link_not_what_it_leads_to(
    allowed: Path, outside: Path
) -> None:
    target = outside / "secret.txt"
    target.write_text("keep")
    (allowed / "link").symlink_to(target)
    (allowed / "dangling").symlink_to(outside / "nothing")
    (allowed / "there.txt").write_text("mine")
    with guard(allowed).open_dir(str(allowed)) as folder:
        for name in ("link", "dangling", "there.txt"):
            with pytest.raises(FileError, match="something is there already"):
                folder.create(name)
        assert folder.remove("link") and not folder.remove("link")
        outputs.write_new(folder, "fresh.txt", b"new")
        (allowed / "sub").mkdir()
        assert not folder.remove("sub")  # a folder is never removed
    assert target.read_text() == "keep" and not (outside / "nothing").exists()
    assert (allowed / "fresh.txt").read_bytes() == b"new" and (allowed / "there.txt").read_text() == "mine"
    assert (allowed / "sub").is_dir()


def test_a_folder_is_made_only_where_a_file_may_be_written(allowed: Path, outside: Path) -> None:
    files = guard(allowed)
    with files.make_dir(str(allowed / "new")) as made:
        assert made.path == allowed / "new"
    with files.make_dir(str(allowed / "new")) as again:  # there already: opened
        assert again.path == allowed / "new"
    (allowed / "out").symlink_to(outside / "planted")
    for ref in (str(outside / "made"), str(allowed / "out"), str(allowed / ".hidden")):
        with pytest.raises(FileError):
            files.make_dir(ref)
    assert list(outside.iterdir()) == [] and not (allowed / ".hidden").exists()
    with pytest.raises(FileError, match="does not exist"):
        files.make_dir(str(allowed / "no" / "parent"))


def test_the_servers_own_files_are_replaced_whole(allowed: Path, tmp_path: Path) -> None:
    own = tmp_path / "data"
    files = guard(allowed, own)
    first = outputs.save_own(files, "sheets", "p1.jpg", b"first")
    second = outputs.save_own(files, "sheets", "p1.jpg", b"second")
    assert first.path == second.path == own.resolve() / "sheets" / "p1.jpg"
    assert second.path.read_bytes() == b"second"
    assert [p.name for p in (own / "sheets").iterdir()] == ["p1.jpg"]
