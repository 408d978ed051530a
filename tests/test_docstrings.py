"""Every public function in gpuconv.__all__ has a numpydoc docstring whose
Parameters match its signature and whose Examples run."""

from __future__ import annotations

import doctest
import inspect
import re

import pytest

import gpuconv

PUBLIC = [name for name in gpuconv.__all__ if not name.startswith("_")]
FUNCTIONS = [name for name in PUBLIC if inspect.isfunction(getattr(gpuconv, name))]
CLASSES = [name for name in PUBLIC if inspect.isclass(getattr(gpuconv, name))]


def sections(doc: str) -> dict[str, list[str]]:
    """numpydoc sections: a title line underlined with dashes, then its body."""
    lines = doc.splitlines()
    found: dict[str, list[str]] = {}
    current = None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and re.fullmatch(r"-{3,}", lines[i + 1].strip()) and line.strip():
            current = line.strip()
            found[current] = []
        elif current is not None and not re.fullmatch(r"-{3,}", line.strip()):
            found[current].append(line)
    return found


def documented_parameters(body: list[str]) -> list[str]:
    names = []
    for line in body:
        if line and not line[0].isspace():
            for name in line.split(":")[0].split(","):
                names.append(name.strip().lstrip("*"))
    return names


def test_there_are_public_functions():
    assert {"correlate2d", "convolve2d", "conv2d", "conv_transpose2d", "set_backend"} <= set(
        FUNCTIONS)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_has_numpydoc_docstring(name):
    fn = getattr(gpuconv, name)
    doc = inspect.getdoc(fn)
    assert doc, f"gpuconv.{name} has no docstring"
    summary = doc.splitlines()[0]
    assert summary.strip() and len(summary) <= 100, f"gpuconv.{name}: bad summary line"
    found = sections(doc)
    params = [p for p in inspect.signature(fn).parameters.values()
              if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if params:
        assert "Parameters" in found, f"gpuconv.{name} has no Parameters section"
        assert documented_parameters(found["Parameters"]) == [p.name for p in params], (
            f"gpuconv.{name}: Parameters section does not list the signature's parameters "
            "in order")
    returns = inspect.signature(fn).return_annotation
    if returns not in (None, "None"):
        assert "Returns" in found, f"gpuconv.{name} has no Returns section"
    assert "Examples" in found, f"gpuconv.{name} has no Examples section"
    assert any(line.lstrip().startswith(">>>") for line in found["Examples"])


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_examples_run(name):
    fn = getattr(gpuconv, name)
    tests = doctest.DocTestFinder(recurse=False).find(fn, f"gpuconv.{name}", globs={})
    assert tests and tests[0].examples
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    with gpuconv.set_backend("auto"):
        for test in tests:
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"gpuconv.{name}: {result.failed} example(s) failed"


@pytest.mark.parametrize("name", CLASSES)
def test_class_has_docstring(name):
    doc = inspect.getdoc(getattr(gpuconv, name))
    assert doc and doc.splitlines()[0].strip()
