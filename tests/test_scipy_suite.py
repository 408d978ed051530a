"""SciPy's own tests of correlate2d/convolve2d, run on gpuconv's default method.

The installed SciPy's ``signal/tests/test_signaltools.py`` is run in a
subprocess with ``scipy.signal.correlate2d``/``convolve2d`` replaced by
gpuconv's (see ``tests/scipy_suite/gpuconv_as_scipy.py`` for the two documented
relaxations: float64 where SciPy returns integers, and error-message wording).
Every test of that file that calls either function is selected; all must pass.
To run it by hand: ``python -m pytest tests/test_scipy_suite.py -v``.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _signaltools_tests() -> Path | None:
    import scipy

    path = Path(scipy.__file__).parent / "signal" / "tests" / "test_signaltools.py"
    return path if path.exists() else None


def _selected(path: Path) -> list[str]:
    """Node ids of every test in the file that calls correlate2d or convolve2d."""
    source = path.read_text()
    ids = []
    for node in ast.parse(source).body:
        text = ast.get_source_segment(source, node) or ""
        if not ("correlate2d" in text or "convolve2d" in text):
            continue
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            ids.append(f"{path}::{node.name}")
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if not (isinstance(sub, ast.FunctionDef) and sub.name.startswith("test")):
                    continue
                body = ast.get_source_segment(source, sub) or ""
                # Tests parametrised over the functions name them only in their decorators.
                decorators = "".join(ast.get_source_segment(source, d) or ""
                                     for d in sub.decorator_list)
                if any(f in body + decorators for f in ("correlate2d", "convolve2d")):
                    ids.append(f"{path}::{node.name}::{sub.name}")
    return ids


@pytest.mark.slow
def test_scipy_signaltools_pass_with_gpuconv(tmp_path):
    path = _signaltools_tests()
    if path is None:
        pytest.skip("SciPy's tests are not installed (scipy/signal/tests/test_signaltools.py)")
    ids = _selected(path)
    assert len(ids) >= 15, ids  # the file has some twenty such tests
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(HERE / "scipy_suite"), str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
         "gpuconv_as_scipy", "-W", "ignore::pytest.PytestUnknownMarkWarning", *ids],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert " passed" in summary and "failed" not in summary and "error" not in summary, summary
