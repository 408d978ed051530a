"""Out-of-core benchmark: a 16384² float32 image (1 GiB) correlated on a dask cluster.

The image is generated chunk by chunk on the workers (seeded), correlated with a
15x15 kernel through :func:`gpuconv.correlate2d` on its dask array, and stored
chunk by chunk into a raw file on disk, on a ``LocalCluster`` of 2 worker
processes each limited to 1.5 GiB.  Recorded: wall time, peak resident memory
of each worker (sampled), whether anything spilled to disk, a spot check of the
stored result against the in-memory call, and throughput per pixel next to the
in-memory call on an image that fits (4096²).

Run it with ``gpuconv bench --dask`` or ``python benchmarks/dask_outofcore.py``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["RawFileTarget", "add_arguments", "build_parser", "main", "run", "run_from_cli",
           "to_markdown"]


class RawFileTarget:
    """A ``dask.array.store`` target writing into a raw C-order file, region by region.

    Only the path travels to the workers (a ``numpy.memmap`` would be pickled
    as a full in-memory copy); each write maps the file, writes its region and
    unmaps it.  Regions of different tasks do not overlap, so no lock is needed.
    """

    def __init__(self, path: str | os.PathLike[str], shape: tuple[int, ...], dtype: Any):
        self.path = str(path)
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)

    def create(self) -> RawFileTarget:
        with open(self.path, "wb") as f:
            f.truncate(int(np.prod(self.shape)) * self.dtype.itemsize)
        return self

    def open(self, mode: str = "r") -> np.memmap:
        return np.memmap(self.path, dtype=self.dtype, mode=mode, shape=self.shape)

    def __setitem__(self, key: Any, value: Any) -> None:
        mm = self.open("r+")
        mm[key] = value
        mm.flush()
        del mm


class _MemorySampler:
    """Peak resident memory of a set of processes, sampled on a background thread."""

    def __init__(self, pids: list[int], interval: float = 0.05):
        import psutil

        self._procs = [psutil.Process(pid) for pid in pids]
        self.peak = {pid: 0 for pid in pids}
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for proc in self._procs:
                try:
                    rss = proc.memory_info().rss
                except Exception:  # a restarted or finished worker: nothing to sample
                    continue
                self.peak[proc.pid] = max(self.peak[proc.pid], rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> _MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def _worker_state(dask_worker: Any) -> dict[str, Any]:
    """What a worker knows about its memory: run on each worker with ``client.run``."""
    import psutil

    data = dask_worker.data
    spilled = getattr(data, "spilled_total", None)
    digests = {str(k): v for k, v in getattr(dask_worker, "digests_total", {}).items()
               if "disk" in str(k) or "spill" in str(k)}
    return {
        "pid": os.getpid(),
        "rss": psutil.Process().memory_info().rss,
        "memory_limit": dask_worker.memory_manager.memory_limit,
        "spilled_now_bytes": getattr(spilled, "disk", 0) if spilled is not None else 0,
        "keys_on_disk": len(getattr(data, "slow", {}) or {}),
        "spill_digests": digests,
    }


def _in_memory_rate(size: int, total: int, ksize: int, method: str, seed: int,
                    workdir: Path) -> dict[str, Any]:
    """The in-memory pipeline on tiles that fit, for as many pixels as the dask run.

    Each ``size``² tile is generated, correlated and written to a raw file, one
    after the other, so the in-memory number covers the same work as the dask
    run (and the same stretch of machine load), not one lucky burst.
    """
    import gpuconv

    k = np.random.default_rng(seed + 1).standard_normal((ksize, ksize), dtype=np.float32)
    tiles = max(1, (total // size) ** 2)
    path = workdir / "in-memory.f32"
    correlate = 0.0
    start = time.perf_counter()
    for tile in range(tiles):
        x = np.random.default_rng([seed, tile]).standard_normal((size, size), dtype=np.float32)
        t0 = time.perf_counter()
        y = gpuconv.correlate2d(x, k, "same", method=method)
        correlate += time.perf_counter() - t0
        with open(path, "wb") as f:
            y.tofile(f)
    wall = time.perf_counter() - start
    pixels = tiles * size**2
    return {"size": size, "tiles": tiles, "wall_seconds": wall, "correlate_seconds": correlate,
            "ns_per_pixel": wall / pixels * 1e9,
            "correlate_ns_per_pixel": correlate / pixels * 1e9,
            "includes": "generating each tile, correlating it, writing it to disk"}


def _store(lazy: Any, target: RawFileTarget, pids: list[int]) -> tuple[float, dict[int, int]]:
    import dask.array as da

    with _MemorySampler(pids) as sampler:
        start = time.perf_counter()
        da.store(lazy, target, lock=False)
        wall = time.perf_counter() - start
    return wall, sampler.peak


def _spot_check(lazy_input: Any, target: RawFileTarget, kernel: np.ndarray, chunk: int,
                method: str) -> dict[str, Any]:
    """Recompute three tiles in memory from the same seeded input; compare bitwise."""
    import gpuconv

    n = target.shape[0]
    half = kernel.shape[0] // 2
    stored = target.open("r")
    worst = 0.0
    tiles = [(0, 0), (chunk - 40, chunk - 40), (n - 120, n - 120)]  # corner, chunk seam, corner
    for r, c in tiles:
        r0, c0 = max(r - half, 0), max(c - half, 0)
        r1, c1 = min(r + 120 + half, n), min(c + 120 + half, n)
        region = np.asarray(lazy_input[r0:r1, c0:c1].compute())
        # 'same' on the region is exact wherever the window stays inside the
        # region or crosses the image's own border.
        ref = gpuconv.correlate2d(region, kernel, "same", method=method)
        got = np.asarray(stored[r:r + 120, c:c + 120])
        want = ref[r - r0:r - r0 + 120, c - c0:c - c0 + 120]
        worst = max(worst, float(np.max(np.abs(got - want))))
    del stored
    return {"tiles": tiles, "tile_size": 120, "max_abs_difference": worst}


def run(*, size: int = 16384, chunk: int = 2048, ksize: int = 15, n_workers: int = 2,
        memory_limit: str = "1.5GiB", compare_size: int = 4096, method: str = "auto",
        seed: int = 0, workdir: str | None = None, out: str | None = None,
        notes: tuple[str, ...] = (), progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the out-of-core benchmark and return (and optionally write) its record."""
    import dask
    import dask.array as da
    import distributed

    import gpuconv

    kernel = np.random.default_rng(seed + 1).standard_normal((ksize, ksize), dtype=np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="gpuconv-dask-", dir=workdir))
    load = {"start": list(os.getloadavg())}
    try:
        progress(f"in-memory: {size}² worth of {compare_size}² tiles (generate, correlate "
                 f"{ksize}x{ksize} with method={method!r}, write)")
        baseline = _in_memory_rate(compare_size, size, ksize, method, seed, tmp)
        progress(f"  {baseline['wall_seconds']:.1f} s, {baseline['ns_per_pixel']:.2f} ns/pixel "
                 f"({baseline['correlate_ns_per_pixel']:.2f} correlating)")
        load["after_in_memory"] = list(os.getloadavg())
        cluster = distributed.LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True,
            memory_limit=memory_limit, dashboard_address=":0", silence_logs=40,
            local_directory=str(tmp / "workers"))
        client = distributed.Client(cluster)
        try:
            client.wait_for_workers(n_workers, timeout=120)
            pids = list(client.run(os.getpid).values())
            image = da.random.default_rng(seed).standard_normal(
                (size, size), dtype=np.float32, chunks=chunk)
            target = RawFileTarget(tmp / "result.f32", (size, size), np.float32).create()
            # The same pipeline without the correlation: what generating and
            # storing cost on their own.
            progress("dask: generate and store only")
            bare_wall, bare_peak = _store(image, target, pids)
            progress(f"  {bare_wall:.1f} s")
            lazy = gpuconv.correlate2d(image, kernel, "same", method=method)
            progress(f"dask: {size}² float32 ({image.nbytes / 2**30:.2f} GiB) in "
                     f"{len(image.chunks[0])}x{len(image.chunks[1])} chunks of {chunk}², "
                     f"{n_workers} workers x {memory_limit}, {len(lazy.__dask_graph__())} tasks "
                     "before store")
            wall, peak = _store(lazy, target, pids)
            peak = {pid: max(rss, bare_peak.get(pid, 0)) for pid, rss in peak.items()}
            load["after_dask"] = list(os.getloadavg())
            states = client.run(_worker_state)
            progress(f"  stored in {wall:.1f} s; checking three tiles")
            check = _spot_check(image, target, kernel, chunk, method)
        finally:
            client.close()
            cluster.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    limit = max(s["memory_limit"] for s in states.values())
    peaks = sorted(peak.values())
    spilled = any(s["spilled_now_bytes"] or s["keys_on_disk"] or
                  any(v for v in s["spill_digests"].values()) for s in states.values())
    ns_per_pixel = wall / size**2 * 1e9
    record = {
        "benchmark": "dask-outofcore",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_average": load},
        "versions": {"gpuconv": gpuconv.__version__, "numpy": np.__version__,
                     "dask": dask.__version__, "distributed": distributed.__version__},
        "params": {"size": size, "chunk": chunk, "ksize": ksize, "mode": "same",
                   "boundary": "fill", "dtype": "float32", "method": method,
                   "n_workers": n_workers, "threads_per_worker": 1,
                   "memory_limit": memory_limit, "seed": seed},
        "dask": {"wall_seconds": wall, "ns_per_pixel": ns_per_pixel,
                 "peak_worker_rss_bytes": peaks, "worker_memory_limit_bytes": limit,
                 "peak_below_limit": max(peaks) < limit, "spilled": spilled,
                 "worker_states": list(states.values()), "spot_check": check,
                 "generate_and_store_only_seconds": bare_wall,
                 "includes": "generating the image on the workers, correlating, writing "
                             "the result to disk"},
        "in_memory": baseline,
        "throughput_ratio": baseline["ns_per_pixel"] / ns_per_pixel,
        "target_ratio": 0.75,
        "notes": list(notes),
    }
    if out:
        record["files"] = _write(record, Path(out))
    return record


