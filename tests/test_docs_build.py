"""The documentation site: its API reference lists every public name, and it builds with
Sphinx with warnings as errors (``python -m sphinx -W -b html docs docs/_build/html``).

The guide's and the tutorial's examples are doctests run by pytest itself
(``--doctest-glob='*.md'``); here the site is built from a copy of ``docs/``, so the build
writes nothing into the checkout.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API_MODULES = ["gpuconv", "gpuconv.nn", "gpuconv.nn.functional", "gpuconv.theory",
               "gpuconv.reference", "gpuconv.backends"]
SPHINX_PACKAGES = ["sphinx", "numpydoc", "pydata_sphinx_theme", "myst_parser",
                   "sphinx_copybutton"]


def documented_names() -> set[str]:
    """Every name listed in an autosummary table of docs/api, as module.name."""
    names = set()
    for page in sorted((DOCS / "api").glob("*.rst")):
        module = None
        in_table = False
        for line in page.read_text().splitlines():
            if m := re.match(r"\.\. currentmodule:: (\S+)", line):
                module = m.group(1)
            elif line.startswith(".. autosummary::"):
                in_table = True
            elif in_table and re.match(r"   [A-Za-z_][\w.]*$", line):
                names.add(f"{module}.{line.strip()}")
            elif in_table and line and not line.startswith(" "):
                in_table = False
    return names


def public_names() -> set[str]:
    names = set()
    for modname in API_MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            if not name.startswith("_") and not inspect.ismodule(getattr(module, name)):
                names.add(f"{modname}.{name}")
    return names


def test_api_reference_lists_every_public_name():
    documented = documented_names()
    assert documented, "no autosummary tables found in docs/api"
    missing = public_names() - documented
    assert not missing, f"public names missing from docs/api/*.rst: {sorted(missing)}"
    unknown = documented - public_names()
    assert not unknown, f"docs/api/*.rst lists names that are not public: {sorted(unknown)}"


def test_every_page_is_in_a_toctree():
    index = (DOCS / "index.md").read_text()
    for page in DOCS.glob("*.md"):
        if page.stem != "index":
            assert re.search(rf"^{page.stem}$", index, flags=re.M), f"{page.name} is in no toctree"


def test_figures_exist_and_are_referenced():
    referenced = set()
    for page in DOCS.glob("*.md"):
        referenced |= set(re.findall(r"\]\((_static/[\w.-]+\.png)\)", page.read_text()))
    assert {"_static/edges.png", "_static/learned-kernel.png", "_static/digits.png",
            "_static/crossover-cpu.png"} <= referenced
    for path in referenced:
        assert (DOCS / path).is_file(), f"{path} is missing: run python docs/make_figures.py"


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(tmp_path):
    for package in SPHINX_PACKAGES:
        pytest.importorskip(package, reason=f"{package} is not installed (the 'docs' extra)")
    source = tmp_path / "docs"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns("_build", "generated"))
    out = tmp_path / "html"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(source), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:] or proc.stdout[-5000:]
    # One page per public name, with the numpydoc sections rendered.
    page = (out / "api" / "generated" / "gpuconv.max_pool2d.html").read_text()
    for section in ("Parameters", "Returns", "Raises", "See also", "Examples"):
        assert section in page, section
    for name in public_names():
        assert (out / "api" / "generated" / f"{name}.html").is_file(), name
    tutorial = (out / "tutorial.html").read_text()
    assert "Dive into Deep Learning" in tutorial and "edges.png" in tutorial
    assert (out / "_images" / "edges.png").is_file()
