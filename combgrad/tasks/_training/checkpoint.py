"""A run's checkpoint file: written atomically after every epoch, read back safely to resume.

``checkpoint.pt`` holds the run's identity (the configuration a resumed run must
share), the finished epoch count, the per-epoch history, the state dicts of the
run's stateful parts (model, optimizer, scheduler, estimator, ...), the random
state (:mod:`.randomness`) and task extras. It holds only tensors, containers of
them, strings and numbers, and is read with ``torch.load(weights_only=True)`` on
the CPU: a planted file cannot run code, and a run on CUDA resumes (the random
states must be restored from CPU tensors). Every way a file can be unusable
(empty, truncated, foreign, from an older layout, for another configuration)
raises one ValueError that names the file.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from .files import atomic_torch_save
from .randomness import rng_state, set_rng_state

FORMAT = "combgrad.tasks.checkpoint/1"
"""The layout tag stored in every checkpoint; a file without it is refused."""

_REQUIRED = {"format": str, "config": dict, "epoch": int, "history": list, "states": dict, "rng": dict, "extra": dict}


def _first_line(error: BaseException) -> str:
    """The first sentence of an error's first line, at most 200 characters (errors here are one line)."""
    text = str(error).strip()
    return text.splitlines()[0].split(". ")[0][:200] if text else type(error).__name__


class Stateful(Protocol):
    """What a checkpoint can save and restore: a ``state_dict`` pair, as torch modules,
    optimizers and schedulers have."""

    def state_dict(self) -> Any: ...  # noqa: D102

    def load_state_dict(self, state: Any) -> Any: ...  # noqa: D102


class Checkpoint:
    """The checkpoint file of one run.

    Args:
        path: The file (``OUT/checkpoint.pt``).
        owner: Prefix of error messages (the task's name).
        identity: The configuration values that a resumed run must share with the
            checkpoint (plain Python values).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "checkpoint.pt"
        >>> model = torch.nn.Linear(2, 1)
        >>> Checkpoint(path, owner="demo", identity={"lr": 0.1}).save(
        ...     epoch=1, history=[{"loss": 0.5}], states={"model": model}, device=torch.device("cpu"))
        >>> content = Checkpoint(path, owner="demo", identity={"lr": 0.1}).read()
        >>> content["epoch"], content["history"]
        (1, [{'loss': 0.5}])
    """

    def __init__(self, path: str | os.PathLike, *, owner: str, identity: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.owner = owner
        self.identity = dict(identity)

    def save(
        self,
        *,
        epoch: int,
        history: list[dict[str, Any]],
        states: Mapping[str, Stateful | None],
        device: torch.device,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Replace the file atomically with the state after ``epoch`` finished epochs.

        ``states`` maps names to objects with ``state_dict``; None entries are kept as None.
        """
        content = {
            "format": FORMAT,
            "config": self.identity,
            "epoch": epoch,
            "history": history,
            "states": {name: None if part is None else part.state_dict() for name, part in states.items()},
            "rng": rng_state(device),
            "extra": dict(extra or {}),
        }
        atomic_torch_save(content, self.path)

    def _refuse(self, problem: str) -> ValueError:
        return ValueError(f"{self.owner}: cannot resume from {self.path}: {problem}")

    def read(self) -> dict[str, Any] | None:
        """The checkpoint's content, checked; None when the file does not exist.

        Raises:
            ValueError: Naming the file, if it is empty, truncated, not a checkpoint
                of this layout, or holds another configuration than ``identity``.
        """
        if not self.path.exists():
            return None
        try:
            with warnings.catch_warnings():
                # torch warns about foreign pickle protocols before refusing them: the
                # error below says it in one line.
                warnings.simplefilter("ignore", UserWarning)
                content = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001
            # torch.load's errors on a foreign byte stream are unspecified (UnpicklingError,
            # RuntimeError, EOFError, KeyError from the unpickler's memo, ...); all of them
            # mean the same thing here. KeyboardInterrupt and the like still propagate.
            if isinstance(error, pickle.UnpicklingError):
                # torch's message advises weights_only=False: exactly what must not be done.
                problem = "it holds objects other than tensors and plain values, and loading those could run code"
            elif self.path.stat().st_size == 0:
                problem = "the file is empty"
            else:
                problem = f"not a complete torch file ({type(error).__name__}: {_first_line(error)})"
            raise self._refuse(f"{problem}; delete it or choose another output folder") from error
        if not isinstance(content, dict) or content.get("format") != FORMAT:
            raise self._refuse(f"not a combgrad run checkpoint (no format tag {FORMAT!r})")
        for key, kind in _REQUIRED.items():
            if not isinstance(content.get(key), kind):
                raise self._refuse(f"its {key!r} entry is missing or not a {kind.__name__}")
        if content["epoch"] != len(content["history"]) or content["epoch"] < 0:
            raise self._refuse(f"it records {content['epoch']} epochs but holds {len(content['history'])}")
        saved = content["config"]
        differing = sorted(key for key in self.identity if saved.get(key) != self.identity[key])
        if differing:
            raise self._refuse(
                f"its configuration differs in {differing} "
                f"(checkpoint {[saved.get(key) for key in differing]}, now {[self.identity[key] for key in differing]})"
            )
        return content

    def restore(
        self, content: Mapping[str, Any], states: Mapping[str, Stateful | None], device: torch.device
    ) -> tuple[int, list[dict[str, Any]]]:
        """Load ``content`` (from :meth:`read`) into ``states`` and the random generators.

        Returns:
            The number of finished epochs and their history.

        Raises:
            ValueError: Naming the file, if a state does not fit its object.
        """
        saved = content["states"]
        missing = sorted(name for name, part in states.items() if part is not None and saved.get(name) is None)
        if missing:
            raise self._refuse(f"it holds no state for {missing}")
        try:
            for name, part in states.items():
                if part is not None:
                    part.load_state_dict(saved[name])
            set_rng_state(content["rng"], device)
        except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as error:
            raise self._refuse(f"its saved state does not fit this run ({_first_line(error)})") from error
        return content["epoch"], list(content["history"])


__all__ = ["FORMAT", "Checkpoint", "Stateful"]