def to_markdown(record: dict[str, Any]) -> str:
    p, d, m = record["params"], record["dask"], record["in_memory"]
    gib = 2**30
    lines = [
        f"# Out-of-core correlation on dask ({record['date']})",
        "",
        f"- Machine: {record['machine']['platform']}, {record['machine']['cpus']} CPUs, "
        f"Python {record['machine']['python']}; 1-minute load average "
        + ", ".join(f"{k.replace('_', ' ')} {v[0]:.1f}"
                    for k, v in record["machine"]["load_average"].items()),
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in record["versions"].items()),
        f"- Image {p['size']}² {p['dtype']} ({p['size'] ** 2 * 4 / gib:.2f} GiB) generated on the "
        f"workers in chunks of {p['chunk']}², kernel {p['ksize']}x{p['ksize']}, mode "
        f"'{p['mode']}', method '{p['method']}'; {p['n_workers']} worker processes x 1 thread, "
        f"{p['memory_limit']} each; result stored chunk by chunk to a raw file",
        "",
        "| | value |",
        "|---|---|",
        f"| dask wall time (generate + correlate + store) | {d['wall_seconds']:.1f} s, "
        f"{d['ns_per_pixel']:.2f} ns/pixel |",
        f"| dask generate + store only (no correlation) | "
        f"{d['generate_and_store_only_seconds']:.1f} s |",
        f"| in-memory, {m['tiles']} tiles of {m['size']}² one after the other (generate + "
        f"correlate + write) | {m['wall_seconds']:.1f} s, {m['ns_per_pixel']:.2f} ns/pixel "
        f"(correlating: {m['correlate_ns_per_pixel']:.2f}) |",
        f"| throughput ratio dask / in-memory, per pixel (target >= {record['target_ratio']}) | "
        f"{record['throughput_ratio']:.2f} |",
        "| peak worker RSS | " + ", ".join(f"{v / gib:.2f} GiB" for v in d["peak_worker_rss_bytes"])
        + f" (limit {d['worker_memory_limit_bytes'] / gib:.2f} GiB each) |",
        f"| spilled to disk | {'yes' if d['spilled'] else 'no'} |",
        f"| spot check vs in-memory (3 tiles of {d['spot_check']['tile_size']}²) | max |diff| = "
        f"{d['spot_check']['max_abs_difference']:.3g} |",
    ]
    if record["notes"]:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in record["notes"]]
    return "\n".join(lines) + "\n"


