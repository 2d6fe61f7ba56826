"""Sphinx configuration of pyro_vae's documentation site (``make docs``).

The site is built offline: no intersphinx, maths by a local copy of KaTeX (``_ext/katex_offline``),
Furo's theme with system fonts. Three parts of it are made at build time, before Sphinx reads
the sources (``builder-inited``), and are not committed:

- ``tutorials/NN_*.ipynb``: the tutorials executed as notebooks by ``tutorial_notebooks.py`` (reused
  when current), with the scripts beside them for download;
- ``api/``: one page per module for every name in ``pyro_vae.__all__``, from the docstrings;
- ``_generated/``: the landing page's figure, taken from an executed tutorial (a full-size one
  only: a smoke-size site says so on every page instead, and leaves the figure out).
"""

import glob
import importlib
import inspect
import json
import os
import re
import shutil
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
sys.path[:0] = [ROOT, DOCS, os.path.join(DOCS, "_ext")]

import tutorial_notebooks  # noqa: E402
from sphinx.util import logging  # noqa: E402

logger = logging.getLogger("pyro_vae.docs")

project = "pyro_vae"
author = "the pyro_vae developers"
copyright = "pyro_vae developers, MIT licence"
release = importlib.import_module("pyro_vae").__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "katex_offline",
]
html_math_renderer = "katex"
# _generated/*.md: fragments that pages include, not pages of their own.
exclude_patterns = [
    "_build",
    "jupyter_execute",
    "**.ipynb_checkpoints",
    "README.md",
    "_generated/*.md",
]
html_theme = "furo"
html_title = f"pyro_vae {release}"
html_static_path = []
html_show_sourcelink = False  # the tutorial pages offer their notebook and script instead
html_copy_source = False

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # tutorial_notebooks.py has executed them, figures included
nb_merge_streams = True
nb_output_stderr = "show"

autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # not torch.nn.Module.forward's "Define the computation ..."
autodoc_typehints = "none"  # the Sphinx-style :param int z_dim: fields carry the types

# The executed notebooks: full size by default, tiny sizes when CI is set (as the tutorials do).
SMOKE = tutorial_notebooks.smoke_size()
NOTEBOOKS = os.environ.get("PYRO_VAE_NOTEBOOKS") or tutorial_notebooks.default_out(SMOKE)
LANDING_FIGURE = ("06_latent_space", "tutorial-output/06/manifold.png")

# A smoke-size site looks like the real one but its tutorials' numbers and figures are those of
# tiny runs, under text that quotes the full run: every page says so, in Furo's announcement bar
# (one line that does not wrap, so a short one; `make docs` without CI builds the full site).
SMOKE_BANNER = (
    "Built at <strong>smoke size</strong> (<code>CI</code> set): the tutorials' numbers and "
    "figures come from tiny runs, not the full run their text quotes."
)
html_theme_options = {"announcement": SMOKE_BANNER} if SMOKE else {}


def stage_tutorials(app):
    """Execute the tutorials (unless current) and copy notebooks and scripts into tutorials/."""
    try:
        tutorial_notebooks.build(NOTEBOOKS, SMOKE, log=logger.info)
    except KeyboardInterrupt:  # not Sphinx's crash banner with an empty reason
        print(tutorial_notebooks.interrupted(NOTEBOOKS), file=sys.stderr)
        raise SystemExit(130) from None
    pages = os.path.join(DOCS, "tutorials")
    for old in glob.glob(os.path.join(pages, "[0-9][0-9]_*")):
        os.remove(old)
    for script in tutorial_notebooks.TUTORIALS:
        name = tutorial_notebooks.name_of(script)
        for ext in (".ipynb", ".py"):
            shutil.copyfile(os.path.join(NOTEBOOKS, name + ext), os.path.join(pages, name + ext))


def download_cell(docname, size):
    name = docname.split("/")[-1]
    tiny = (
        " Its numbers and figures come from tiny runs, not from the full run its text quotes."
        if size == "smoke"
        else ""
    )
    return {
        "cell_type": "markdown",
        "id": "hand-outs",
        "metadata": {},
        "source": (
            ":::{admonition} Hand-outs\n:class: tip\n"
            f"{{download}}`{name}.ipynb` — this page as a notebook, executed at {size} size, "
            f"with its outputs and figures.{tiny} {{download}}`{name}.py` — the same tutorial as a "
            f"script (`python {name}.py`; `CI=1` for tiny sizes). `make notebooks` writes all "
            "nine to `notebooks/`.\n:::\n"
        ),
    }


def add_downloads(app, docname, source):
    """Offer each tutorial page's notebook and script for download, under its title."""
    if not (docname.startswith("tutorials/") and docname[len("tutorials/") :][:2].isdigit()):
        return
    nb = json.loads(source[0])
    size = "smoke" if nb["metadata"]["pyro_vae"]["smoke"] else "full"
    nb["cells"].insert(1, download_cell(docname, size))
    source[0] = json.dumps(nb)


