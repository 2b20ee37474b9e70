"""Tests of combgrad/tasks/_training/files.py: atomic files and folders, stale debris."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from combgrad.tasks._training import files


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    files.atomic_write_json({"a": 1}, target)

    def failing(handle) -> None:
        handle.write(b"{half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        files.atomic_write(target, failing)
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left


def test_json_is_strict(tmp_path: Path) -> None:
    target = files.atomic_write_json({"x": [float("inf"), 1.5], 2: None}, tmp_path / "m.json")
    assert json.loads(target.read_text(), parse_constant=lambda name: pytest.fail(name)) == {"x": [None, 1.5], "2": None}


@pytest.mark.skipif(os.name != "posix", reason="liveness of a process id is probed on POSIX only")
def test_clean_stale_removes_only_dead_writers_debris(tmp_path: Path) -> None:
    """Guards issue 8 (smaller defects): a killed writer's hidden sibling was never removed."""
    target = tmp_path / "checkpoint.pt"
    host = files.staging_path(target).name.split("-")[1]
    dead = tmp_path / f".checkpoint.pt.partial-{host}-{_dead_pid()}-aaaa"
    alive = tmp_path / f".checkpoint.pt.partial-{host}-{os.getppid()}-bbbb"
    elsewhere = tmp_path / f".checkpoint.pt.partial-otherhost-{_dead_pid()}-cccc"
    legacy = tmp_path / ".checkpoint.pt.partial-k2j4h5"
    retired = tmp_path / f".checkpoint.pt.old-{host}-{_dead_pid()}-dddd"
    unrelated = tmp_path / ".other.partial-x"
    for path in (dead, alive, elsewhere, unrelated):
        path.write_bytes(b"x")
    legacy.mkdir()
    retired.mkdir()
    removed = files.clean_stale(target)
    assert sorted(removed) == sorted([dead, legacy, retired])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, elsewhere.name, unrelated.name])
    # Every atomic write of the target cleans up first.
    dead.write_bytes(b"x")
    files.atomic_write(target, lambda handle: handle.write(b"new"))
    assert not dead.exists() and target.read_bytes() == b"new"


def test_atomic_folder_replaces_or_keeps_the_target(tmp_path: Path) -> None:
    target = tmp_path / "set"
    with files.atomic_folder(target) as staging:
        (staging / "a").write_text("1")
    with pytest.raises(FileExistsError, match="already exists"):
        with files.atomic_folder(target):
            pass
    with pytest.raises(RuntimeError):
        with files.atomic_folder(target, overwrite=True) as staging:
            (staging / "b").write_text("2")
            raise RuntimeError
    assert [p.name for p in target.iterdir()] == ["a"]
    with files.atomic_folder(target, overwrite=True) as staging:
        (staging / "b").write_text("2")
    assert [p.name for p in target.iterdir()] == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_folder_respects_the_umask(tmp_path: Path, umask: int) -> None:
    """Guards issue 8 (smaller defects): the staging folder came from mkdtemp (always 0700)."""
    previous = os.umask(umask)
    try:
        with files.atomic_folder(tmp_path / "set") as staging:
            (staging / "a").write_text("1")
    finally:
        os.umask(previous)
    assert (tmp_path / "set").stat().st_mode & 0o777 == 0o777 & ~umask
