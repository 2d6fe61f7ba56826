"""Every tutorial and benchmark script runs, with tiny sizes, as a reader would run it.

The scripts switch to tiny sizes when ``CI`` is set (``smoke_test = "CI" in os.environ``). A
benchmark runs as a script; a tutorial runs as the notebook a student is handed, cell by cell in a
fresh kernel (``docs/tutorial_notebooks.py``; the cells are the script's lines), and the docs' test
renders that same execution into the site. The coverage test fails when a script is added without
a smoke run here (as in Pyro's tests/test_examples.py).
"""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMOKE_RUNS = [
    # The demo benchmark's smoke run still scores 1,000 test images with K=1000 (about 2 minutes).
    pytest.param("benchmarks/demo.py", marks=pytest.mark.slow),
    "benchmarks/checkpoint.py",
    "benchmarks/e_step.py",
    "benchmarks/label_cvae.py",
    "benchmarks/epoch.py",
    "benchmarks/gpu_check.py",
    "benchmarks/log_px.py",
    # Four fresh processes, each importing torch: about 30 s even with tiny sizes.
    pytest.param("benchmarks/memory.py", marks=pytest.mark.slow),
    "benchmarks/quality_at_budget.py",
    "benchmarks/step_overhead.py",
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
        for folder in ("tutorials", "benchmarks")
        for path in glob.glob(os.path.join(ROOT, folder, "[!_]*.py"))
    )
    smoked = [s.values[0] if hasattr(s, "values") else s for s in SMOKE_RUNS]
    missing = [s for s in scripts if s not in smoked]
    assert not missing, f"scripts without a smoke run in tests/test_tutorials.py: {missing}"


def _is_tutorial(run):
    return str(run).startswith("tutorials/")


@pytest.mark.parametrize("script", [s for s in SMOKE_RUNS if not _is_tutorial(s)])
def test_smoke(script, tmp_path):
    env = {**os.environ, "CI": "1", "PYTHONPATH": ROOT, "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, script)],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("script", [s for s in SMOKE_RUNS if _is_tutorial(s)])
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
