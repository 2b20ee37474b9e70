"""Runs examples/estimators.py with tiny settings."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "estimators.py"


def load_example():
    spec = importlib.util.spec_from_file_location("estimators_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # 8 trainings; 4 to 13 s here, depending on load
def test_example_prints_a_row_per_estimator(capsys):
    rows = load_example().main(["--size", "5", "--steps", "25", "--seeds", "1"])
    out = capsys.readouterr().out
    names = {row["estimator"] for row in rows}
    assert len(rows) == len(names) == 8
    for name in names:
        assert name in out
    assert "5x5 gold-path toy" in out and "solves/step" in out
    # The noiseless estimators solve this small instance within 25 steps (measured: 12).
    by_name = {row["estimator"]: row for row in rows}
    assert by_name["blackbox (lam=5)"]["solved"] and by_name["imle (no noise)"]["solved"]
    assert by_name["ste"]["instances_per_step"] == 1.0
    assert by_name["blackbox (lam=5)"]["instances_per_step"] == 2.0
