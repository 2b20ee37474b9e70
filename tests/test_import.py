"""`import combgrad` is light: the tasks and OR-Tools load on first use (issue 9, item 5)."""

import subprocess
import sys

import pytest

PROBE = """
import sys
import combgrad
heavy = sorted(name for name in sys.modules if name == "ortools" or name.startswith(("ortools.", "combgrad.tasks")))
print(",".join(heavy))
"""


def _modules_after(code: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [name for name in result.stdout.strip().split(",") if name]


def test_import_combgrad_loads_neither_tasks_nor_ortools():
    assert _modules_after(PROBE) == []


def test_tasks_and_ortools_load_when_used():
    loaded = _modules_after(
        PROBE.replace(
            "heavy =",
            "combgrad.tasks\ncombgrad.solvers.get('ilp', A=[[1.0]], b=[1.0])\nheavy =",
        )
    )
    assert "combgrad.tasks" in loaded and "ortools" in loaded


@pytest.mark.parametrize("name", ["tasks"])
def test_lazy_attribute_is_the_submodule(name):
    import combgrad

    assert getattr(combgrad, name).__name__ == f"combgrad.{name}"
    with pytest.raises(AttributeError, match="no attribute 'no_such_thing'"):
        combgrad.no_such_thing  # noqa: B018
