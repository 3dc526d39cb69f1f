"""Sphinx configuration: ``make docs`` builds docs/_build/html with warnings as errors.

Pages are Markdown (MyST); the API reference is autosummary over the docstrings; the examples gallery
is sphinx-gallery over ``examples/``, executed at build time (an example that breaks fails the build).
"""
import os
from importlib.metadata import version as _version

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

project = "prosthesis-sim"
author = "the prosthesis-sim developers"
release = _version("prosthesis-sim")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.json", "auto_examples/*.md5", "sg_execution_times.rst"]
myst_heading_anchors = 4          # GitHub-style #anchors, as the README links them
myst_enable_extensions = ["colon_fence"]
autosummary_generate = True
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_mock_imports = []
napoleon_google_docstring = False
suppress_warnings = ["config.cache"]  # sphinx-gallery's conf values are functions; Sphinx cannot pickle them

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "show_memory": False,
}

html_theme = "furo"
html_title = "prosthesis-sim"
html_static_path = []