LANDING_MARKDOWN = """\
```{figure} _generated/landing.png
:alt: A grid of digits decoded from an evenly spaced grid of 2-D latent codes
:width: 420px

The decoded manifold of a VAE with a 2-D latent space: each image is the decoder's mean at one
point of a grid evenly spaced in prior probability. From [tutorial 6](tutorials/06_latent_space.ipynb),
executed when this site was built.
```
"""
LANDING_SMOKE_MARKDOWN = """\
A full-size build shows here the decoded manifold of a VAE with a 2-D latent space, from
[tutorial 6](tutorials/06_latent_space.ipynb); this smoke-size build leaves it out: a model trained
at smoke size is too small and too briefly trained to draw digits.
"""


def landing_figure(app):
    """The landing page's figure (``_generated/landing.md``, which ``index.md`` includes), decoded
    from the executed tutorial that made it; at smoke size, a line saying why there is none."""
    import base64

    folder = os.path.join(DOCS, "_generated")
    os.makedirs(folder, exist_ok=True)
    for old in glob.glob(os.path.join(folder, "landing.*")):
        os.remove(old)
    if SMOKE:
        with open(os.path.join(folder, "landing.md"), "w") as f:
            f.write(LANDING_SMOKE_MARKDOWN)
        return
    name, filename = LANDING_FIGURE
    with open(os.path.join(NOTEBOOKS, name + ".ipynb")) as f:
        nb = json.load(f)
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            if output.get("metadata", {}).get("filename") == filename:
                with open(os.path.join(folder, "landing.png"), "wb") as out:
                    out.write(base64.b64decode(output["data"]["image/png"]))
                with open(os.path.join(folder, "landing.md"), "w") as f:
                    f.write(LANDING_MARKDOWN)
                return
    raise RuntimeError(f"{name} made no figure {filename} for the landing page")


def _summary(obj):
    """The docstring's first paragraph on one line, its reST roles written as MyST roles."""
    text = " ".join((inspect.getdoc(obj) or "").split("\n\n")[0].split())
    if text.endswith("::"):  # reST's "::" before a literal block reads as ":"
        text = text[:-1]
    text = re.sub(r":(\w+):`", r"{py:\1}`", text)
    return text.replace("|", "\\|")


def api_pages(app):
    """One page per module of pyro_vae, documenting the names of ``pyro_vae.__all__`` in it and
    every ``pyro_vae.MODULE.NAME`` the tutorials call (:func:`tutorial_notebooks.tutorial_api_names`)."""
    import pyro_vae

    modules = {}
    for name in pyro_vae.__all__:
        obj = getattr(pyro_vae, name)
        modules.setdefault(obj.__module__, []).append((name, obj))
    public = {id(obj) for objs in modules.values() for _, obj in objs}
    for module, name in sorted(tutorial_notebooks.tutorial_api_names()):
        obj = getattr(importlib.import_module(f"pyro_vae.{module}"), name)
        if id(obj) in public or inspect.ismodule(obj):
            continue
        home = getattr(obj, "__module__", None) if callable(obj) else None
        home = home if home and home.startswith("pyro_vae") else f"pyro_vae.{module}"
        if name not in [n for n, _ in modules.get(home, [])]:
            modules.setdefault(home, []).append((name, obj))
    folder = os.path.join(DOCS, "api")
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    rows = []
    for module, objs in sorted(modules.items()):
        doc = inspect.getdoc(importlib.import_module(module)) or ""
        lines = [f"# `{module}`", "", doc.split("\n\n")[0], "", "```{eval-rst}"]
        lines += [f".. currentmodule:: {module}", ""]
        for name, obj in objs:
            kind = (
                "autoclass"
                if inspect.isclass(obj)
                else "autofunction"
                if callable(obj)
                else "autodata"
            )
            lines += [f".. {kind}:: {name}"] + (
                ["   :members:", ""]
                if kind == "autoclass"
                else ["   :no-value:", ""]
                if kind == "autodata"
                else [""]
            )
            summary = _summary(obj) if kind != "autodata" else ""
            role = {"autoclass": "class", "autofunction": "func", "autodata": "data"}[kind]
            shown = f"pyro_vae.{name}" if name in pyro_vae.__all__ else f"{module}.{name}"
            rows.append((name, f"{{py:{role}}}`{shown} <{module}.{name}>`", summary))
        lines += ["```", ""]
        with open(os.path.join(folder, module + ".md"), "w") as f:
            f.write("\n".join(lines))
    index = [
        "# API reference",
        "",
        "Everything `import pyro_vae` offers (`pyro_vae.__all__`), and every name of a module",
        "that the tutorials call (`pyro_vae.families.FAMILIES`, say), from the docstrings; each",
        "name is documented in the module that defines it.",
        "",
        "| name | what it is |",
        "|---|---|",
    ]
    index += [f"| {link} | {summary} |" for _, link, summary in sorted(rows)]
    index += ["", "```{toctree}", ":hidden:", ""] + [m for m in sorted(modules)] + ["```", ""]
    with open(os.path.join(folder, "index.md"), "w") as f:
        f.write("\n".join(index))


def setup(app):
    app.connect("builder-inited", stage_tutorials)
    app.connect("builder-inited", landing_figure)
    app.connect("builder-inited", api_pages)
    app.connect("source-read", add_downloads)
