#!/usr/bin/env bash
# The one prepared GPU check (SPEC section 8; docs/training.md, "Running on a GPU"). Run from the repository
# root on a machine with one CUDA GPU, no network and its own python3 with PyTorch:
#
#   benchmarks/gpu_suite.sh             # the CUDA test run, then benchmarks/gpu.py: at most 9 minutes on one H200
#   benchmarks/gpu_suite.sh --dry-run   # the same steps on the CPU at tiny sizes (the test suite runs this)
#
# Packages the machine lacks travel as wheels in .whl/ (ignored by git): they are installed into
# /tmp/gdds-site first. Everything lands in $OUT (default results/gpu): tests.log, tests.xml,
# gpu.json, suite.log. The exit status is 0 only if every step passed.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-results/gpu}
PY=${PYTHON:-python3}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
mkdir -p "$OUT"
LOG="$OUT/suite.log"
: > "$LOG"
say() { echo "[gpu_suite $(date -u +%H:%M:%S)] $*" | tee -a "$LOG"; }

if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
    say "installing the carried wheels into /tmp/gdds-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gdds-site \
        .whl/*.whl >> "$LOG" 2>&1 || say "wheel install failed (see above)"
    export PYTHONPATH="/tmp/gdds-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>&1 | tee -a "$LOG"

status=0
if [ "$DRY" = 1 ]; then
    say "dry run: the device tests on the CPU, then the benchmarks at tiny sizes"
    TESTS=(tests/engine/test_device.py -k "generator or outputs")
    BENCH=(--dry-run)
    TEST_LIMIT=120
else
    export GDDS_TEST_DEVICE=cuda
    # The device-sensitive tests (the others do not touch a device, and some need data packages
    # too large to travel); the multi-process tests are left out: one GPU cannot host two NCCL ranks.
    TESTS=(tests/engine/test_device.py tests/math/test_kernels_contract.py tests/math/test_process.py
           tests/math/test_operators.py tests/inference/test_posterior_sampling.py tests/inference/test_baseline.py
           tests/objectives/test_objectives.py tests/objectives/test_parametrization.py
           tests/objectives/test_method_contract.py tests/models/test_dit.py tests/engine/test_evaluate.py
           tests/engine/test_judge.py tests/engine/test_train.py tests/models/test_block.py
           tests/engine/test_block_run.py -m "not slow" -k "not two_process and not fsdp")
    BENCH=()
    TEST_LIMIT=270
fi

say "tests (GDDS_TEST_DEVICE=${GDDS_TEST_DEVICE:-cpu}, at most ${TEST_LIMIT} s)"
timeout "$TEST_LIMIT" "$PY" -m pytest -q -p no:cacheprovider --maxfail=25 --no-header "${TESTS[@]}" \
    --junitxml="$OUT/tests.xml" > "$OUT/tests.log" 2>&1
rc=$?
tail -n 15 "$OUT/tests.log" | tee -a "$LOG"
[ $rc -ne 0 ] && { say "tests: exit status $rc"; status=1; }

say "benchmarks (benchmarks/gpu.py ${BENCH[*]:-})"
timeout 240 "$PY" benchmarks/gpu.py --out "$OUT" "${BENCH[@]}" >> "$LOG" 2>&1
rc=$?
[ $rc -ne 0 ] && { say "benchmarks: exit status $rc"; status=1; }
say "done, status $status; results in $OUT"
exit $status
