"""Atomic writes: a file or folder appears under its name complete, or not at all.

Everything a run writes (checkpoints, ``metrics.json``, plots, data sets) is first
written to a hidden sibling named ``.{name}.partial-{host}-{pid}-{token}`` and then
renamed into place, which POSIX makes atomic within one file system. A writer
killed before the rename (SIGKILL, power loss) leaves only its hidden sibling
behind; the next write of the same target removes the siblings whose writer is
gone (:func:`clean_stale`), so they never pile up.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import torch

_KINDS = ("partial", "old")  # files being written; folders being replaced


def _host() -> str:
    # A short tag of this machine: on a shared file system only this host's
    # process ids can be checked.
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def staging_path(target: str | os.PathLike, kind: str = "partial") -> Path:
    """A hidden sibling of ``target`` that no other writer uses: ``.{name}.{kind}-{host}-{pid}-{token}``.

    Example:
        >>> staging_path("/tmp/run/checkpoint.pt").name.startswith(".checkpoint.pt.partial-")
        True
    """
    target = Path(target)
    return target.with_name(f".{target.name}.{kind}-{_host()}-{os.getpid()}-{secrets.token_hex(4)}")


def _writer_gone(sibling: Path, kind: str, name: str) -> bool:
    """Whether the process that made ``sibling`` has stopped (so the sibling is debris)."""
    tag = sibling.name[len(f".{name}.{kind}-") :]
    parts = tag.split("-")
    if len(parts) != 3 or not parts[1].isdigit():
        # Names without a process id come from combgrad versions before 0.2, whose
        # writers (unique temporary names, never reused) cannot still be running.
        return True
    host, pid = parts[0], int(parts[1])
    if host != _host() or os.name != "posix":
        return False  # another machine's writer, or no safe liveness probe (os.kill kills on Windows)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by another user
    return False


def clean_stale(target: str | os.PathLike) -> list[Path]:
    """Remove the hidden siblings of ``target`` left by writers that no longer run.

    A sibling is stale when its name carries this machine's tag and the id of a
    process that has exited (or carries no id: older versions' names). Writers
    still running, and writers on other machines, keep theirs.

    Returns:
        The removed paths.

    Example:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> (root / ".data.partial-abc").mkdir()  # an old version's debris
        >>> [p.name for p in clean_stale(root / "data")]
        ['.data.partial-abc']
    """
    target = Path(target)
    removed: list[Path] = []
    if not target.parent.is_dir():
        return removed
    for kind in _KINDS:
        for sibling in target.parent.glob(f".{target.name}.{kind}-*"):
            if _writer_gone(sibling, kind, target.name):
                if sibling.is_dir() and not sibling.is_symlink():
                    shutil.rmtree(sibling, ignore_errors=True)
                else:
                    sibling.unlink(missing_ok=True)
                removed.append(sibling)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Call ``write(handle)`` on a hidden sibling of ``path``, sync it, and rename it to ``path``.

    Args:
        path: The file to (re)place.
        write: Writes the content to a binary file handle.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> atomic_write(target, lambda handle: handle.write(b"done")).read_text()
        'done'
    """
    path = Path(path)
    clean_stale(path)
    temporary = staging_path(path)
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` atomically (:func:`atomic_write`): never a torn file.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.pt"
        >>> _ = atomic_torch_save({"a": 1}, target); torch.load(target, weights_only=True)
        {'a': 1}
    """
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by None and keys made strings (strict JSON).

    Example:
        >>> json_safe({1: [float("nan"), 2.0]})
        {'1': [None, 2.0]}
    """
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(key): json_safe(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(value) for value in obj]
    return obj


def atomic_write_json(obj: Any, path: str | os.PathLike, *, sort_keys: bool = False) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (NaN and inf written as null).

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "m.json"
        >>> atomic_write_json({"x": float("nan")}, target).read_text()
        '{\\n  "x": null\\n}\\n'
    """
    text = json.dumps(json_safe(obj), indent=2, sort_keys=sort_keys) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


@contextmanager
def atomic_folder(target: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Fill a hidden staging folder, then put it in place of ``target`` in one rename.

    The staging folder is made with ``os.mkdir`` (mode 0o777 less the umask, like
    any folder the user makes). On leaving the ``with`` block normally it replaces
    ``target`` (an existing ``target`` is first moved aside, then deleted); on an
    exception it is deleted and ``target`` keeps its old content.

    Raises:
        FileExistsError: If ``target`` exists and ``overwrite`` is False.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "set"
        >>> with atomic_folder(target) as staging:
        ...     _ = (staging / "a.txt").write_text("a")
        >>> sorted(p.name for p in target.iterdir())
        ['a.txt']
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    staging = staging_path(target)
    os.mkdir(staging)
    try:
        yield staging
        if target.exists():
            # Two renames: a folder cannot replace a non-empty folder in one.
            retired = staging_path(target, "old")
            os.replace(target, retired)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


__all__ = [
    "atomic_folder",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_json",
    "clean_stale",
    "json_safe",
    "staging_path",
]
