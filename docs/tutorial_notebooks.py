"""Execute the tutorials into notebooks, with their outputs and figures, ready to hand out.

The tutorials are jupytext percent scripts (``tutorials/NN_*.py``). Each is read by jupytext and
run cell by cell in a fresh Jupyter kernel (nbclient), in a working directory of its own, exactly
as a student runs the notebook. The tutorials save their figures with ``savefig`` (so that the
scripts work the same from a terminal) and print the path of each figure their text discusses,
in the cell right before that text; after every cell, each PNG file whose path the cell printed
is embedded in that cell's outputs. A command that writes a dozen figures shows none of them
unless the tutorial prints one (``tests/test_tutorials.py`` checks that every figure shown is
named by the text right after it, and every figure the text names is shown). A cell that raises
stops the build with the tutorial's name and the cell's traceback.

The folder written holds, for each tutorial, ``NN_name.ipynb`` (executed) and ``NN_name.py`` (the
script); a teacher can zip it as it is. The documentation site (``docs/conf.py``) renders the same
notebooks as its tutorial pages, and ``tests/`` share one smoke-size execution between the
tutorial tests and the site's test.

A notebook records what it was executed from: the hashes of the script's and the library's
source (this file included) and the size (``smoke`` when ``CI`` is set, as in the tutorials
themselves). A notebook whose record matches is reused, so outputs are never stale and nothing
is run twice.

Usage::

    python docs/tutorial_notebooks.py            # full size, into notebooks/
    CI=1 python docs/tutorial_notebooks.py OUT   # smoke size, into OUT
"""

import argparse
import base64
import configparser
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TUTORIALS = sorted(glob.glob(os.path.join(ROOT, "tutorials", "[0-9][0-9]_*.py")))
TIMEOUT = 1800  # seconds per cell: the longest full-size cells train for a few minutes


def tutorial_api_names(scripts=None):
    """``{(module, name)}`` of the library that the tutorials call by a module's name:
    ``pyro_vae.MODULE.NAME``, or ``MODULE.NAME`` after ``from pyro_vae import MODULE``. The API
    reference documents each (``docs/conf.py``), beside ``pyro_vae.__all__``."""
    import ast
    import importlib

    names = set()
    for script in TUTORIALS if scripts is None else scripts:
        with open(script) as f:
            tree = ast.parse(f.read())
        modules = {}
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                continue
            if node.module == "pyro_vae":
                for alias in node.names:
                    if importlib.util.find_spec(f"pyro_vae.{alias.name}") is not None:
                        modules[alias.asname or alias.name] = alias.name
            elif node.module.startswith("pyro_vae."):  # from pyro_vae.families import FAMILIES
                names.update((node.module[len("pyro_vae.") :], a.name) for a in node.names)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            inner = node.value
            if isinstance(inner, ast.Name) and inner.id in modules:
                names.add((modules[inner.id], node.attr))
            elif (
                isinstance(inner, ast.Attribute)
                and isinstance(inner.value, ast.Name)
                and inner.value.id == "pyro_vae"
                and importlib.util.find_spec(f"pyro_vae.{inner.attr}") is not None
            ):
                names.add((inner.attr, node.attr))
    return names


class TutorialError(RuntimeError):
    """A tutorial's cell raised; the message names the tutorial and holds the traceback."""


def smoke_size():
    """Tiny sizes, as the tutorials choose them: ``smoke_test = "CI" in os.environ``."""
    return "CI" in os.environ


def default_out(smoke):
    """``notebooks/`` for full-size hand-outs; smoke-size ones stay out of the way, under docs/_build."""
    if smoke:
        return os.path.join(ROOT, "docs", "_build", "notebooks-smoke")
    return os.path.join(ROOT, "notebooks")


def _sha256(paths):
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.path.relpath(path, ROOT).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def record(script, smoke):
    """What a notebook of ``script`` is executed from; a cached notebook must match it."""
    library = sorted(glob.glob(os.path.join(ROOT, "pyro_vae", "**", "*.py"), recursive=True))
    return {
        "script": os.path.relpath(script, ROOT),
        "script_sha256": _sha256([script]),
        # The library, and this file, which decides what the notebook holds.
        "library_sha256": _sha256([*library, os.path.abspath(__file__)]),
        "smoke": smoke,
    }


