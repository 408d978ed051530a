#!/usr/bin/env bash
# The GPU check: one command for a lent GPU machine.
#
#   benchmarks/gpu_check.sh OUTDIR          # PYTHON=... picks the interpreter (default python3)
#
# Worst case: 349 s, every step at its limit: the limit_* values below (preflight 25,
# compile 35, tests 100, calibrate 35, bench 75, sanitizers 60 (the four tools run at
# once), summary 5: 335 s) plus 2 s of kill grace for each of those 7 limits.
# tests/test_gpu_check.py parses this file and keeps that sum <= 360 s.
#
# Steps (each a status in OUTDIR/summary.md: passed, failed, timed out, skipped, not run):
#   preflight  python, numpy, scipy, cupy + a device, pytest, hypothesis, torch (CUDA,
#              cuDNN), driver, CUDA, nvcc, where compute-sanitizer is; without cupy or a
#              device the check stops here, exit 1, and the summary names what is missing
#   compile    every gpuconv kernel compiled for the device (fills CuPy's kernel cache)
#   tests      pytest -m "gpu and not slow": the CuPy cases of the suite (6 workers with
#              pytest-xdist, 60 s per test with pytest-timeout, where installed)
#   calibrate  python -m gpuconv calibrate --backend cupy -> OUTDIR/costmodel-cupy.json
#              (the benchmark's method="auto" uses these constants)
#   bench      benchmarks/gpu_bench.py: ceilings, then the GPU grids, stopping new cases
#              after 50 s -> OUTDIR/gpu_bench.json, gpu_bench.md
#   memcheck, racecheck, synccheck, initcheck
#              compute-sanitizer over gpu_kernel_run.py --quick, all four at once;
#              "skipped" where no compute-sanitizer is found (PATH, $CUDA_HOME/bin,
#              $CUDA_HOME/compute-sanitizer, /usr/local/cuda*/..., the nvidia wheels,
#              $COMPUTE_SANITIZER, or .compute-sanitizer/ carried with the checkout)
#   summary    OUTDIR/summary.md and summary.json
#
# OUTDIR receives at most 7 files: summary.md summary.json check.log (every step's
# output) gpu_bench.json gpu_bench.md costmodel-cupy.json.  gpuconv runs from this
# checkout (PYTHONPATH); nothing is installed, nothing written outside OUTDIR and a
# temporary folder.  Exit status: 0 when every step passed or was skipped for a missing
# optional tool, 1 otherwise, 2 on misuse.
set -uo pipefail

limit_preflight=25
limit_compile=35
limit_tests=100
limit_calibrate=35
limit_bench=75
limit_sanitizers=60
limit_summary=5
kill_grace=2
bench_budget=50

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: benchmarks/gpu_check.sh OUTDIR" >&2
    exit 2
fi
repo="$(cd "$(dirname "$0")/.." && pwd)"
if ! mkdir -p "$1" 2>/dev/null; then
    echo "gpu_check: cannot create the output folder $1" >&2
    exit 2
fi
out="$(cd "$1" && pwd)"
cd "$repo" || exit 2
rm -f "$out"/{summary.md,summary.json,check.log,gpu_bench.json,gpu_bench.md,costmodel-cupy.json}
work="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")" || exit 2
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/logs"
: > "$work/steps.tsv"
py="${PYTHON:-python3}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Compiled kernels and cost-model constants go to the temporary folder (the constants
# are copied to OUTDIR); the tests get their own empty constants folder.
export CUPY_CACHE_DIR="$work/cupy-kernel-cache" GPUCONV_CACHE_DIR="$work/gpuconv-cache"

record() {  # record NAME STATUS EXIT SECONDS LIMIT REASON: one line of steps.tsv
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$6" >> "$work/steps.tsv"
}

run_step() {  # run_step NAME LIMIT COMMAND...: output to logs/NAME.log, status to steps.tsv
    local name="$1" limit="$2" t0=$SECONDS rc status
    shift 2
    timeout --kill-after="$kill_grace" "$limit" "$@" > "$work/logs/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=passed ;;
        124|137) status="timed out" ;;
        *) status=failed ;;
    esac
    record "$name" "$status" "$rc" "$((SECONDS - t0))" "$limit" ""
    return $rc
}

show() {  # show NAME: append a finished step's log to check.log and echo its end
    local name="$1" line
    line="$(awk -F '\t' -v n="$name" '$1 == n {
                s = ($3 == "") ? $2 ": " $6 : $2 " (exit " $3 ", " $4 " s of " $5 " s)"}
                END {print s}' "$work/steps.tsv")"
    { echo "===== $name: $line"; cat "$work/logs/$name.log" 2>/dev/null; echo; } >> "$out/check.log"
    tail -n 3 "$work/logs/$name.log" 2>/dev/null
    echo "== $name: $line"
}

