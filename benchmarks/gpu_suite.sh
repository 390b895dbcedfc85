#!/usr/bin/env bash
# The one prepared GPU check (SPEC section 8; docs/training.md, "Running on a GPU"). Run from the repository
# root on a machine with one CUDA GPU, no network and its own python3 with PyTorch.
#
# The two commands of a GPU session:
#   1. here, with network:   benchmarks/gpu_wheels.sh
#        (the packages the GPU machine lacks, as wheels in .whl/, ignored by git; about 5 MiB)
#   2. the device call:      run(command="OUT=$OUT benchmarks/gpu_suite.sh", carry=[".whl"], timeout_s=600)
#        (the files below come back from $OUT: 6 files, one folder deep)
#
#   benchmarks/gpu_suite.sh             # every step below on CUDA: at most 9 minutes (the steps' limits)
#   benchmarks/gpu_suite.sh --dry-run   # the same steps on the CPU at tiny sizes (the test suite runs this)
#   STEPS="operators.py block_generation.py" benchmarks/gpu_suite.sh   # only the steps named (a second try)
#
# Steps, each under its own time limit (SIGINT first, so pytest writes its report and each benchmark keeps
# the JSON of what it measured), each writing one file of $OUT (default results/gpu):
#   tests (200 s)             the device-sensitive tests with GDDS_TEST_DEVICE=cuda: tests.log, tests.xml
#   gpu.py (190 s)            noising, training, determinism, sampler overhead, decoding: gpu.json
#   operators.py (90 s)       the paper's kernel's operators, m = 12,590 and 50,257, b = 0, with and without
#                             blocks of 64 columns: operators.json
#   block_generation.py (40 s)  block diffusion with and without the KV cache: block_generation.json
# and suite.log, the log of it all. The exit status is 0 only if every step passed.
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
status=0
STEPS=${STEPS:-tests gpu.py operators.py block_generation.py}
# step NAME LIMIT OUTPUT CMD...: CMD under timeout (SIGINT at LIMIT seconds, SIGKILL 10 s later), its output
# in OUTPUT (appended to suite.log, any other file rewritten), unless STEPS leaves NAME out; a failure (124: the
# limit) is logged and fails the suite.
step() {
    local name=$1 limit=$2 output=$3
    shift 3
    case " $STEPS " in
        *" $name "*) ;;
        *) say "$name: not in STEPS, skipped"; return 0 ;;
    esac
    say "$name (at most $limit s): $*"
    [ "$output" = "$LOG" ] || : > "$output"
    timeout -s INT -k 10 "$limit" "$@" >> "$output" 2>&1
    local rc=$?
    [ $rc -ne 0 ] && { say "$name: exit status $rc$([ $rc -eq 124 ] && echo ' (time limit)')"; status=1; }
    return 0
}

if [ -d .whl ] && ls .whl/*.whl > /dev/null 2>&1; then
    say "installing the carried wheels into /tmp/gdds-site"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gdds-site \
        .whl/*.whl >> "$LOG" 2>&1 || say "wheel install failed (see above)"
    export PYTHONPATH="/tmp/gdds-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" 2>&1 | tee -a "$LOG"

if [ "$DRY" = 1 ]; then
    say "dry run: the device tests on the CPU, then the benchmarks at tiny sizes"
    # -p absent_on_device: without the packages the GPU machine lacks (tests/absent_on_device.py)
    TESTS=(-p absent_on_device tests/engine/test_device.py -k "generator or outputs")
    GPU=(--dry-run)
    OPERATORS=(--dry-run --device cpu --unblocked)
    BLOCKS=(--quick --device cpu)
    TEST_LIMIT=120
else
    export GDDS_TEST_DEVICE=cuda
    # The device-sensitive tests, one path a line in benchmarks/gpu_tests.txt; not the slow ones, nor
    # the multi-process ones: one GPU cannot host two NCCL ranks.
    mapfile -t DEVICE_TESTS < <(grep -v '^#' benchmarks/gpu_tests.txt)
    TESTS=("${DEVICE_TESTS[@]}" -m "not slow" -k "not two_process and not fsdp")
    GPU=()
    # b = 0: the setting of the published CPU figures (docs/performance.md), so the two compare directly
    # --unblocked: whether blocks of 64 columns (the default, measured on the CPU) also pay on a GPU
    OPERATORS=(--device cuda --b 0 --unblocked)
    BLOCKS=(--device cuda)
    TEST_LIMIT=200
fi

step tests "$TEST_LIMIT" "$OUT/tests.log" "$PY" -m pytest -q -p no:cacheprovider --maxfail=25 --no-header \
    "${TESTS[@]}" --junitxml="$OUT/tests.xml"
[ -f "$OUT/tests.log" ] && tail -n 15 "$OUT/tests.log" | tee -a "$LOG"
step gpu.py 190 "$LOG" "$PY" benchmarks/gpu.py --out "$OUT" "${GPU[@]}"
step operators.py 90 "$LOG" "$PY" benchmarks/operators.py --out "$OUT" "${OPERATORS[@]}"
step block_generation.py 40 "$LOG" "$PY" benchmarks/block_generation.py --out "$OUT" "${BLOCKS[@]}"
say "done, status $status; results in $OUT"
exit $status