def _write(record: dict[str, Any], out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / "dask_outofcore"
    files = [str(stem.with_suffix(".json")), str(stem.with_suffix(".md"))]
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    stem.with_suffix(".md").write_text(to_markdown(record))
    return files


# The options only this benchmark reads (their defaults are None: "not given").
OWN_OPTIONS = ("size", "chunk", "ksize", "compare_size", "memory_limit", "method", "workdir")


def add_arguments(parser: Any) -> None:
    """This benchmark's own options, on a parser or an argument group of ``gpuconv bench``.

    ``--quick``, ``--out`` and ``--note`` are shared with the grid benchmark
    and declared by :func:`gpuconv.bench._cli.add_shared_arguments`.
    """
    from .._argtypes import existing_folder, memory_size, positive_int
    from .._validation import METHODS

    parser.add_argument("--size", type=positive_int, metavar="N",
                        help="image side (default 16384; 2048 with --quick)")
    parser.add_argument("--chunk", type=positive_int, metavar="N",
                        help="chunk side (default 2048; 512 with --quick)")
    parser.add_argument("--ksize", type=positive_int, metavar="N",
                        help="kernel side (default 15)")
    parser.add_argument("--compare-size", type=positive_int, metavar="N",
                        help="side of the in-memory comparison (default 4096; 1024 with --quick)")
    parser.add_argument("--memory-limit", type=memory_size, metavar="SIZE",
                        help="per worker (default 1.5GiB)")
    parser.add_argument("--method", choices=METHODS, metavar="NAME",
                        help=f"gpuconv method: {', '.join(METHODS)} (default auto)")
    parser.add_argument("--workdir", type=existing_folder, metavar="DIR",
                        help="folder for the result file and the workers' spill (default: a "
                             "temporary folder)")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python benchmarks/dask_outofcore.py``."""
    from ._cli import add_shared_arguments

    parser = argparse.ArgumentParser(prog="dask_outofcore", description=__doc__.splitlines()[0])
    add_shared_arguments(parser)
    add_arguments(parser)
    parser.set_defaults(func=run_from_cli)
    return parser


def run_from_cli(args: argparse.Namespace) -> int:
    """Run from parsed options (``gpuconv bench --dask`` or the script); the exit status."""
    quick = args.quick
    size = args.size or (2048 if quick else 16384)
    chunk = args.chunk or (512 if quick else 2048)
    ksize = args.ksize or 15
    if chunk > size or ksize > size:
        from .._argtypes import UsageError

        raise UsageError(f"--chunk ({chunk}) and --ksize ({ksize}) must not exceed --size "
                         f"({size})")
    # A smoke test never overwrites the recorded result.
    out = None
    if not quick:
        from ._cli import results_folder

        out = results_folder(args)
    try:
        import dask.array  # noqa: F401
        import distributed  # noqa: F401
        import psutil  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the out-of-core benchmark needs dask, distributed and psutil "
                          f"(pip install 'gpuconv[dask]'): {exc}") from None
    record = run(
        size=size, chunk=chunk, ksize=ksize,
        compare_size=args.compare_size or (1024 if quick else 4096),
        memory_limit=args.memory_limit or "1.5GiB",
        method=args.method or "auto",
        workdir=args.workdir, out=out,
        notes=tuple(args.note or ()),
        progress=lambda line: print(line, flush=True))
    print(to_markdown(record))
    for path in record.get("files", []):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python benchmarks/dask_outofcore.py``."""
    from ..cli import run_parser

    return run_parser(build_parser(), argv)
