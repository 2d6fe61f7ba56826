"""Every benchmark script runs, with tiny sizes (``CI`` set), as a script.

The coverage test fails when a benchmark is added without a smoke run here (as in Pyro's
tests/test_examples.py).
"""

import glob
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMOKE_RUNS = [
    # The demo benchmark's smoke run still scores 1,000 test images with K=1000 (about 2 minutes).
    pytest.param("benchmarks/demo.py", marks=pytest.mark.slow),
    "benchmarks/checkpoint.py",
    "benchmarks/discrete_step.py",
    "benchmarks/e_step.py",
    "benchmarks/label_cvae.py",
    "benchmarks/epoch.py",
    "benchmarks/families.py",
    "benchmarks/gpu_check.py",
    "benchmarks/log_px.py",
    # Four fresh processes, each importing torch: about 30 s even with tiny sizes.
    pytest.param("benchmarks/memory.py", marks=pytest.mark.slow),
    "benchmarks/quality_at_budget.py",
    "benchmarks/recipes.py",
    "benchmarks/step_overhead.py",
]


def test_coverage():
    scripts = sorted(
        os.path.relpath(path, ROOT)
        for path in glob.glob(os.path.join(ROOT, "benchmarks", "[!_]*.py"))
    )
    smoked = [s.values[0] if hasattr(s, "values") else s for s in SMOKE_RUNS]
    missing = [s for s in scripts if s not in smoked]
    assert not missing, f"benchmarks without a smoke run in tests/test_benchmarks.py: {missing}"


@pytest.mark.parametrize("script", SMOKE_RUNS)
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
    if script in CHECKS:
        CHECKS[script](json.loads(result.stdout))


@pytest.mark.parametrize(
    "script, what",
    [
        ("benchmarks/quality_at_budget.py", "budget in seconds must be a number"),
        ("benchmarks/recipes.py", "budget in seconds must be a number"),
        ("benchmarks/label_cvae.py", "number of epochs must be a whole number"),
    ],
)
def test_a_bad_number_ends_the_script_in_one_line(script, what, tmp_path):
    given = "abc"
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, script), given],
        cwd=str(tmp_path),
        env={**env, "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert (
        result.stderr
        == f"{os.path.basename(script)[:-3]} benchmark: the {what} above 0, got {given!r}\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "given, kind", [("0", float), ("-5", float), ("nan", float), ("inf", float), ("2.5", int)]
)
def test_the_number_must_be_finite_and_above_zero(given, kind, monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    from _args import positive

    monkeypatch.setattr(sys, "argv", ["x.py", given])
    with pytest.raises(SystemExit, match=f"x benchmark: the n must be .* above 0, got '{given}'"):
        positive("x", 1, kind, "n")
    monkeypatch.setattr(sys, "argv", ["x.py", "3"])
    assert positive("x", 1, kind, "n") == 3
    monkeypatch.setattr(sys, "argv", ["x.py"])
    assert positive("x", 1, kind, "n") == 1


def check_quality_curve(result):
    """The curve scores both models at growing shares of the budget, ends at the headline
    numbers, and each point is the models after fewer or as many epochs as the next."""
    curve = result["curve"]
    budgets = [point["budget_seconds"] for point in curve]
    assert budgets == sorted(budgets) and budgets[-1] == result["budget_seconds"]
    last = curve[-1]
    assert last["log_px_difference"] == result["log_px_difference"]
    for who in ("pyro_vae", "peer"):
        assert last[who]["test_log_px"] == result[who]["test_log_px"]
        epochs = [point[who]["epochs"] for point in curve]
        assert epochs == sorted(epochs) and epochs[-1] == result[who]["epochs"]
    for point in curve:
        assert (
            abs(
                point["pyro_vae"]["test_log_px"]
                - point["peer"]["test_log_px"]
                - point["log_px_difference"]
            )
            <= 0.011
        )


def check_discrete_step(result):
    """Every case times the recorded step, the eager one and the hand-written one."""
    assert [c["case"].split(",")[0] for c in result["cases"]] == ["m2", "m2", "gmvae"]
    for case in result["cases"]:
        assert case["hand_written_ms"] > 0
        for step in ("pyro_vae_recorded", "pyro_vae_eager"):
            assert case[step]["ms"] > 0 and case[step]["ratio"] > 0


CHECKS = {
    "benchmarks/quality_at_budget.py": check_quality_curve,
    "benchmarks/discrete_step.py": check_discrete_step,
}
