"""The dask path on a real dask.distributed cluster: process workers, pickled tasks,
and a worker that dies in the middle of a computation.

One LocalCluster (2 worker processes, 1 thread each) serves the whole module.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask[array] is not installed (the 'dask' extra)")
distributed = pytest.importorskip("distributed",
                                  reason="distributed is not installed (the 'dask' extra)")
cloudpickle = pytest.importorskip("cloudpickle", reason="cloudpickle comes with distributed")
scipy_signal = pytest.importorskip("scipy.signal")

import gpuconv  # noqa: E402
from conftest import assert_close  # noqa: E402

TIMEOUT = 120  # seconds; generous, so a busy machine slows the tests without failing them


@pytest.fixture(scope="module")
def client():
    # Test modules are not importable in the worker processes: ship this
    # module's functions by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       memory_limit="1GiB", dashboard_address=":0",
                                       silence_logs=40)
    client = distributed.Client(cluster, timeout=TIMEOUT)
    try:
        client.wait_for_workers(2, timeout=TIMEOUT)
        yield client
    finally:
        client.close(timeout=TIMEOUT)
        cluster.close(timeout=TIMEOUT)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _compute(client, lazy):
    return client.compute(lazy).result(timeout=TIMEOUT)


def test_correlate_on_process_workers(client, rng):
    x = rng.standard_normal((2, 90, 70)).astype(np.float32)
    k = rng.standard_normal((7, 6)).astype(np.float32)
    lazy = gpuconv.correlate2d(da.from_array(x, chunks=(1, 32, 25)), k, "same", "symm",
                               method="direct")
    got = _compute(client, lazy)
    np.testing.assert_array_equal(got, gpuconv.correlate2d(x, k, "same", "symm",
                                                           method="direct"))
    oracle = np.stack([scipy_signal.correlate2d(p, k, "same", "symm") for p in x])
    assert_close(got, oracle, np.float32)


def test_conv2d_on_process_workers(client, rng):
    x = rng.standard_normal((3, 4, 41, 37))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    kwargs = dict(stride=2, padding="same", dilation=2, groups=2, padding_mode="reflect")
    lazy = gpuconv.conv2d(da.from_array(x, chunks=(2, 2, 16, 16)), w, b, **kwargs)
    assert_close(_compute(client, lazy), gpuconv.conv2d(x, w, b, **kwargs), np.float64)


def _die_once(block, marker, block_info=None):
    """Kill this worker process the first time the first block is computed."""
    if block_info[0]["chunk-location"] == (0, 0) and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os._exit(1)
    return block


def test_killed_worker_is_retried_elsewhere(client, rng, tmp_path):
    marker = str(tmp_path / "killed")
    x = rng.standard_normal((64, 64))
    k = rng.standard_normal((5, 5))
    pids_before = set(client.run(os.getpid).values())
    fragile = da.from_array(x, chunks=16).map_blocks(_die_once, marker, dtype=x.dtype)
    lazy = gpuconv.convolve2d(fragile, k, "full", "wrap", method="direct")
    got = _compute(client, lazy)
    # The kill really happened, in one of the workers, and the answer is still exact.
    assert os.path.exists(marker)
    with open(marker) as f:
        assert int(f.read()) in pids_before
    np.testing.assert_array_equal(got, gpuconv.convolve2d(x, k, "full", "wrap",
                                                          method="direct"))
    # The nanny replaces the dead worker: the cluster is whole again.
    client.wait_for_workers(2, timeout=TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while len(client.scheduler_info()["workers"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(client.scheduler_info()["workers"]) == 2


def test_store_chunk_by_chunk_into_a_raw_file(client, rng, tmp_path):
    """The benchmark's target: only a path travels; each task writes its own region."""
    from gpuconv.bench._dask import RawFileTarget

    x = rng.standard_normal((70, 50)).astype(np.float32)
    k = rng.standard_normal((5, 4)).astype(np.float32)
    lazy = gpuconv.correlate2d(da.from_array(x, chunks=(20, 16)), k, "same", method="direct")
    target = RawFileTarget(tmp_path / "out.f32", lazy.shape, lazy.dtype).create()
    distributed.wait(da.store(lazy, target, lock=False, compute=False).persist())
    np.testing.assert_array_equal(np.asarray(target.open()),
                                  gpuconv.correlate2d(x, k, "same", method="direct"))


def test_cli_routes_bench_dask():
    from gpuconv.cli import build_parser

    args = build_parser().parse_args(["bench", "--dask", "--quick"])
    assert args.dask and args.quick
    assert not build_parser().parse_args(["bench"]).dask


@pytest.mark.slow
def test_outofcore_benchmark_runs_small(tmp_path):
    """The benchmark end to end at a small size: files written, numbers coherent."""
    import json

    from gpuconv.bench._dask import run

    record = run(size=512, chunk=128, ksize=5, compare_size=256, memory_limit="512MiB",
                 workdir=str(tmp_path), out=str(tmp_path / "results"), notes=("test",),
                 progress=lambda line: None)
    saved = json.loads((tmp_path / "results" / "dask_outofcore.json").read_text())
    assert saved["params"]["size"] == 512 and saved["notes"] == ["test"]
    assert "| spilled to disk | no |" in (tmp_path / "results" / "dask_outofcore.md").read_text()
    d = record["dask"]
    assert d["peak_below_limit"] and not d["spilled"]
    assert 0 < max(d["peak_worker_rss_bytes"]) < d["worker_memory_limit_bytes"]
    assert d["spot_check"]["max_abs_difference"] < 1e-4   # float32 sums of 25 products
    assert record["in_memory"]["tiles"] == 4 and record["throughput_ratio"] > 0
    # Nothing is left behind but the results.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
