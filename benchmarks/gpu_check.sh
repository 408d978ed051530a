#!/usr/bin/env bash
# The GPU check: one command for a lent GPU machine (about 6 minutes at most).
#
#   benchmarks/gpu_check.sh OUTDIR
#
# 0. compile every kernel for this device (times reported; fills CuPy's cache),
# 1. the test suite's CuPy tests (tests selected by -k "cupy or test_gpu"),
# 2. compute-sanitizer memcheck and racecheck over a short run of every kernel,
# 3. the GPU benchmarks (benchmarks/gpu_bench.py),
# then OUTDIR/summary.md and OUTDIR/summary.json.  OUTDIR receives at most 8
# files: pytest.log memcheck.log racecheck.log bench.log gpu_bench.json
# gpu_bench.md summary.md summary.json.  gpuconv is used from this checkout
# (PYTHONPATH), nothing is installed.  Exit status: 0 when every step passed.
set -uo pipefail
out="${1:?usage: benchmarks/gpu_check.sh OUTDIR}"
cd "$(dirname "$0")/.."
mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -f "$out"/{pytest,memcheck,racecheck,bench}.log
py="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
steps=()

step() {  # step NAME SECONDS LOG COMMAND...
    local name="$1" limit="$2" log="$3"; shift 3
    local t0=$SECONDS rc start
    echo "== $name (limit ${limit}s)"
    start=$(stat -c %s "$out/$log" 2>/dev/null || echo 0)
    timeout --kill-after=10 "$limit" "$@" >>"$out/$log" 2>&1
    rc=$?
    tail -n 3 "$out/$log"
    # NAME:EXIT:SECONDS:LOG:FIRST_BYTE:END_BYTE (several steps may share a log)
    steps+=("--step" "$name:$rc:$((SECONDS - t0)):$log:$start:$(stat -c %s "$out/$log")")
    echo "== $name: exit $rc after $((SECONDS - t0))s"
}

# Compiling first fills CuPy's kernel cache, so no test pays NVRTC's time
# (hypothesis deadlines) and the compile times are reported on their own.
step compile 30 pytest.log "$py" benchmarks/gpu_kernel_run.py --compile
step tests 120 pytest.log "$py" -m pytest -q -p no:cacheprovider -rs --durations=10 \
    -k "cupy or test_gpu" tests
if command -v compute-sanitizer >/dev/null; then
    step memcheck 60 memcheck.log compute-sanitizer --tool memcheck --error-exitcode 3 \
        --print-limit 20 "$py" benchmarks/gpu_kernel_run.py
    step racecheck 60 racecheck.log compute-sanitizer --tool racecheck --error-exitcode 3 \
        --print-limit 20 "$py" benchmarks/gpu_kernel_run.py --quick
else
    echo "compute-sanitizer not on PATH" | tee "$out/memcheck.log" "$out/racecheck.log"
    steps+=("--step" "memcheck:127:0:memcheck.log" "--step" "racecheck:127:0:racecheck.log")
fi
step bench 130 bench.log "$py" benchmarks/gpu_bench.py --out "$out"
"$py" benchmarks/gpu_bench.py --summarize "$out" "${steps[@]}"