def name_of(script):
    return os.path.splitext(os.path.basename(script))[0]


# A path a cell prints, as the tutorials print them: tutorial-output/02/e-step.png.
_PRINTED_PNG = re.compile(r"[^\s'\"`()\[\]]+\.png\b")


def printed_figures(cell, workdir):
    """The PNG files whose paths ``cell`` printed (relative to ``workdir``, where the kernel runs),
    once each, in the order printed; a printed name that is no file there is not a figure."""
    root, found = os.path.realpath(workdir), []
    for output in cell.get("outputs", []):
        if output.get("output_type") != "stream" or output.get("name") != "stdout":
            continue
        for path in _PRINTED_PNG.findall(output.get("text", "")):
            full = os.path.realpath(os.path.join(root, path))
            inside = full.startswith(os.path.join(root, ""))
            if inside and os.path.isfile(full) and full not in found:
                found.append(full)
    return found


class _FigureCollector:
    """After each cell, embed the PNG files whose paths it printed as display outputs."""

    def __init__(self, workdir):
        self.workdir = os.path.realpath(workdir)

    def __call__(self, cell, cell_index, execute_reply):
        import nbformat

        for path in printed_figures(cell, self.workdir):
            with open(path, "rb") as f:
                data = base64.b64encode(f.read()).decode("ascii")
            relpath = os.path.relpath(path, self.workdir)
            cell.outputs.append(
                nbformat.v4.new_output(
                    "display_data",
                    data={"image/png": data, "text/plain": f"<figure {relpath}>"},
                    metadata={"filename": relpath},
                )
            )


def kernel_env(smoke):
    """The kernel sees this checkout's pyro_vae, a non-interactive matplotlib, and the size."""
    env = {**os.environ, "MPLBACKEND": "Agg"}
    # tqdm.auto, inside a kernel without ipywidgets, warns at import and falls back to text
    # bars; the warning is about the reader's Jupyter, not the tutorial, so it stays out of it.
    warnings = [w for w in (env.get("PYTHONWARNINGS"), "ignore:IProgress not found") if w]
    env["PYTHONWARNINGS"] = ",".join(warnings)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    if smoke:
        env.setdefault("CI", "1")
    else:
        env.pop("CI", None)
    return env


def execute(script, smoke=None):
    """Run ``script`` as a notebook in a fresh kernel and return the executed notebook.

    :param str script: path of a jupytext percent script.
    :param bool smoke: tiny sizes; default: whether ``CI`` is set.
    :raises nbclient.exceptions.CellExecutionError: when a cell raises, with its traceback.
    """
    import jupytext
    from nbclient import NotebookClient

    smoke = smoke_size() if smoke is None else smoke
    nb = jupytext.read(script)
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    with tempfile.TemporaryDirectory(prefix=name_of(script) + "-") as workdir:
        client = NotebookClient(
            nb,
            timeout=TIMEOUT,
            kernel_name="python3",
            # The kernel's own start-up notes (it listens on localhost TCP) are not the tutorial's.
            extra_arguments=["--IPKernelApp.log_level=ERROR"],
            resources={"metadata": {"path": workdir}},
            on_cell_executed=_FigureCollector(workdir),
        )
        try:
            # The kernel's own stderr is not the tutorial's (its cells' output comes through the
            # notebook); on Ctrl-C it would print the kernel's shutdown traceback.
            client.execute(env=kernel_env(smoke), cwd=workdir, stderr=subprocess.DEVNULL)
        except Exception:
            # nbclient answers Ctrl-C (SIGINT) itself, by shutting the kernel down; what it
            # raises then (a dead kernel, a failed clean-up) is the interruption, not a failure.
            if getattr(client, "_async_cleanup_kernel_future", None) is not None:
                raise KeyboardInterrupt from None
            raise
    nb.metadata["pyro_vae"] = record(script, smoke)
    return nb


def is_current(path, script, smoke):
    """Whether the notebook at ``path`` was executed from this script, library and size."""
    import nbformat

    if not os.path.exists(path):
        return False
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # a half-written or foreign file is simply executed again
        return False
    return nb.metadata.get("pyro_vae") == record(script, smoke)


