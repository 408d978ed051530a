"""A benchmark report judged against the targets of :data:`gpuconv.bench._cases.TARGETS`.

Every row names the target, the case, the measured value, the goal and
whether it is met; a target whose cells were not measured (a library missing,
a case skipped for time) is listed with ``met = None`` and the reason, never
silently dropped.  The CuPy backend's targets apply to device backends; the
regret of ``auto`` applies to every backend.
"""

from __future__ import annotations

from typing import Any

from .._choose import MARGINS as AUTO_MARGINS
from ._cases import (AUTO_CANDIDATES, AUTO_EXACT_METHODS, DEVICE_BACKENDS,
                     TARGETS)

__all__ = ["evaluate", "targets_markdown"]


def _timed(case: dict[str, Any], column: str) -> dict[str, Any] | None:
    res = case["results"].get(column)
    if res is None or res.get("status") not in ("ok", "capped"):
        return None
    return res


def _why_not(case: dict[str, Any], *columns: str) -> str:
    for column in columns:
        res = case["results"].get(column)
        if res is None:
            return f"no `{column}` column in this run"
        if res.get("status") not in ("ok", "capped"):
            return f"`{column}` {res.get('status')}: {res.get('note', '')}".strip()
    return ""


def best_allowed(grid: str, case: dict[str, Any]) -> tuple[str, float, list[str]] | None:
    """(method, seconds, methods not sampled) of the fastest method auto's policy allows.

    The exact candidates always count; an FFT method counts where it measured at
    least its margin faster than the fastest exact one.  None without a timed
    exact method.
    """
    timed = {m: case["results"][m] for m in AUTO_CANDIDATES.get(grid, ())
             if "median_s" in case["results"].get(m, {})}
    exact = {m: r["median_s"] for m, r in timed.items() if m in AUTO_EXACT_METHODS}
    if not exact:
        return None
    fastest_exact = min(exact.values())
    allowed = dict(exact)
    for m, margin in AUTO_MARGINS.items():
        if m in timed and fastest_exact >= margin * timed[m]["median_s"]:
            allowed[m] = timed[m]["median_s"]
    best = min(allowed, key=allowed.__getitem__)
    estimated = [m for m in allowed if timed[m]["status"] != "ok"]
    return best, allowed[best], estimated


def evaluate(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows ``{"target", "case", "value", "goal", "op", "met", "detail"}`` for a report.

    Parameters
    ----------
    report : dict
        As returned by :func:`gpuconv.bench.run`.

    Returns
    -------
    list of dict
        ``met`` is True, False, or None where the value could not be measured.
    """
    rows: list[dict[str, Any]] = []
    grids = {g["name"]: g for g in report.get("grids", [])}

    def add(key: str, case: str, value: float | None, detail: str) -> None:
        goal, op, _ = TARGETS[key]
        met = None if value is None else (value >= goal if op == ">=" else value <= goal)
        rows.append({"target": key, "case": case,
                     "value": None if value is None else round(value, 3),
                     "goal": goal, "op": op, "met": met, "detail": detail})

    if report.get("backend") in DEVICE_BACKENDS:
        copy = report.get("ceilings", {}).get("copy_gbps")
        for case in grids.get("bandwidth", {}).get("cases", []):
            ours = _timed(case, "direct")
            if ours is None or not copy:
                add("bandwidth", case["id"], None,
                    _why_not(case, "direct") or "the copy bandwidth was not measured")
            else:
                add("bandwidth", case["id"], ours["gbps"] / copy,
                    f"{ours['gbps']:.0f} GB/s of {copy:.0f} GB/s copy")
        for case in grids.get("planes", {}).get("cases", []):
            ours, theirs = _timed(case, "auto"), _timed(case, "cupyx.signal")
            if ours is None or theirs is None:
                add("vs_cupyx", case["id"], None, _why_not(case, "auto", "cupyx.signal"))
            else:
                add("vs_cupyx", case["id"], theirs["median_s"] / ours["median_s"],
                    f"{ours['median_s'] * 1e3:.4g} ms vs {theirs['median_s'] * 1e3:.4g} ms")
        for case in grids.get("conv2d", {}).get("cases", []):
            if case["params"].get("dtype") != "float32":
                continue
            ours, cudnn = _timed(case, "auto"), _timed(case, "torch")
            if ours is None or cudnn is None:
                add("vs_cudnn", case["id"], None, _why_not(case, "auto", "torch"))
            else:
                add("vs_cudnn", case["id"], ours["median_s"] / cudnn["median_s"],
                    f"{ours['median_s'] * 1e3:.4g} ms vs {cudnn['median_s'] * 1e3:.4g} ms")
        for case in grids.get("batched", {}).get("cases", []):
            ours, loop = _timed(case, "auto"), _timed(case, "cupyx.signal")
            if ours is None or loop is None:
                add("batched_vs_loop", case["id"], None, _why_not(case, "auto", "cupyx.signal"))
            else:
                add("batched_vs_loop", case["id"], loop["median_s"] / ours["median_s"],
                    f"{ours['median_s'] * 1e3:.4g} ms vs {loop['median_s'] * 1e3:.4g} ms")
    for name in AUTO_CANDIDATES:
        for case in grids.get(name, {}).get("cases", []):
            label = f"{name} {case['id']}"
            auto, best = _timed(case, "auto"), best_allowed(name, case)
            if auto is None or best is None:
                add("auto_regret", label, None,
                    _why_not(case, "auto") or "no exact method was measured")
                continue
            method, seconds, estimated = best
            note = auto.get("note", "")
            picked = note.split(";")[0] if note.startswith("auto:") else "auto"
            add("auto_regret", label, auto["median_s"] / seconds,
                f"{picked} {auto['median_s'] * 1e3:.4g} ms; fastest allowed {method} "
                f"{seconds * 1e3:.4g} ms"
                + (f" (not all sampled: {', '.join(estimated)})" if estimated else ""))
    return rows


def targets_markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table, with a count of met, missed and unmeasured targets."""
    if not rows:
        return ""
    met = sum(r["met"] is True for r in rows)
    missed = sum(r["met"] is False for r in rows)
    lines = [f"{met} met, {missed} missed, {len(rows) - met - missed} not measured "
             "(of the targets in `gpuconv/bench/_cases.py`).", "",
             "| target | case | value | goal | met | detail |", "|---|---|---:|---|---|---|"]
    for r in rows:
        value = "n/a" if r["value"] is None else f"{r['value']:g}"
        mark = {True: "yes", False: "**no**", None: "not measured"}[r["met"]]
        lines.append(f"| {r['target']} | {r['case']} | {value} | {r['op']} {r['goal']:g} | "
                     f"{mark} | {r['detail']} |")
    return "\n".join(lines) + "\n"
