"""benchmarks/device_check.sh runs end to end in its --dry mode on a CPU-only machine."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.sh"


@pytest.mark.slow  # collects the suite (~10 s) and runs one gpu.py case
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_dry_mode_writes_one_json_with_every_step(tmp_path):
    output = tmp_path / "figures" / "device_check.json"
    # One gpu.py case keeps this test short; the script's own steps all run.
    environment = {**os.environ, "PYTHON": sys.executable, "GPU_ARGS": "--cases argmax"}
    environment.pop("OUT", None)
    finished = subprocess.run(
        ["bash", str(SCRIPT), "--dry", str(output)], cwd=tmp_path, env=environment,
        capture_output=True, text=True, timeout=480,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(output.read_text())
    assert report["dry"] is True
    steps = {step["name"]: step for step in report["steps"]}
    assert steps["tests"]["rc"] == 0 and "-k cuda" in steps["tests"]["command"]
    # The CUDA half is selected (and skips here): the device-parametrised tests exist.
    tests = report["tests"]
    assert tests["selected"] >= 20 and tests["failed"] == 0 and tests["skipped"] >= 20
    assert "torch" in report["conditions"]
    if (ROOT / "benchmarks" / "gpu.py").exists():
        assert steps["gpu"]["rc"] == 0 and report["gpu"]["rows"]


def test_unknown_option_is_refused():
    finished = subprocess.run(["bash", str(SCRIPT), "--fast"], capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2 and "unknown option --fast" in finished.stderr
