"""Every public function and class of gpuconv's public modules has a numpydoc docstring:
Parameters that match its signature, Returns, Raises, See Also and Examples that run.

The sections required of a function: Parameters (when it takes any; in signature order),
Returns (unless it returns None), Raises (when it takes any argument, since it can then
reject one), See Also and Examples with at least one ``>>>`` line.  A class needs its
constructor's arguments under Parameters (or, for dataclasses and named tuples, under
Attributes), Raises when its own constructor takes arguments, See Also and Examples.
"""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect
import re

import pytest

import gpuconv

MODULES = ["gpuconv", "gpuconv.nn", "gpuconv.nn.functional", "gpuconv.theory",
           "gpuconv.reference", "gpuconv.backends"]

# Docstrings still being completed, with the sections each one lacks.  A name leaves this
# table when its docstring is complete: the test below fails until it does, so the table
# can only shrink.
PENDING: dict[str, set[str]] = {}


def _public() -> dict[str, object]:
    found = {}
    for modname in MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            if name.startswith("_") or inspect.ismodule(obj):
                continue
            found[f"{modname}.{name}"] = obj
    return found


PUBLIC = _public()
FUNCTIONS = sorted(n for n, obj in PUBLIC.items() if inspect.isfunction(obj))
CLASSES = sorted(n for n, obj in PUBLIC.items() if inspect.isclass(obj))


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


def _parameters(fn: object) -> list[str]:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    return [p.name for p in signature.parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"]


def _is_record(cls: type) -> bool:
    """Dataclasses and named tuples: their constructor is generated from their fields."""
    return dataclasses.is_dataclass(cls) or (issubclass(cls, tuple) and hasattr(cls, "_fields"))


def missing_sections(name: str) -> set[str]:
    """The required sections ``name``'s docstring lacks (a wrong Parameters list counts)."""
    obj = PUBLIC[name]
    doc = inspect.getdoc(obj) or ""
    found = sections(doc)
    missing = set()
    if inspect.isclass(obj):
        params = [] if issubclass(obj, BaseException) else _parameters(obj)
        title = "Attributes" if _is_record(obj) else "Parameters"
        if params and documented_parameters(found.get(title, [])) != params:
            missing.add(title)
        own_init = "__init__" in vars(obj) and not _is_record(obj)
        if own_init and params and "Raises" not in found:
            missing.add("Raises")
    else:
        params = _parameters(obj)
        if params and documented_parameters(found.get("Parameters", [])) != params:
            missing.add("Parameters")
        returns = inspect.signature(obj).return_annotation
        if returns not in (None, "None") and "Returns" not in found:
            missing.add("Returns")
        if params and "Raises" not in found:
            missing.add("Raises")
    if "See Also" not in found:
        missing.add("See Also")
    if not any(line.lstrip().startswith(">>>") for line in found.get("Examples", [])):
        missing.add("Examples")
    return missing


def test_every_module_has_public_names():
    assert {"gpuconv.correlate2d", "gpuconv.conv2d", "gpuconv.max_pool2d",
            "gpuconv.theory.receptive_field", "gpuconv.nn.functional.conv2d_weight_grad",
            "gpuconv.reference.avg_pool2d"} <= set(FUNCTIONS)
    assert {"gpuconv.nn.Conv2D", "gpuconv.backends.ArrayBackend",
            "gpuconv.theory.ClaimResult"} <= set(CLASSES)


def test_pending_names_are_public():
    assert set(PENDING) <= set(PUBLIC), set(PENDING) - set(PUBLIC)


@pytest.mark.parametrize("name", FUNCTIONS + CLASSES)
def test_numpydoc_sections(name):
    doc = inspect.getdoc(PUBLIC[name])
    assert doc, f"{name} has no docstring"
    summary = doc.splitlines()[0]
    assert summary.strip() and len(summary) <= 100, f"{name}: bad summary line"
    missing = missing_sections(name)
    expected = PENDING.get(name, set())
    if missing != expected:
        if name in PENDING and not missing:
            pytest.fail(f"{name}'s docstring is complete: remove it from PENDING")
        pytest.fail(f"{name}: missing or wrong sections {sorted(missing)}"
                    + (f" (PENDING says {sorted(expected)})" if expected else ""))


@pytest.mark.parametrize("name", [n for n in FUNCTIONS if n.count(".") == 1])
def test_function_examples_run(name):
    """The top-level functions' examples, also under ``set_backend("auto")`` explicitly."""
    fn = PUBLIC[name]
    tests = doctest.DocTestFinder(recurse=False).find(fn, name, globs={})
    assert tests and tests[0].examples
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    with gpuconv.set_backend("auto"):
        for test in tests:
            runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} example(s) failed"


def test_the_checker_catches_a_bad_docstring():
    def f(a, b):
        """Summary.

        Parameters
        ----------
        b : int
        a : int

        Examples
        --------
        >>> 1
        1
        """

    PUBLIC["test.f"] = f
    try:
        assert missing_sections("test.f") == {"Parameters", "Returns", "Raises", "See Also"}
    finally:
        del PUBLIC["test.f"]
