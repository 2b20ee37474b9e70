#!/usr/bin/env bash
# The device check of issue 10: on a machine with a GPU, install what is missing,
# run the CUDA half of the test suite and benchmarks/gpu.py, and write every
# figure to ONE JSON file. Budget: under 8 minutes (each step has its own timeout).
#
# Usage (from anywhere; it works in the repository root):
#   benchmarks/device_check.sh [--dry] [OUTPUT.json]
#
#   OUTPUT.json  default: $OUT/device_check.json when $OUT is set, else
#                ./device_check.json
#   --dry        run end to end on a CPU-only machine: the CUDA tests are
#                collected and skip, gpu.py runs its small CPU sizes, nothing
#                is installed. Used by tests/test_device_check.py.
#
# Installing: torch is used as found (`python -c "import torch"`). If there is
# none, `pip install torch` takes PyPI's default Linux wheel, which is a CUDA
# build (`pip install torch==2.13.0` is a CPU-only build on the CPU machines of
# this project's CI, whose pip points at the CPU index). combgrad itself is
# installed editable with its test extra only when it cannot be imported, and
# then with --no-deps for torch (the GPU's torch is kept). Set PYTHON to choose
# the interpreter (default: .venv/bin/python if present, else python3).
#
# Environment: BUDGET_S (default 450) is the whole run's wall-clock budget: each
# step's timeout is cut to what is left of it (minus 20 s to write the JSON), so
# the script ends in under 8 minutes even when installs are slow. GPU_ARGS adds
# arguments to gpu.py (e.g. GPU_ARGS="--cases shortest_path").
#
# The JSON file holds: "conditions" (GPU, torch, CUDA, driver), "steps" (each
# step's command, exit status and seconds), "tests" (passed/failed/skipped of
# `pytest -k cuda` and the names of failures) and "gpu" (gpu.py's own JSON:
# conditions and rows). The script exits non-zero if a step failed, after
# writing the JSON anyway.
set -u -o pipefail

dry=0
output=""
for argument in "$@"; do
    case "$argument" in
        --dry) dry=1 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        -*) echo "device_check.sh: unknown option $argument (see --help)" >&2; exit 2 ;;
        *) output="$argument" ;;
    esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root" || exit 2
if [ -z "$output" ]; then
    output="${OUT:-.}/device_check.json"
fi
mkdir -p "$(dirname "$output")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

deadline=$(( $(date +%s) + ${BUDGET_S:-450} - 20 ))
read -r -a gpu_arguments <<< "${GPU_ARGS:-}"
steps="$work/steps.tsv"
: > "$steps"
status=0

# step NAME TIMEOUT COMMAND...: run it, log its output to $work/NAME.log, record
# "name<TAB>exit status<TAB>milliseconds<TAB>command".
step() {
    local name="$1" limit="$2"
    shift 2
    local started ended rc left
    left=$(( deadline - $(date +%s) ))
    if [ "$left" -lt "$limit" ]; then limit="$left"; fi
    started=$(date +%s%N)
    echo "== $name (timeout ${limit} s): $*" >&2
    if [ "$limit" -le 0 ]; then
        echo "device_check.sh: no time left for $name" > "$work/$name.log"
        rc=124
    else
        timeout --kill-after=10 "$limit" "$@" > "$work/$name.log" 2>&1
        rc=$?
    fi
    ended=$(date +%s%N)
    tail -n 5 "$work/$name.log" >&2
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( (ended - started) / 1000000 ))" "$*" >> "$steps"
    if [ "$rc" -ne 0 ]; then status=1; fi
    return "$rc"
}

if [ "$dry" -eq 0 ]; then
    if ! "$PYTHON" -c "import torch" 2>/dev/null; then
        step install_torch 180 "$PYTHON" -m pip install --quiet torch
    fi
    if ! "$PYTHON" -c "import combgrad, pytest, scipy, ot" 2>/dev/null; then
        # The test extra and combgrad's own dependencies, but not another torch.
        step install_combgrad 60 "$PYTHON" -m pip install --quiet --no-deps -e .
        step install_dependencies 120 "$PYTHON" -m pip install --quiet \
            "numpy>=1.24" "numba>=0.58" "networkx>=3.0" "ortools>=9.8" "tqdm>=4.60" "matplotlib>=3.6" \
            "pytest>=7" "hypothesis>=6" "scipy>=1.10" "pot>=0.9"
    fi
    if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
        echo "device_check.sh: torch sees no CUDA device; run with --dry on a CPU-only machine" >&2
        status=1
    fi
fi

# The CUDA half of the suite: every device-parametrised test has "cuda" in its id.
# In --dry mode the same selection is collected and skips (no CUDA), which checks
# that it is non-empty and that the modules import.
step tests 240 "$PYTHON" -m pytest -q -p no:cacheprovider -k cuda -rfEs \
    --junitxml="$work/junit.xml" tests

if [ -f benchmarks/gpu.py ]; then
    if [ "$dry" -eq 1 ]; then
        step gpu 150 "$PYTHON" benchmarks/gpu.py --dry --repeats 3 --json "$work/gpu.json" ${gpu_arguments[@]+"${gpu_arguments[@]}"}
    else
        step gpu 240 "$PYTHON" benchmarks/gpu.py --json "$work/gpu.json" ${gpu_arguments[@]+"${gpu_arguments[@]}"}
    fi
else
    echo "device_check.sh: benchmarks/gpu.py is absent; no solver figures" >&2
fi

"$PYTHON" - "$work" "$output" "$dry" <<'PYTHON'
import json
import pathlib
import sys
import xml.etree.ElementTree as ElementTree

work, output, dry = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3] == "1"
report = {"dry": dry, "conditions": {}, "steps": [], "tests": None, "gpu": None}
try:
    import torch

    conditions = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        conditions.update(
            device=properties.name,
            capability=list(torch.cuda.get_device_capability(0)),
            memory_gib=round(properties.total_memory / 2**30, 1),
            device_count=torch.cuda.device_count(),
        )
    report["conditions"] = conditions
except Exception as error:  # the JSON is written even when torch is broken
    report["conditions"] = {"error": repr(error)}
for line in (work / "steps.tsv").read_text().splitlines():
    name, rc, milliseconds, command = line.split("\t", 3)
    report["steps"].append({"name": name, "rc": int(rc), "seconds": int(milliseconds) / 1000, "command": command})
junit = work / "junit.xml"
if junit.exists():
    suites = ElementTree.parse(junit).getroot()
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    cases = suite.findall("testcase")
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in cases
              if case.find("failure") is not None or case.find("error") is not None]
    skipped = sum(case.find("skipped") is not None for case in cases)
    report["tests"] = {
        "selected": len(cases),
        "passed": len(cases) - len(failed) - skipped,
        "failed": len(failed),
        "skipped": skipped,
        "failures": failed,
        "seconds": round(float(suite.get("time", 0.0)), 2),
    }
gpu = work / "gpu.json"
if gpu.exists():
    report["gpu"] = json.loads(gpu.read_text())
output.write_text(json.dumps(report, indent=1))
print(f"device_check.sh: wrote {output}", file=sys.stderr)
PYTHON
exit "$status"
