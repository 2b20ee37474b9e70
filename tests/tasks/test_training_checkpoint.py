"""Tests of combgrad/tasks/_training/checkpoint.py and randomness.py: safe, exact resumes."""

from __future__ import annotations

import io
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from combgrad.tasks._training import Checkpoint, FORMAT, rng_state, set_rng_state

CPU = torch.device("cpu")


def _parts() -> dict:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 4], gamma=0.1)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "layer": None}


def test_a_checkpoint_round_trips_through_a_weights_only_load(tmp_path: Path) -> None:
    parts = _parts()
    checkpoint = Checkpoint(tmp_path / "c.pt", owner="demo", identity={"lr": 0.1, "options": {"k": (1, 2)}})
    checkpoint.save(epoch=2, history=[{"loss": 1.0}, {"loss": float("nan")}], states=parts, device=CPU,
                    extra={"mean": torch.ones(3)})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.load(tmp_path / "c.pt", weights_only=True)  # raises if anything needs unpickling
    content = checkpoint.read()
    assert content is not None and content["format"] == FORMAT and content["epoch"] == 2
    fresh = _parts()
    epochs, history = checkpoint.restore(content, fresh, CPU)
    assert epochs == 2 and history[0] == {"loss": 1.0} and np.isnan(history[1]["loss"])
    for name, tensor in parts["model"].state_dict().items():
        assert torch.equal(tensor, fresh["model"].state_dict()[name]), name
    assert fresh["scheduler"].state_dict() == parts["scheduler"].state_dict()
    # The random state continues exactly where the checkpoint left it.
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def _leaves(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def test_random_states_are_tensors_lists_and_numbers_only() -> None:
    """Guards issue 8 item 2: numpy's state was an ndarray tuple, which weights_only refuses."""
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's state
    random.gauss(0.0, 1.0)  # and in Python's
    state = rng_state(CPU)
    assert {type(leaf) for leaf in _leaves(state)} <= {torch.Tensor, int, float, str, type(None)}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    expected = (np.random.standard_normal(), random.gauss(0.0, 1.0), torch.rand(1))
    set_rng_state(loaded, CPU)
    assert (np.random.standard_normal(), random.gauss(0.0, 1.0), torch.rand(1)) == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_random_states_restore_from_cuda_tensors() -> None:
    """Guards issue 8 item 2: states loaded onto CUDA made torch.set_rng_state raise."""
    device = torch.device("cuda")
    state = rng_state(device)
    on_cuda = {**state, "torch": state["torch"].to(device), "cuda": state["cuda"].to(device)}
    expected = (torch.rand(2), torch.rand(2, device=device))
    set_rng_state(on_cuda, device)
    again = (torch.rand(2), torch.rand(2, device=device))
    assert torch.equal(expected[0], again[0]) and torch.equal(expected[1], again[1])


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def _unusable(tmp_path: Path) -> dict[str, bytes]:
    planted = io.BytesIO()
    torch.save({"format": FORMAT, "payload": _Payload(tmp_path / "pwned")}, planted)
    old_layout = io.BytesIO()
    torch.save({"config": {}, "epoch": 0, "rng": {"numpy": np.random.get_state()}}, old_layout)
    wrong_types = io.BytesIO()
    torch.save({"format": FORMAT, "config": {}, "epoch": "1", "history": [], "states": {}, "rng": {},
                "extra": {}}, wrong_types)
    return {
        "planted pickle": planted.getvalue(),
        "raw pickle": pickle.dumps(_Payload(tmp_path / "pwned")),
        "old layout": old_layout.getvalue(),
        "empty": b"",
        "truncated": planted.getvalue()[:100],
        "text": b"hello",
        "wrong types": wrong_types.getvalue(),
    }


@pytest.mark.parametrize("kind", ["planted pickle", "raw pickle", "old layout", "empty", "truncated", "text",
                                  "wrong types"])
def test_unusable_files_raise_one_line_naming_the_file_and_run_no_code(tmp_path: Path, kind: str) -> None:
    """Guards issue 8 item 2: checkpoints were read with weights_only=False (a planted file ran code)."""
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(_unusable(tmp_path)[kind])
    with pytest.raises(ValueError, match=rf"demo: cannot resume from {path}: ") as caught:
        Checkpoint(path, owner="demo", identity={}).read()
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "pwned").exists()


def test_a_different_configuration_or_missing_state_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    Checkpoint(path, owner="demo", identity={"lr": 0.1}).save(epoch=0, history=[], states={"layer": None},
                                                              device=CPU)
    with pytest.raises(ValueError, match=r"configuration differs in \['lr'\] \(checkpoint \[0.1\], now \[0.2\]\)"):
        Checkpoint(path, owner="demo", identity={"lr": 0.2}).read()
    content = Checkpoint(path, owner="demo", identity={"lr": 0.1}).read()
    assert content is not None
    with pytest.raises(ValueError, match=r"it holds no state for \['model'\]"):
        Checkpoint(path, owner="demo", identity={}).restore(content, {"model": torch.nn.Linear(1, 1)}, CPU)
    assert Checkpoint(tmp_path / "absent.pt", owner="demo", identity={}).read() is None


def test_a_state_that_does_not_fit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    checkpoint = Checkpoint(path, owner="demo", identity={})
    checkpoint.save(epoch=0, history=[], states={"model": torch.nn.Linear(2, 2)}, device=CPU)
    content = checkpoint.read()
    assert content is not None
    with pytest.raises(ValueError, match="its saved state does not fit this run"):
        checkpoint.restore(content, {"model": torch.nn.Linear(3, 3)}, CPU)
