"""Sphinx configuration: the guide (Markdown, doctested by pytest), the tutorial and the
API reference (autosummary stubs of every public name, numpydoc docstrings).

Build with ``python -m sphinx -W -b html docs docs/_build/html`` (``pip install
".[docs]"``).  The build needs no network: cross-links to NumPy, SciPy, CuPy, PyTorch
and Dask are added only when ``GPUCONV_DOCS_INTERSPHINX=1`` is set.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The checkout's gpuconv, also when it is not installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gpuconv  # noqa: E402

project = "gpuconv"
author = "the gpuconv developers"
copyright = "the gpuconv developers"
release = version = gpuconv.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx_copybutton",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# -- the guide: Markdown pages whose ```python blocks are doctests ---------------------
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

# -- API reference ----------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "none"          # numpydoc's Parameters section says it in words
autodoc_default_options = {"members": False}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# -- HTML ----------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"gpuconv {version}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_sidebars = {"**": ["sidebar-nav-bs"]}
html_show_sourcelink = False
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True

# -- links to the libraries gpuconv mirrors (needs network, so opt-in) ----------------------
if os.environ.get("GPUCONV_DOCS_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "scipy": ("https://docs.scipy.org/doc/scipy", None),
        "cupy": ("https://docs.cupy.dev/en/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
        "dask": ("https://docs.dask.org/en/stable", None),
    }
