"""Every tutorial runs, with tiny sizes, as a reader would run it.

The tutorials switch to tiny sizes when ``CI`` is set (``smoke_test = "CI" in os.environ``). A
tutorial runs as the notebook a student is handed, cell by cell in a fresh kernel
(``docs/tutorial_notebooks.py``; the cells are the script's lines), and the docs' test renders
that same execution into the site. The coverage test fails when a tutorial is added without a
smoke run here (as in Pyro's tests/test_examples.py); the benchmarks' smoke runs are in
tests/test_benchmarks.py.
"""

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMOKE_RUNS = [
    "tutorials/01_autoencoder_to_vae.py",
    "tutorials/02_variational_em.py",
    "tutorials/03_reparameterization.py",
    "tutorials/04_likelihoods.py",
    "tutorials/05_conditional_vae.py",
    "tutorials/06_latent_space.py",
    "tutorials/07_model_file.py",
    "tutorials/08_discrete_latents.py",
    "tutorials/09_guide_families.py",
]


def test_coverage():
    scripts = sorted(
        os.path.relpath(path, ROOT)
        for path in glob.glob(os.path.join(ROOT, "tutorials", "[!_]*.py"))
    )
    missing = [s for s in scripts if s not in SMOKE_RUNS]
    assert not missing, f"tutorials without a smoke run in tests/test_tutorials.py: {missing}"


@pytest.mark.parametrize("script", SMOKE_RUNS)
def test_tutorial_notebook(script, smoke_notebooks):
    import nbformat

    # A failing cell raises TutorialError with the tutorial's name and the cell's traceback.
    (path,) = smoke_notebooks.build([os.path.join(ROOT, script)])
    nb = nbformat.read(path, as_version=4)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(cell.execution_count for cell in code), "a cell did not run"
    outputs = [output for cell in code for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure in the notebook"


# Figures a tutorial names but shows only where an optional part is installed.
OPTIONAL_FIGURES = {
    "vamp-prior-model.png": "Graphviz draws the plate diagram",
    "anomaly-fashion-mnist.png": "the Fashion-MNIST data set",
}
FIGURE_NAME = re.compile(r"[\w.+-]+\.png\b")


@pytest.mark.parametrize("script", SMOKE_RUNS)
def test_each_figure_is_shown_right_before_the_text_that_names_it(script, smoke_notebooks):
    """A page showed every PNG its commands wrote (28 in tutorial 8), and tutorial 8's analogies
    under section 2, before the text about them. A notebook shows the figures whose paths a cell
    prints (docs/tutorial_notebooks.py); each must be named by the markdown right after that
    cell, and each figure the markdown names must be shown."""
    import nbformat

    (path,) = smoke_notebooks.build([os.path.join(ROOT, script)])
    cells = nbformat.read(path, as_version=4).cells
    problems, shown = [], []
    for i, cell in enumerate(cells):
        for output in cell.get("outputs", []):
            figure = output.get("metadata", {}).get("filename")
            if not figure:
                continue
            name = os.path.basename(figure)
            if name in shown:
                problems.append(f"{name} is shown twice")
            shown.append(name)
            text = next((c.source for c in cells[i + 1 :] if c.cell_type == "markdown"), "")
            if name not in FIGURE_NAME.findall(text):
                problems.append(
                    f"{figure} is shown in cell {i}; the text right after does not name it"
                )
    named = {n for c in cells if c.cell_type == "markdown" for n in FIGURE_NAME.findall(c.source)}
    problems += [
        f"the text names {name}, which the notebook does not show"
        for name in sorted(named - set(shown) - set(OPTIONAL_FIGURES))
    ]
    assert not problems, "\n".join(problems)


def test_the_full_size_runner_says_each_start_and_end_and_keeps_the_times(
    tmp_path, monkeypatch, capsys
):
    """``make tutorials`` (docs/run_tutorials.py) on two stand-in tutorials, one failing."""
    import sys

    sys.path.insert(0, os.path.join(ROOT, "docs"))
    try:
        import run_tutorials
    finally:
        sys.path.pop(0)
    scripts = []
    for name, body in (
        ("01_passes", "import os\nassert 'CI' not in os.environ\n"),
        ("02_fails", "print('the claim')\nassert False, 'measured 0.46'\n"),
    ):
        path = tmp_path / f"{name}.py"
        path.write_text(body)
        scripts.append(str(path))
    times = tmp_path / "times.json"
    times.write_text('{"01_passes": 75}')
    monkeypatch.setattr(run_tutorials, "TUTORIALS", scripts)
    monkeypatch.setattr(run_tutorials, "TIMES", str(times))
    monkeypatch.setenv("CI", "1")  # the runner unsets it for the tutorials: full size
    code = run_tutorials.main(["--out", str(tmp_path / "runs"), "--jobs", "2"])
    out = capsys.readouterr().out
    assert code == 1
    assert "[1/2] 01_passes: started (last time 1 min 15 s)" in out
    assert "[2/2] 02_fails: started (not timed yet)" in out
    assert "[1/2] 01_passes: passed in" in out and "[2/2] 02_fails: FAILED (exit 1)" in out
    assert "measured 0.46" in out and out.strip().endswith("1 passed, 1 failed")
    import json

    assert set(json.loads(times.read_text())) == {"01_passes"}
    assert (tmp_path / "runs" / "02_fails" / "log.txt").read_text().startswith("the claim")


def test_a_notebook_build_says_when_each_tutorial_starts_and_ends(smoke_notebooks, tmp_path):
    """A full-size ``make docs`` sat for 15 minutes on tutorial 1 with no line."""
    script = tmp_path / "01_tiny.py"
    script.write_text("# %%\nprint('hello')\n")
    lines = []
    smoke_notebooks.tool.build(str(tmp_path / "out"), True, [str(script)] * 2, log=lines.append)
    assert lines[0] == "[1/2] 01_tiny: executing at smoke size"
    assert lines[1].startswith("[1/2] 01_tiny: executed in ")
    assert lines[2] == "[2/2] 01_tiny: up to date"
    assert "interrupted; the notebooks executed so far are kept in" in (
        smoke_notebooks.tool.interrupted("out")
    )
