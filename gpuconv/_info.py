"""What a bug report needs: :func:`show_config` and the ``gpuconv info`` command.

Versions are read from the installed packages' metadata, so listing CuPy,
torch or dask imports none of them.  Probing (the default) goes further:
it instantiates every registered backend to say whether it can run here and
why not (which imports CuPy when it is installed), lists the CUDA devices a
usable CuPy backend sees, and asks threadpoolctl (when installed) which BLAS
libraries are loaded and with how many threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Any

__all__ = ["add_parser", "show_config"]

# Import names of the libraries gpuconv can use, core first; each is looked
# up in the installed distributions' metadata, never imported.
_CORE = ("numpy", "scipy")
_OPTIONAL = ("threadpoolctl", "cupy", "dask", "distributed", "torch", "matplotlib", "tqdm")
# Environment variables that change what gpuconv (or the libraries under it) does.
_ENVIRONMENT = ("GPUCONV_", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "CUDA_VISIBLE_DEVICES", "CUPY_", "XDG_CACHE_HOME")
_MODES = ("stdout", "dicts")


def _versions(names: tuple[str, ...]) -> dict[str, str | None]:
    from importlib import metadata

    distributions = metadata.packages_distributions()
    out: dict[str, str | None] = {}
    for name in names:
        version = None
        # CuPy's distribution is named after the CUDA it was built for (cupy-cuda12x).
        for dist in distributions.get(name, [name]):
            try:
                version = metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
            if dist != name:
                version = f"{version} ({dist})"
            break
        out[name] = version
    return out


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _backends() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    from .backend import available_backends, backend_for

    statuses, details = {}, {}
    for name, status in available_backends().items():
        statuses[name] = {"usable": status.usable, "reason": status.reason}
        if status.usable:
            # describe() is optional: a backend registered from elsewhere may lack it.
            describe = getattr(backend_for(name), "describe", dict)
            try:
                facts = describe()
            except Exception as exc:  # a report must not fail over one backend
                facts = {"error": f"{type(exc).__name__}: {exc}"}
            if facts:
                details[name] = facts
    return statuses, details


def _numpy_threads() -> dict[str, Any]:
    from .backends.numpy import num_threads

    out: dict[str, Any] = {"GPUCONV_NUM_THREADS": os.environ.get("GPUCONV_NUM_THREADS"),
                           "usable_cores": _usable_cores()}
    try:
        out["threads"] = num_threads()
    except ValueError as exc:
        out["threads"] = None
        out["error"] = str(exc)
    return out


def _blas() -> list[dict[str, Any]] | str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl is not installed (pip install threadpoolctl)"
    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer",
            "architecture", "filepath")
    return [{k: pool.get(k) for k in keep if k in pool} for pool in threadpool_info()]


def _cost_model_cache() -> dict[str, Any]:
    from . import _costmodel

    path = _costmodel.cache_file()
    out: dict[str, Any] = {"path": str(path), "exists": path.is_file(), "device_keys": []}
    if out["exists"]:
        try:
            data = json.loads(path.read_text())
            out["version"] = data.get("version")
            out["device_keys"] = sorted(data.get("models", {}))
            if data.get("version") != _costmodel.CACHE_VERSION:
                out["note"] = (f"written by another gpuconv (cache version {data.get('version')}, "
                               f"this one reads {_costmodel.CACHE_VERSION}); ignored")
        except (OSError, ValueError, AttributeError) as exc:
            out["note"] = f"unreadable, ignored: {exc}"
    return out


def _gather(probe: bool) -> dict[str, Any]:
    from . import __version__, get_scratch_limit

    info: dict[str, Any] = {
        "gpuconv": {"version": __version__,
                    "location": os.path.dirname(os.path.abspath(__file__))},
        "python": {"version": platform.python_version(),
                   "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "platform": {"system": platform.platform(), "machine": platform.machine(),
                     "cpus": os.cpu_count(), "usable_cores": _usable_cores()},
        "dependencies": _versions(_CORE),
        "optional_dependencies": _versions(_OPTIONAL),
    }
    if probe:
        info["backends"], info["backend_details"] = _backends()
    else:
        info["backends"] = None
        info["backend_details"] = {}
    info["numpy_backend_threads"] = _numpy_threads()
    info["blas"] = _blas() if probe else None
    info["scratch_limit_bytes"] = get_scratch_limit()
    info["cost_model_cache"] = _cost_model_cache()
    info["environment"] = {k: v for k, v in sorted(os.environ.items())
                           if k.startswith(_ENVIRONMENT)}
    return info


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.4g} {unit}"
    return f"{nbytes} B"


def _text(info: dict[str, Any]) -> str:
    lines = [f"gpuconv {info['gpuconv']['version']} ({info['gpuconv']['location']})"]
    py, pf = info["python"], info["platform"]
    lines.append(f"Python {py['version']} ({py['implementation']}, {py['executable']})")
    lines.append(f"platform: {pf['system']}, {pf['machine']}; {pf['usable_cores']} of "
                 f"{pf['cpus']} CPUs usable")
    for title, key in (("dependencies", "dependencies"),
                       ("optional dependencies", "optional_dependencies")):
        lines.append(f"{title}:")
        for name, version in info[key].items():
            lines.append(f"  {name:<14} {version or 'not installed'}")
    lines.append("backends:")
    if info["backends"] is None:
        lines.append("  not probed")
    else:
        for name, status in info["backends"].items():
            state = "usable" if status["usable"] else f"not usable: {status['reason']}"
            lines.append(f"  {name:<14} {state}")
            for key, value in info["backend_details"].get(name, {}).items():
                if key == "devices":
                    for dev in value:
                        lines.append(
                            f"    device {dev.get('id')}: {dev.get('name')}, compute capability "
                            f"{dev.get('compute_capability')}, "
                            f"{_size(dev['memory_bytes']) if dev.get('memory_bytes') else '?'}"
                            + (f", {dev['multiprocessors']} SMs"
                               if dev.get("multiprocessors") else ""))
                else:
                    lines.append(f"    {key}: {value}")
    threads = info["numpy_backend_threads"]
    source = (f"GPUCONV_NUM_THREADS={threads['GPUCONV_NUM_THREADS']}"
              if threads["GPUCONV_NUM_THREADS"] else "GPUCONV_NUM_THREADS unset")
    lines.append(f"NumPy backend threads: {threads['threads']} ({source}; "
                 f"{threads['usable_cores']} cores usable)"
                 + (f"; {threads['error']}" if threads.get("error") else ""))
    blas = info["blas"]
    lines.append("BLAS (threadpoolctl):")
    if blas is None:
        lines.append("  not probed")
    elif isinstance(blas, str):
        lines.append(f"  {blas}")
    elif not blas:
        lines.append("  none loaded")
    else:
        for pool in blas:
            lines.append(f"  {pool.get('internal_api')} {pool.get('version')} "
                         f"({pool.get('user_api')}), {pool.get('num_threads')} threads"
                         + (f", {pool['threading_layer']}" if pool.get("threading_layer") else "")
                         + (f", {pool['architecture']}" if pool.get("architecture") else "")
                         + f": {pool.get('filepath')}")
    lines.append(f"scratch limit: {_size(info['scratch_limit_bytes'])} "
                 f"({info['scratch_limit_bytes']} bytes)")
    cache = info["cost_model_cache"]
    if cache["exists"]:
        state = ("devices: " + ", ".join(cache["device_keys"])) if cache["device_keys"] \
            else "no devices"
    else:
        state = "not written yet (`gpuconv calibrate` writes it; defaults apply)"
    lines.append(f"cost-model cache: {cache['path']} ({state}"
                 + (f"; {cache['note']}" if cache.get("note") else "") + ")")
    env = info["environment"]
    lines.append("environment: " + (", ".join(f"{k}={v}" for k, v in env.items()) or "nothing set"))
    return "\n".join(lines)


def show_config(mode: str = "stdout", *, probe: bool = True) -> dict[str, Any] | None:
    """Print (or return) what a bug report needs: versions, backends, devices, threads, cache.

    Like :func:`numpy.show_config`.  Versions come from the installed
    packages' metadata (no optional library is imported for them).

    Parameters
    ----------
    mode : {'stdout', 'dicts'}, optional
        ``'stdout'`` prints a readable report (what ``gpuconv info`` shows);
        ``'dicts'`` returns it as a dict of plain values (what
        ``gpuconv info --json`` prints).
    probe : bool, keyword-only
        Instantiate every registered backend to say whether it can run here
        (this imports CuPy when it is installed) and list its devices, and ask
        threadpoolctl for the BLAS libraries.  ``False`` reads only package
        metadata, settings and the environment.

    Returns
    -------
    dict or None
        With ``mode='dicts'``: ``gpuconv``, ``python``, ``platform``,
        ``dependencies``, ``optional_dependencies`` (version or ``None``),
        ``backends`` (name to ``{'usable', 'reason'}``), ``backend_details``
        (e.g. CUDA runtime, driver and devices of a usable CuPy backend),
        ``numpy_backend_threads``, ``blas``, ``scratch_limit_bytes``,
        ``cost_model_cache`` (``path``, ``exists``, ``device_keys``) and
        ``environment``.

    Raises
    ------
    ValueError
        For a ``mode`` other than ``'stdout'`` or ``'dicts'``.

    See Also
    --------
    available_backends : which backends can run here, and why not.
    numpy.show_config : NumPy's build and BLAS report.

    Examples
    --------
    >>> import gpuconv
    >>> info = gpuconv.show_config(mode="dicts")
    >>> info["gpuconv"]["version"] == gpuconv.__version__
    True
    >>> info["backends"]["numpy"]
    {'usable': True, 'reason': 'ok'}
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, _MODES))}; got {mode!r}")
    info = _gather(bool(probe))
    if mode == "dicts":
        return info
    print(_text(info))
    return None


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """The ``info`` subcommand of ``gpuconv``."""
    parser = subparsers.add_parser(
        "info", help="versions, backends and why, devices, threads, BLAS and the cost-model "
                     "cache: paste it into a bug report",
        description="Print what a bug report needs (gpuconv.show_config()).")
    parser.add_argument("--json", action="store_true", help="print it as JSON")
    parser.add_argument("--no-probe", action="store_true",
                        help="do not instantiate the backends (no CuPy import) or ask "
                             "threadpoolctl; versions and settings only")
    parser.set_defaults(func=_run_from_cli)
    return parser


def _run_from_cli(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(show_config("dicts", probe=not args.no_probe), indent=2, default=str))
    else:
        show_config(probe=not args.no_probe)
    return 0