declare -A limit_of=([compile]=$limit_compile [tests]=$limit_tests
                     [calibrate]=$limit_calibrate [bench]=$limit_bench
                     [memcheck]=$limit_sanitizers [racecheck]=$limit_sanitizers
                     [synccheck]=$limit_sanitizers [initcheck]=$limit_sanitizers)

not_run() {  # not_run REASON STEP...
    local reason="$1" name
    shift
    for name in "$@"; do
        record "$name" "not run" "" 0 "${limit_of[$name]}" "$reason"
    done
}

if ! command -v "$py" >/dev/null 2>&1; then
    printf '# gpuconv GPU check\n\nResult: **failed**: no Python interpreter %s here.\n' \
        "$py" > "$out/summary.md"
    printf '{"result": "failed", "missing": ["python interpreter %s"]}\n' "$py" \
        > "$out/summary.json"
    cat "$out/summary.md"
    exit 1
fi

echo "== preflight (limit ${limit_preflight}s)"
run_step preflight "$limit_preflight" "$py" benchmarks/gpu_check.py preflight "$work"
show preflight
READY=0 TESTS_READY=0 MISSING="the preflight did not finish (see check.log)" TESTS_MISSING=""
SANITIZER="" PYTEST_EXTRA=""
# shellcheck source=/dev/null
[ -f "$work/preflight.env" ] && . "$work/preflight.env"  # written early: a timed-out
# preflight that found cupy and a device still lets the check go on (and fails it)

if [ "$READY" != 1 ]; then
    not_run "stopped at the preflight (see 'Missing here')" \
        compile tests calibrate bench memcheck racecheck synccheck initcheck
else
    # Compiling first fills CuPy's kernel cache, so no later step pays NVRTC's time.
    echo "== compile (limit ${limit_compile}s)"
    run_step compile "$limit_compile" "$py" benchmarks/gpu_kernel_run.py --compile
    show compile

    if [ "$TESTS_READY" = 1 ]; then
        echo "== tests (limit ${limit_tests}s)"
        # shellcheck disable=SC2086  # PYTEST_EXTRA is a list of options
        GPUCONV_CACHE_DIR="$work/tests-cache" run_step tests "$limit_tests" \
            "$py" -m pytest -q -p no:cacheprovider -m "gpu and not slow" -rfE \
            --durations=10 $PYTEST_EXTRA tests
    else
        record tests failed "" 0 "$limit_tests" "$TESTS_MISSING"
    fi
    show tests

    echo "== calibrate (limit ${limit_calibrate}s)"
    run_step calibrate "$limit_calibrate" "$py" -m gpuconv calibrate --backend cupy
    # calibrate prints "constants for KEY written to PATH"
    stored="$(sed -n 's/^constants for .* written to //p' "$work/logs/calibrate.log" | tail -n 1)"
    cp "${stored:-$GPUCONV_CACHE_DIR/costmodel.json}" "$out/costmodel-cupy.json" 2>/dev/null
    show calibrate

    echo "== bench (limit ${limit_bench}s)"
    run_step bench "$limit_bench" "$py" benchmarks/gpu_bench.py --out "$out" \
        --budget "$bench_budget"
    show bench

    tools=(memcheck racecheck synccheck initcheck)
    if [ -n "$SANITIZER" ]; then
        echo "== ${tools[*]} at once (limit ${limit_sanitizers}s each; $SANITIZER)"
        for tool in "${tools[@]}"; do
            run_step "$tool" "$limit_sanitizers" "$SANITIZER" --tool "$tool" \
                --error-exitcode 3 --print-limit 20 \
                "$py" benchmarks/gpu_kernel_run.py --quick &
        done
        wait
    else
        for tool in "${tools[@]}"; do
            record "$tool" skipped "" 0 "$limit_sanitizers" "compute-sanitizer not found (searched PATH, \$CUDA_HOME, /usr/local/cuda*/{bin,compute-sanitizer}, /opt/nvidia, the nvidia wheels)"
        done
    fi
    for tool in "${tools[@]}"; do
        show "$tool"
    done
fi

echo "== summary (limit ${limit_summary}s)"
timeout --kill-after="$kill_grace" "$limit_summary" \
    "$py" benchmarks/gpu_check.py summarize "$out" "$work"
rc=$?
if [ ! -s "$out/summary.md" ]; then
    printf '# gpuconv GPU check\n\nResult: **failed**: the summary step ended with exit %s; see check.log.\n' \
        "$rc" > "$out/summary.md"
fi
[ $rc -eq 0 ] || rc=1
exit $rc