def build_one(script, out, smoke=None, log=print, place=""):
    """Write ``out/NAME.ipynb`` (executed, unless current already) and ``out/NAME.py``;
    ``place`` (``"[3/9] "``) goes before the lines it logs."""
    import nbformat

    smoke = smoke_size() if smoke is None else smoke
    os.makedirs(out, exist_ok=True)
    name = name_of(script)
    target = os.path.join(out, name + ".ipynb")
    shutil.copyfile(script, os.path.join(out, name + ".py"))
    if is_current(target, script, smoke):
        log(f"{place}{name}: up to date")
        return target
    from nbclient.exceptions import DeadKernelError

    # A line before the minutes of a full-size tutorial, so a build is never silent for long.
    log(f"{place}{name}: executing at {'smoke' if smoke else 'full'} size{_last_time(name, smoke)}")
    start = time.perf_counter()
    try:
        try:
            nb = execute(script, smoke)
        except DeadKernelError:
            # The kernel process itself stopped answering (a starved machine, a killed process),
            # not a cell that raised: start a fresh kernel once more.
            log(f"{name}: the kernel died; running it again in a fresh kernel")
            nb = execute(script, smoke)
    except Exception as e:  # nbclient's CellExecutionError carries the cell's traceback
        raise TutorialError(f"{os.path.relpath(script, ROOT)} failed:\n{e}") from e
    partial = target + ".partial"
    nbformat.write(nb, partial)
    os.replace(partial, target)
    log(
        f"{place}{name}: executed in {time.perf_counter() - start:.1f} s "
        f"({'smoke' if smoke else 'full'} size)"
    )
    return target


def _last_time(name, smoke):
    """`` (last time 5 min 5 s)`` from tutorials/times.json (``make tutorials`` keeps it)."""
    import json

    try:
        with open(os.path.join(ROOT, "tutorials", "times.json")) as f:
            seconds = json.load(f)[name]
    except (OSError, ValueError, KeyError):
        return ""
    if smoke:
        return ""
    from pyro_vae.progress import duration

    return f" (last time as a script: {duration(seconds)})"


HANDOUT_README = """\
# pyro_vae tutorials, executed

Each tutorial twice: NN_name.ipynb, a notebook executed at {size} size with its outputs and
figures, and NN_name.py, the same tutorial as a script (jupytext percent format: it opens in
Jupyter as a notebook too). Executed with pyro_vae {version}.

To run them again: in a clone of pyro_vae (tutorial 7 reads its examples/ folder), `pip install -e .`
(and jupyter to open the notebooks), then run a notebook's cells in order, or `python NN_name.py`;
with the environment variable CI set they run with tiny sizes in a minute or so. Each writes its
figures to tutorial-output/NN/.
"""


def build(out=None, smoke=None, scripts=None, log=print):
    """Execute every tutorial (or ``scripts``) into ``out``; return the notebooks' paths."""
    smoke = smoke_size() if smoke is None else smoke
    out = default_out(smoke) if out is None else out
    scripts = TUTORIALS if scripts is None else scripts
    paths = [
        build_one(s, out, smoke, log, place=f"[{i}/{len(scripts)}] " if len(scripts) > 1 else "")
        for i, s in enumerate(scripts, 1)
    ]
    if scripts == TUTORIALS:
        cfg = configparser.ConfigParser()  # the version's one place, as the package reads it
        cfg.read(os.path.join(ROOT, "setup.cfg"))
        version = cfg["metadata"]["version"]
        size = "smoke (CI)" if smoke else "full"
        with open(os.path.join(out, "README.md"), "w") as f:
            f.write(HANDOUT_README.format(size=size, version=version))
    return paths


def interrupted(out):
    """What Ctrl-C during a build says (``make notebooks`` and ``make docs`` alike)."""
    return (
        f"interrupted; the notebooks executed so far are kept in {out} and reused by the next build"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "out",
        nargs="?",
        help="folder to write into (default: notebooks/, or docs/_build/notebooks-smoke with CI set)",
    )
    args = parser.parse_args(argv)
    smoke = smoke_size()
    out = args.out or default_out(smoke)
    try:
        build(out, smoke)
    except TutorialError as e:
        sys.exit(f"tutorial_notebooks: {e}")
    except KeyboardInterrupt:
        print(interrupted(out), file=sys.stderr)
        sys.exit(130)
    print(f"{len(TUTORIALS)} executed notebooks and their scripts in {out}")


if __name__ == "__main__":
    main()
