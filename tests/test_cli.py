"""Each command runs as a user would run it: a subprocess, tiny sizes."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from pyro_vae import load_run

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
        (["train", "--dataset", "cifar10", "--epochs", "1", "--quiet"], "cifar10 is not available"),
        (["train", "--dataset", "folder:/nonexistent", "--quiet"], "no such directory"),
        (["train", "--likelihood", "bernoulli", "--binarize", "none", "--quiet"], "continuous"),
        (["train", "--model", "hierarchical", "--elbo", "meanfield", "--quiet"], "--elbo trace"),
        (["train", "--net", "conv", "--hidden-dims", "8,8,8", "--quiet"], "divisible by 8"),
        (["train", "--model", "nope.py:VAE", "--quiet"], "nope.py does not exist"),
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
    ],
)
def test_bad_arguments_are_usage_errors(args):
    result = pyro_vae(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "error:" in result.stderr


# The model family from the command line: each variant trains, evaluates and samples.


def test_label_cvae_samples_one_row_per_class_or_one_label(tmp_path):
    out = str(tmp_path / "cvae")
    result = pyro_vae("train", *TINY, "--condition", "label", "--learned-prior", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "log p(x | label)" in result.stdout
    for args in (["--label", "3", "--n", "8"], []):
        result = pyro_vae("sample", out, *args)
        assert result.returncode == 0, result.stderr
        assert os.path.getsize(result.stdout.strip()) > 1000
    assert_clean_error(
        pyro_vae("sample", out, "--label", "12"), "labels must be integers from 0 to 9"
    )
    metrics = json.loads(pyro_vae("evaluate", out, "-k", "5", "--json", "--quiet").stdout)
    assert metrics["measures"] == "log p(x | label)"


def test_image_folder_with_conv_nets_and_a_gaussian(tmp_path):
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    for i in range(24):  # two "classes" of coloured blobs, 40x30 pixels, RGB
        folder = tmp_path / "faces" / ("round" if i % 2 else "square")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (torch.rand(30, 40, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i}.png")
    out = str(tmp_path / "run")
    result = pyro_vae(
        "train",
        *TINY,
        "--dataset",
        f"folder:{tmp_path / 'faces'}",
        "--image-size",
        "16",
        "--net",
        "conv",
        "--hidden-dims",
        "8,16",
        "--likelihood",
        "gaussian",
        "--batch-size",
        "8",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    assert "a density" in result.stdout
    run = load_run(out)
    assert run.x_shape == (3, 16, 16) and run.config.binarize == "none"
    assert run.sample(2).shape == (2, 3, 16, 16)


def test_completion_reports_the_baseline_and_draws_the_inpainting(tmp_path):
    out = str(tmp_path / "complete")
    result = pyro_vae("train", *TINY, "--condition", "quadrants:2", "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["test_log_px"] > metrics["baseline_test_log_px"] - 100  # same scale of numbers
    assert os.path.getsize(os.path.join(out, "inpainting.png")) > 1000


def test_model_file_trains_and_inspects(tmp_path):
    spec = os.path.join(ROOT, "examples", "gmm_prior_vae.py") + ":GMMPriorVAE"
    out = str(tmp_path / "mine")
    result = pyro_vae("train", *TINY, "--model", spec, "--out", out)
    assert result.returncode == 0, result.stderr
    assert load_run(out).sample(3).shape == (3, 1, 28, 28)
    diagram = "none" if shutil.which("dot") is None else str(tmp_path / "model.png")
    result = pyro_vae("inspect", spec, "--z-dim", "3", "--diagram", diagram)
    assert result.returncode == 0, result.stderr
    assert "MixtureSameFamily" in result.stdout and "(1, 28, 28)" in result.stdout
    if diagram != "none":
        assert os.path.getsize(diagram) > 1000
