"""Runs examples/sinkhorn_moons.py with small settings and checks its outputs."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sinkhorn_moons.py"


def load_example():
    spec = importlib.util.spec_from_file_location("sinkhorn_moons_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # matplotlib import and drawing: about 5 s on a loaded 2-core machine
def test_moons_example_writes_plan_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "moons.png"
    distance = load_example().main(["--out", str(out), "--samples", "20", "--noise", "0.05"])
    assert math.isfinite(distance) and distance > 0
    assert out.exists() and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"Sinkhorn distance: {distance:.3f}" in capsys.readouterr().out


def test_moons_example_default_distance(tmp_path):
    # The converged distance of the seeds' 30-point moons at eps=0.1 (the exact OT cost is 1.746).
    distance = load_example().main(["--out", str(tmp_path / "moons.png")])
    assert distance == pytest.approx(1.7968, abs=1e-3)


def test_two_moons_shape():
    upper, lower = load_example().two_moons(31)
    assert upper.shape == (15, 2) and lower.shape == (16, 2)
    assert abs(upper[:, 1].min()) < 1e-12 and lower[:, 1].max() == pytest.approx(0.5)
