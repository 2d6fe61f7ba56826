"""Each command runs as a user would run it: a subprocess, tiny sizes."""

import json
import os
import subprocess
import sys

import pytest

TINY = [
    "--z-dim",
    "4",
    "--hidden-dims",
    "32",
    "--epochs",
    "1",
    "--batch-size",
    "200",
    "--log-px-samples",
    "20",
    "--quiet",
]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pyro_vae(*args, cwd=None):
    """Run ``python -m pyro_vae.cli`` from this source tree, wherever the test runs."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run(
        [sys.executable, "-m", "pyro_vae.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )


def assert_clean_error(result, message):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pyro-vae: error:") and message in lines[0], lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli") / "run")
    result = pyro_vae("train", *TINY, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "test log p(x)" in result.stdout
    return out


def test_train_writes_a_run(trained):
    metrics = json.load(open(os.path.join(trained, "metrics.json")))
    assert metrics["epochs"] == 1 and metrics["log_px_samples"] == 20


def test_evaluate(trained):
    result = pyro_vae("evaluate", trained, "-k", "30", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["log_px_samples"] == 30 and metrics["test_images"] == 1000


def test_sample_refuses_to_overwrite(trained, tmp_path):
    out = str(tmp_path / "grid.png")
    result = pyro_vae("sample", trained, "--n", "12", "--out", out)
    assert result.returncode == 0, result.stderr
    assert os.path.getsize(out) > 1000
    before = open(out, "rb").read()
    assert_clean_error(pyro_vae("sample", trained, "--n", "4", "--out", out), "exists")
    assert open(out, "rb").read() == before
    assert pyro_vae("sample", trained, "--n", "4", "--out", out, "--overwrite").returncode == 0


def test_demo_writes_a_run_dir(tmp_path):
    result = pyro_vae("demo", "--epochs", "1", "--quiet", "--out", "demo", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "test log p(x)" in result.stdout
    assert os.path.exists(tmp_path / "demo" / "samples.png")


def test_train_refuses_an_existing_run_dir(trained):
    assert_clean_error(pyro_vae("train", *TINY, "--out", trained), "--overwrite")


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--binarize", "none", "--epochs", "1", "--quiet"], "--binarize"),
        (["evaluate", "/nonexistent/run"], "no checkpoint"),
        (["train", "--dataset", "mnist", "--epochs", "1", "--quiet"], "mnist is not available"),
        (["train", "--batch-size", "5000", "--quiet"], "larger than the training set"),
    ],
)
def test_errors_are_one_line(args, message, tmp_path, monkeypatch):
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path / "data"))
    assert_clean_error(
        pyro_vae(*args, "--out", str(tmp_path / "r")) if args[0] == "train" else pyro_vae(*args),
        message,
    )


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--epochs", "0"],
        ["train", "--lr", "-1"],
        ["train", "--dataset", "imagenet"],
        ["evaluate", "x", "-k", "0"],
        ["train", "--hidden-dims", "a,b"],
        ["train", "--exclude-classes", "-1"],
        ["gradvar", "x", "--estimators", "magic"],
        ["anomaly", "x", "--ood", "cifar"],
    ],
)
def test_bad_arguments_are_usage_errors(args):
    result = pyro_vae(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "error:" in result.stderr


@pytest.fixture(scope="module")
def trained_without_ones(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli") / "no1")
    result = pyro_vae("train", *TINY, "--exclude-classes", "1", "--out", out)
    assert result.returncode == 0, result.stderr
    assert json.load(open(os.path.join(out, "config.json")))["exclude_classes"] == [1]
    return out


def test_gradvar(trained_without_ones, tmp_path):
    out = str(tmp_path / "gv")
    args = ["--draws", "3", "--particles", "1,2", "--batch-size", "4", "--quiet", "--out", out]
    result = pyro_vae("gradvar", trained_without_ones, *args)
    assert result.returncode == 0, result.stderr
    assert "score-nn-baseline" in result.stdout
    rows = json.load(open(os.path.join(out, "gradvar.json")))["rows"]
    # 5 estimators x 2 particle counts x 2 stages (untrained, the run itself)
    assert len(rows) == 20 and {r["stage"] for r in rows} == {"epoch 0", "trained (1 epochs)"}
    assert os.path.getsize(os.path.join(out, "gradvar.png")) > 1000
    assert_clean_error(pyro_vae("gradvar", trained_without_ones, *args), "--overwrite")


def test_anomaly_held_out_class(trained_without_ones, tmp_path):
    out = str(tmp_path / "an")
    result = pyro_vae("anomaly", trained_without_ones, "--n", "50", "-k", "5", "--out", out)
    assert result.returncode == 0, result.stderr
    table = json.load(open(os.path.join(out, "anomaly.json")))["tables"]["held-out 1"]
    assert table["images_out"] == 50
    assert {r["score"] for r in table["rows"]} == {"elbo", "kl", "log_px"}
    assert all(0 <= r["auroc"] <= 1 for r in table["rows"])
    assert os.path.exists(os.path.join(out, "scores-held-out-1.png"))


def test_anomaly_needs_excluded_classes_for_held_out(trained, tmp_path):
    result = pyro_vae("anomaly", trained, "--ood", "held-out", "--out", str(tmp_path / "a"))
    assert_clean_error(result, "--exclude-classes")
    assert not os.path.exists(tmp_path / "a")
