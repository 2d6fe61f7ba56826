"""Each command runs as a user would run it: a subprocess, tiny sizes."""

import io
import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_vae import load_run
from pyro_vae.checkpoints import FORMAT_VERSION
from pyro_vae.cli import main
from pyro_vae.config import Config
from pyro_vae.data import load_dataset, load_images
from pyro_vae.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DatasetUnavailableError,
    RunDirError,
)
from pyro_vae.runs import train_run

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
TINY_CONFIG = dict(z_dim=4, hidden_dims=(32,), epochs=1, batch_size=200, log_px_samples=20)

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


def cli(capsys, *args):
    """Run the command in this process (no start-up cost), as ``pyro_vae`` would in a child."""
    try:
        code = main(list(args))
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


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


def test_a_command_starts_without_importing_torchvision_or_matplotlib():
    """They take some 3 s to import; only figures and the downloaded data sets need them."""
    from tests.test_packaging import imports_of

    argvs = "[['--help'], ['evaluate', 'no-such-run']]"
    assert imports_of(argvs, ("torchvision", "matplotlib"))[0] == "[]"


def test_train_writes_a_run(trained):
    metrics = json.load(open(os.path.join(trained, "metrics.json")))
    assert metrics["epochs"] == 1 and metrics["log_px_samples"] == 20


def test_train_takes_the_activation_and_the_learning_rate_schedule(tmp_path, capsys):
    out = str(tmp_path / "run")
    options = "--epochs 2 --activation relu --lr-decay 0.5".split()
    result = cli(capsys, "train", *TINY, *options, "--out", out)
    assert result.returncode == 0, result.stderr
    with open(os.path.join(out, "config.json")) as f:
        saved = json.load(f)
    assert saved["activation"] == "relu" and saved["lr_decay"] == 0.5
    run = load_run(out)
    assert all(not isinstance(m, torch.nn.Softplus) for m in run.model.decoder.modules())
    assert any(isinstance(m, torch.nn.ReLU) for m in run.model.decoder.modules())
    (optimizer,) = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)["optimizer"]
    assert optimizer["scheduler"]["_last_lr"] == pytest.approx([1e-3 * 0.5**2])
    conv = str(tmp_path / "conv")
    refused = cli(capsys, "train", "--net", "conv", "--activation", "relu", "--out", conv)
    assert_clean_error(refused, "the conv networks use LeakyReLU")
    assert not os.path.exists(conv)


def test_evaluate(trained):
    result = pyro_vae("evaluate", trained, "-k", "30", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["log_px_samples"] == 30 and metrics["test_images"] == 1000


def test_sample_refuses_to_overwrite(trained, tmp_path, capsys):
    out = str(tmp_path / "grid.png")
    result = cli(capsys, "sample", trained, "--n", "12", "--out", out)
    assert result.returncode == 0, result.stderr
    assert os.path.getsize(out) > 1000
    before = open(out, "rb").read()
    assert_clean_error(cli(capsys, "sample", trained, "--n", "4", "--out", out), "exists")
    assert open(out, "rb").read() == before
    assert cli(capsys, "sample", trained, "--n", "4", "--out", out, "--overwrite").returncode == 0


@pytest.mark.slow  # the full demo evaluation (K=1000 on 1,000 images): minutes on 2 cores
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
def test_errors_are_one_line(args, message, tmp_path, monkeypatch, capsys):
    # In this process: the same main() a child would run, without a child's start-up cost.
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path / "data"))
    out = ["--out", str(tmp_path / "r")] if args[0] == "train" else []
    assert_clean_error(cli(capsys, *args, *out), message)


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
def test_bad_arguments_are_usage_errors(args, capsys):
    result = cli(capsys, *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "error:" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def assert_same_error(result, error):
    """The CLI printed the Python API's message, in one line, and failed."""
    assert_clean_error(result, str(error.value).splitlines()[0])


# Every bad input from the README's reliability table, through the CLI and through the API.

IMAGES = {
    "wrong shape": (np.zeros((2, 3, 32, 32), np.float32), "do not fit this model"),
    "NaN pixels": (np.full((2, 28, 28), np.nan, np.float32), "NaN or infinite"),
    "infinite pixels": (np.full((2, 28, 28), np.inf, np.float32), "NaN or infinite"),
    "8-bit values": (np.full((2, 28, 28), 255, np.uint8), r"must lie in \[0, 1\]"),
    "negative values": (np.full((2, 28, 28), -1, np.float32), r"must lie in \[0, 1\]"),
    "grey pixels": (np.full((2, 28, 28), 0.5, np.float32), "needs binary pixels"),
    "no images": (np.zeros((0, 28, 28), np.float32), "no images given"),
    "object array": (np.array([{"a": 1}, None], dtype=object), "cannot read images"),
    "missing file": (None, "no images at"),
}


@pytest.mark.parametrize("case", IMAGES)
def test_bad_images(case, trained, tmp_path, capsys):
    array, message = IMAGES[case]
    path = str(tmp_path / "images.npy")
    if array is not None:
        np.save(path, array, allow_pickle=array.dtype == object)
    run = load_run(trained)
    with pytest.raises(DataError, match=message) as error:
        run.log_px(load_images(path), num_samples=5)
    assert_same_error(cli(capsys, "evaluate", trained, "--images", path, "--quiet"), error)


def test_good_images_are_scored(trained, tmp_path, capsys):
    path = str(tmp_path / "images.pt")
    torch.save(load_dataset("mnist-small", "static").test_x[:10], path)
    result = cli(capsys, "evaluate", trained, "--images", path, "-k", "10", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["count"] == 10 and metrics["elbo"] <= metrics["log_px"] + 1 < 0


def _payload(marker):
    class Payload:
        def __reduce__(self):
            return (open, (marker, "w"))

    return {"format": "pyro_vae.checkpoint", "x": Payload()}


def test_malicious_images_are_refused_without_running_them(trained, tmp_path, capsys):
    path, marker = str(tmp_path / "images.pt"), str(tmp_path / "payload-ran")
    with open(path, "wb") as f:
        pickle.dump(_payload(marker), f)
    with pytest.raises(DataError, match="refused: loading it could run code") as error:
        load_images(path)
    assert_same_error(cli(capsys, "evaluate", trained, "--images", path), error)
    assert not os.path.exists(marker)


def _tampered(good, **changes):
    """``good`` with ``changes``, written as a checkpoint with them would be (its checksum
    matching: the checks of the values are what is tested)."""
    from pyro_vae.checkpoints import DIGEST, save_checkpoint

    state = torch.load(io.BytesIO(good), weights_only=True)
    state.update(changes)
    buffer = io.BytesIO()
    save_checkpoint({k: v for k, v in state.items() if k != DIGEST}, buffer)
    return buffer.getvalue()


CHECKPOINTS = {
    "missing": (lambda good, marker: None, "no checkpoint at"),
    "truncated": (lambda good, marker: good[: len(good) // 2], "cannot read checkpoint"),
    "corrupt": (lambda good, marker: bytes(range(256)) * 40, "cannot read checkpoint"),
    "empty": (lambda good, marker: b"", "cannot read checkpoint"),
    "foreign": (lambda good, marker: _tampered(good, format="other"), "not a pyro_vae checkpoint"),
    "newer format": (
        lambda good, marker: _tampered(good, format_version=FORMAT_VERSION + 1),
        "upgrade pyro_vae",
    ),
    "another model's weights": (
        lambda good, marker: _tampered(
            good, config={**Config(**TINY_CONFIG).as_dict(), "z_dim": 6}
        ),
        "does not match its own config",
    ),
    "bad config": (
        lambda good, marker: _tampered(good, config={"z_dim": -1}),
        "holds a bad config",
    ),
    "malicious pickle": (
        lambda good, marker: pickle.dumps(_payload(marker)),
        "cannot read checkpoint .*refused: loading it could run code",
    ),
}


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_bad_checkpoints(case, trained, tmp_path, capsys):
    make, message = CHECKPOINTS[case]
    good = open(os.path.join(trained, "checkpoint.pt"), "rb").read()
    marker = str(tmp_path / "payload-ran")
    run = tmp_path / "run"
    run.mkdir()
    data = make(good, marker)
    if data is not None:
        (run / "checkpoint.pt").write_bytes(data)
    with pytest.raises(CheckpointError, match=message) as error:
        load_run(str(run))
    assert_same_error(cli(capsys, "evaluate", str(run), "--quiet"), error)
    assert_same_error(cli(capsys, "sample", str(run)), error)
    assert not os.path.exists(marker)  # the pickle's payload never ran
    assert os.listdir(run) == ([] if data is None else ["checkpoint.pt"])


TRAINING = {
    "grey pixels under a Bernoulli": ({"binarize": "none"}, DataError, "--binarize"),
    "split smaller than a batch": ({"batch_size": 4001}, ConfigError, "larger than the training"),
    "dataset not available offline": (
        {"dataset": "mnist"},
        DatasetUnavailableError,
        "mnist is not available",
    ),
}


@pytest.mark.parametrize("case", TRAINING)
def test_bad_training_setups(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYRO_VAE_DATA", str(tmp_path / "data"))
    changes, error_type, message = TRAINING[case]
    config = Config(**{**TINY_CONFIG, **changes})
    out = str(tmp_path / "run")
    with pytest.raises(error_type, match=message) as error:
        train_run(config, out, quiet=True)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in changes.items()]
    assert_same_error(cli(capsys, "train", *args, "--out", out, "--quiet"), error)
    assert not os.path.exists(out)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--z-dim", "0"], "--z-dim: expected a positive integer, got '0'"),
        (["train", "--hidden-dims", "64,-1"], "--hidden-dims: expected comma-separated"),
        (["train", "--epochs", "-2"], "--epochs: expected a positive integer"),
        (["train", "--batch-size", "0"], "--batch-size: expected a positive integer"),
        (["train", "--lr", "0"], "--lr: expected a positive number"),
        (["train", "--lr", "nan"], "--lr: expected a positive number"),
        (["train", "--lr-decay", "1.5"], "--lr-decay: expected a factor in (0, 1]"),
        (["train", "--lr-decay", "0"], "--lr-decay: expected a positive number"),
        (["train", "--activation", "tanh"], "--activation: invalid choice: 'tanh'"),
        (["train", "--clip-grad", "-1"], "--clip-grad: expected a positive number"),
        (["train", "--time-limit", "0"], "--time-limit: expected a positive number"),
        (["train", "--time-limit", "inf"], "--time-limit: expected a positive number"),
        (["compare", "--time-limit", "-5"], "--time-limit: expected a positive number"),
        (["train", "--num-particles", "0"], "--num-particles: expected a positive integer"),
        (["train", "--log-px-samples", "0"], "--log-px-samples: expected a positive integer"),
        (["train", "--checkpoint-every", "0"], "--checkpoint-every: expected a positive"),
        (["train", "--dataset", "cifar"], "--dataset: unknown dataset 'cifar'"),
        (["train", "--binarize", "maybe"], "--binarize: invalid choice: 'maybe'"),
        (["train", "--elbo", "renyi"], "--elbo: invalid choice: 'renyi'"),
        (["train", "--posterior", "flow"], "unrecognized arguments: --posterior flow"),
        (["evaluate", "run", "-k", "-5"], "--num-samples/-k: expected a positive integer"),
        (["evaluate", "run", "--elbo-samples", "0"], "--elbo-samples: expected a positive"),
        (["sample", "run", "--n", "0"], "--n: expected a positive integer"),
        (["gradvar", "run", "--progress", "x"], "--progress: expected comma-separated numbers"),
        (["train", "--exclude-classes", "-1"], "--exclude-classes: expected comma-separated class"),
    ],
)
def test_bad_values_are_one_line_usage_errors(args, message, capsys):
    result = cli(capsys, *args)
    assert result.returncode == 2
    assert_clean_error(result, message)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"z_dim": 0}, "z_dim must be a positive integer, got 0"),
        ({"epochs": -2}, "epochs must be a positive integer"),
        ({"lr": float("nan")}, "lr must be a positive number"),
        ({"clip_grad": 0}, "clip_grad must be a positive number or None"),
        ({"time_limit": -1}, "time_limit must be a positive number of seconds or None"),
        ({"time_limit": "1h"}, "time_limit must be a positive number of seconds or None"),
        ({"log_px_samples": 0}, "log_px_samples must be a positive integer"),
        ({"dataset": "cifar"}, "unknown dataset 'cifar'"),
        ({"guide": "flow"}, "unknown config keys: guide"),
        ({"lr_decay": 2}, r"lr_decay must be a number in \(0, 1\]"),
        ({"net": "conv", "activation": "relu"}, "the conv networks use LeakyReLU"),
    ],
)
def test_bad_settings_in_a_config_file(settings, message, tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**Config(**TINY_CONFIG).as_dict(), **settings}))
    out = str(tmp_path / "run")
    with pytest.raises(ConfigError, match=message) as error:
        Config.from_dict(json.loads(path.read_text()))
    assert_same_error(cli(capsys, "train", "--config", str(path), "--out", out), error)
    assert not os.path.exists(out)


def test_api_refuses_zero_counts(trained):
    run = load_run(trained)
    for call, name in [
        (lambda: run.log_px(torch.zeros(1, 28, 28), num_samples=0), "num_samples"),
        (lambda: run.elbo(torch.zeros(1, 28, 28), num_samples=-1), "num_samples"),
        (lambda: run.sample(0), "n must be a positive integer"),
    ]:
        with pytest.raises(ConfigError, match=name):
            call()


def test_an_existing_run_dir_is_left_alone(trained, capsys):
    before = {n: open(os.path.join(trained, n), "rb").read() for n in os.listdir(trained)}
    with pytest.raises(RunDirError, match="--overwrite") as error:
        train_run(Config(**TINY_CONFIG), trained)
    assert_same_error(cli(capsys, "train", "--out", trained, "--quiet"), error)
    assert {n: open(os.path.join(trained, n), "rb").read() for n in os.listdir(trained)} == before


COMPARE_TINY = [
    "--num-images",
    "30",
    "--e-steps",
    "10",
    "--refine-steps",
    "3",
    "--elbo-samples",
    "5",
    "--mcmc-images",
    "2",
    "--mcmc-samples",
    "10",
    "--mcmc-warmup",
    "10",
]


@pytest.mark.slow  # trains and compares from scratch; test_compare_on_a_trained_run covers the path
def test_compare_trains_then_compares_a_2d_model(tmp_path):
    out = str(tmp_path / "cmp")
    result = pyro_vae(
        "compare",
        *TINY,
        "--z-dim",
        "2",
        "--grid-points",
        "40",
        "--grid-lim",
        "6",
        *COMPARE_TINY,
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    assert "amortization: L[q*] − L[q_amortized]" in result.stdout
    names = set(os.listdir(out))
    assert {"comparison.json", "comparison.md", "strategies.png", "e-step.png"} <= names
    assert {"posteriors.png", "run"} <= names
    saved = json.load(open(os.path.join(out, "comparison.json")))
    assert saved["grid"]["lim"] == 6.0
    assert [r["strategy"] for r in saved["rows"]] == [
        "amortized",
        "local",
        "semi-amortized",
        "delta",
    ]
    assert saved["gaps"]["log_px"] == "exact (grid quadrature)" and saved["mcmc"]["images"] == 2


def test_compare_on_a_trained_run(trained, tmp_path, capsys):
    out = str(tmp_path / "cmp")
    args = ["compare", "--run", trained, "--strategies", "amortized,local,mcmc", "--quiet"]
    result = cli(capsys, *args, *COMPARE_TINY, "--log-px-samples", "10", "--out", out)
    assert result.returncode == 0, result.stderr
    saved = json.load(open(os.path.join(out, "comparison.json")))
    assert [r["strategy"] for r in saved["rows"]] == ["amortized", "local"]
    assert saved["gaps"]["log_px_samples"] == 10 and saved["z_dim"] == 4
    assert os.path.exists(os.path.join(out, "posteriors.png"))
    assert_clean_error(cli(capsys, *args, "--out", out), "--overwrite")
    assert_clean_error(
        cli(capsys, "compare", "--run", trained, "--strategies", "gibbs", "--out", out + "2"),
        "unknown --strategies gibbs",
    )


# The model family from the command line: each variant trains, evaluates and samples.


def test_label_cvae_samples_one_row_per_class_or_one_label(tmp_path, capsys):
    out = str(tmp_path / "cvae")
    result = cli(capsys, "train", *TINY, "--condition", "label", "--learned-prior", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "log p(x | label)" in result.stdout and "label effect" in result.stdout
    effect = json.load(open(os.path.join(out, "metrics.json")))["label_effect"]
    assert 0 <= effect <= 1
    stderr = {}
    for args in (["--label", "3", "--n", "8"], []):
        result = cli(capsys, "sample", out, *args)
        assert result.returncode == 0, result.stderr
        assert os.path.getsize(result.stdout.strip()) > 1000
        stderr[bool(args)] = result.stderr
    note = "the samples barely depend on the label"
    assert (note in stderr[True]) == (effect < 0.5) and note not in stderr[False]
    result = cli(capsys, "sample", out, "--label", "3", "--quiet", "--out", str(tmp_path / "q.png"))
    assert result.returncode == 0 and result.stderr == ""
    assert_clean_error(
        cli(capsys, "sample", out, "--label", "12"), "labels must be integers from 0 to 9"
    )
    metrics = json.loads(cli(capsys, "evaluate", out, "-k", "5", "--json", "--quiet").stdout)
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
    assert "a Normal density of pixels" in result.stdout  # the score names what it measures
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


def test_model_file_trains_and_inspects(tmp_path, capsys):
    spec = os.path.join(ROOT, "examples", "gmm_prior_vae.py") + ":GMMPriorVAE"
    out = str(tmp_path / "mine")
    result = cli(capsys, "train", *TINY, "--model", spec, "--out", out)
    assert result.returncode == 0, result.stderr
    assert load_run(out).sample(3).shape == (3, 1, 28, 28)
    # The file's Bernoulli "x" makes log p(x) a probability, though the file names no likelihood.
    assert json.load(open(os.path.join(out, "metrics.json")))["measures"] == (
        "log p(x) of binary images"
    )
    diagram = "none" if shutil.which("dot") is None else str(tmp_path / "model.png")
    result = cli(capsys, "inspect", spec, "--z-dim", "3", "--diagram", diagram)
    assert result.returncode == 0, result.stderr
    assert "MixtureSameFamily" in result.stdout and "(1, 28, 28)" in result.stdout
    if diagram != "none":
        assert os.path.getsize(diagram) > 1000


PLAIN_FUNCTIONS = """
import pyro, pyro.distributions as dist, torch
from torch import nn

decoder = nn.Sequential(nn.Linear(3, 32), nn.Softplus(), nn.Linear(32, 784))
encoder = nn.Sequential(nn.Linear(784, 32), nn.Softplus(), nn.Linear(32, 6))

def model(x):
    pyro.module("decoder", decoder)
    with pyro.plate("batch", x.shape[0]):
        h = pyro.sample("h", dist.Normal(torch.zeros(3), 1.0).to_event(1))
        pyro.sample("pixels", dist.Bernoulli(logits=decoder(h)).to_event(1), obs=x)

def guide(x):
    pyro.module("encoder", encoder)
    with pyro.plate("batch", x.shape[0]):
        loc, log_scale = encoder(x).chunk(2, -1)
        pyro.sample("h", dist.Normal(loc, log_scale.exp()).to_event(1))
"""


# No warning reaches the user either (NUTS froze a plain program's modules, and pyro.module
# warned of each frozen parameter).
@pytest.mark.filterwarnings("error::UserWarning")
@pytest.mark.parametrize("style", ["methods of an nn.Module", "module-level functions"])
def test_every_command_runs_on_a_plain_pyro_program(style, tmp_path, capsys):
    """The door keeps every command open to programs written as Pyro's docs write them."""
    if style == "methods of an nn.Module":
        spec = os.path.join(ROOT, "examples", "pyro_style_vae.py") + ":VAE"
    else:
        (tmp_path / "plain.py").write_text(PLAIN_FUNCTIONS)
        spec = str(tmp_path / "plain.py")
    out = str(tmp_path / "run")
    result = cli(capsys, "train", *TINY, "--model", spec, "--out", out)
    assert result.returncode == 0, result.stderr
    files = set(os.listdir(out))
    assert {"samples.png", "reconstructions.png", "latent.png", "metrics.json"} <= files
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["measures"] == "log p(x) of binary images"
    assert -600 < metrics["test_log_px"] < 0
    result = cli(capsys, "evaluate", out, "-k", "10")
    assert result.returncode == 0, result.stderr
    result = cli(capsys, "sample", out, "--n", "4", "--out", str(tmp_path / "s.png"))
    assert result.returncode == 0 and os.path.getsize(tmp_path / "s.png") > 0, result.stderr
    result = cli(capsys, "inspect", spec, "--z-dim", "3", "--diagram", "none")
    assert result.returncode == 0, result.stderr
    assert "not subsampled: pyro_vae scales each minibatch" in result.stdout
    result = cli(
        capsys,
        "compare",
        "--run",
        out,
        "--out",
        str(tmp_path / "cmp"),
        "--num-images",
        "20",
        "--e-steps",
        "5",
        "--refine-steps",
        "2",
        "--mcmc-images",
        "1",
        "--mcmc-samples",
        "10",
        "--mcmc-warmup",
        "10",
        "--log-px-samples",
        "10",
        "--elbo-samples",
        "2",
    )
    assert result.returncode == 0, result.stderr
    rows = json.load(open(tmp_path / "cmp" / "comparison.json"))["rows"]
    assert {r["strategy"] for r in rows} >= {"amortized", "local", "semi-amortized", "delta"}


@pytest.fixture(scope="module")
def trained_without_ones(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("cli") / "no1")
    result = pyro_vae("train", *TINY, "--exclude-classes", "1", "--out", out)
    assert result.returncode == 0, result.stderr
    assert json.load(open(os.path.join(out, "config.json")))["exclude_classes"] == [1]
    return out


def test_gradvar(trained_without_ones, tmp_path, capsys):
    out = str(tmp_path / "gv")
    args = ["--draws", "3", "--particles", "1,2", "--batch-size", "4", "--quiet", "--out", out]
    result = cli(capsys, "gradvar", trained_without_ones, *args)
    assert result.returncode == 0, result.stderr
    assert "score-nn-baseline" in result.stdout
    rows = json.load(open(os.path.join(out, "gradvar.json")))["rows"]
    # 5 estimators x 2 particle counts x 2 stages (untrained, the run itself)
    assert len(rows) == 20 and {r["stage"] for r in rows} == {"epoch 0", "trained (1 epoch)"}
    assert os.path.getsize(os.path.join(out, "gradvar.png")) > 1000
    assert_clean_error(cli(capsys, "gradvar", trained_without_ones, *args), "--overwrite")


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


def test_every_command_takes_quiet():
    from pyro_vae.cli import make_parser

    (commands,) = [a for a in make_parser()._actions if a.dest == "command"]
    for name, parser in commands.choices.items():
        options = {o for a in parser._actions for o in a.option_strings}
        assert "--quiet" in options, f"pyro-vae {name} has no --quiet"


@pytest.mark.parametrize("effect, noted", [(0.1, True), (0.8, False)])
def test_a_label_the_samples_ignore_gets_a_note(effect, noted, capsys):
    from pyro_vae.cli import _warn_if_label_ignored

    _warn_if_label_ignored(effect)
    err = capsys.readouterr().err
    assert ("the samples barely depend on the label" in err) == noted
    assert "--learned-prior" in err or not noted


def test_train_names_its_run_directory_first_and_ctrl_c_says_how_to_continue(
    capsys, tmp_path, monkeypatch
):
    import pyro_vae.runs

    calls = []

    def interrupted(config, data, out, state, *args, **kwargs):
        calls.append(out)
        if len(calls) > 1:  # a checkpoint, then Ctrl-C
            open(os.path.join(out, "checkpoint.pt"), "wb").close()
        raise KeyboardInterrupt

    monkeypatch.setattr(pyro_vae.runs, "_train", interrupted)
    out = str(tmp_path / "run")
    result = cli(capsys, "train", *TINY[:-1], "--out", out)
    lines = result.stderr.splitlines()
    assert result.returncode == 130 and "Traceback" not in result.stderr
    assert lines[0] == f"pyro-vae train: run directory {out}"
    # Stopped before its first checkpoint, the run is removed, and the line says so.
    assert lines[-1] == f"pyro-vae: interrupted; it had no checkpoint yet, so {out} was removed"
    assert not os.path.exists(out)
    result = cli(capsys, "train", *TINY[:-1], "--out", out)
    assert result.stderr.splitlines() == [
        f"pyro-vae train: run directory {out}",
        f"pyro-vae: interrupted; the run continues with: pyro-vae train --resume {out}",
    ]
    os.remove(os.path.join(out, "checkpoint.pt"))  # the stand-in: resume starts from config.json
    result = cli(capsys, "train", "--resume", out)
    assert result.stderr.splitlines() == [
        f"pyro-vae train: run directory {out}",
        f"pyro-vae: interrupted; the run continues with: pyro-vae train --resume {out}",
    ]


def test_the_demo_names_its_run_directory_in_its_first_line(capsys, tmp_path, monkeypatch):
    import pyro_vae.runs

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pyro_vae.runs, "_train", interrupted)
    out = str(tmp_path / "demo")
    result = cli(capsys, "demo", "--out", out)
    assert result.stdout.splitlines()[0].endswith(f", into {out}")
    assert result.stderr.splitlines()[-1].startswith("pyro-vae: interrupted; ")


def test_output_into_a_closed_pipe_ends_quietly(trained):
    """``pyro-vae evaluate RUN --json | head -c 1``: as Unix tools do, no error line."""
    child = subprocess.Popen(
        [sys.executable, "-m", "pyro_vae.cli", "evaluate", trained, "-k", "2", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    child.stdout.close()  # the reader is gone before the command prints
    err = child.stderr.read().decode()
    assert child.wait(timeout=300) == 141 and err == "", err


def test_ctrl_c_while_torch_imports_is_one_line():
    """The command's entry point imports the library inside its own try: Ctrl-C in the first
    seconds printed a 30-line KeyboardInterrupt traceback."""
    import signal
    import time

    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, pyro_vae_launcher; sys.exit(pyro_vae_launcher.main())"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": ROOT},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(0.3)  # inside `import torch`, which takes seconds
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 130, err
    assert err.decode().strip() == "pyro-vae: interrupted"


THREADED_MODEL = """
import threading, time
import pyro, pyro.distributions as dist
from torch import nn

threading.Thread(target=lambda: time.sleep(3600)).start()  # not a daemon: it held the process

dec, enc = nn.Linear(2, 784), nn.Linear(784, 4)

def model(x):
    pyro.module("dec", dec)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=dec(z)).to_event(1), obs=x.flatten(1))

def guide(x):
    pyro.module("enc", enc)
    with pyro.plate("data", x.shape[0]):
        loc, s = enc(x.flatten(1)).chunk(2, -1)
        pyro.sample("z", dist.Normal(loc, s.exp()).to_event(1))
"""


def test_a_model_files_thread_does_not_keep_the_finished_command_alive(tmp_path):
    (tmp_path / "threaded.py").write_text(THREADED_MODEL)
    out = str(tmp_path / "run")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, pyro_vae_launcher; sys.exit(pyro_vae_launcher.main())",
            "train",
            "--model",
            str(tmp_path / "threaded.py"),
            *TINY,
            "--out",
            out,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=600,  # the thread sleeps an hour
    )
    assert result.returncode == 0, result.stderr
    assert "test log p(x)" in result.stdout and os.path.exists(os.path.join(out, "metrics.json"))


def _parsed_config(*argv):
    from pyro_vae.cli import _config_from_args, _config_from_file, make_parser

    args = make_parser().parse_args(list(argv))
    args.argv = list(argv)
    return _config_from_file(args) if args.config else _config_from_args(args)


def test_train_takes_each_models_recipe_where_its_settings_are_not_given(tmp_path):
    """The short command runs the recipe docs/guide/discrete.md measured; each setting given
    wins, --alpha 0 --labelled-share none is the textbook M2, and a run's config.json keeps the
    values used, so --config reproduces it."""
    m2 = _parsed_config("train", "--model", "m2", "--labels", "100")
    assert (m2.alpha, m2.labelled_share, m2.z_dim, m2.hidden_dims) == (46, 0.34, 16, (256,))
    textbook = _parsed_config(
        "train", "--model", "m2", "--labels", "100", "--alpha", "0", "--labelled-share", "none"
    )
    assert (textbook.alpha, textbook.labelled_share, textbook.z_dim) == (0, None, 16)
    vae = _parsed_config("train")
    assert (vae.z_dim, vae.hidden_dims, vae.learned_prior) == (50, (400,), False)
    assert _parsed_config("train", "--condition", "label").learned_prior
    assert not _parsed_config("train", "--condition", "label", "--no-learned-prior").learned_prior
    assert _parsed_config("train", "--condition", "label", "--learned-prior").learned_prior
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps(textbook.as_dict()))
    assert _parsed_config("train", "--config", str(saved)) == textbook
    again = _parsed_config("train", "--config", str(saved), "--z-dim", "8")
    assert (again.alpha, again.labelled_share, again.z_dim) == (0, None, 8)


def test_train_help_states_each_recipe_default(capsys):
    result = cli(capsys, "train", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "(default: 50; 16 for --model m2; a model file's constructor's own)" in text
    assert "(default: meanfield; trace for --model hierarchical)" in text
    assert "(default: 0; 46 for --model m2)" in text
    assert "(default: none; 0.34 for --model m2)" in text
    assert "(default: off; on for --condition label)" in text


def test_sample_label_draws_a_class_of_an_m2_run_and_refuses_one_outside(tmp_path, capsys):
    out = str(tmp_path / "m2")
    result = cli(capsys, "train", *TINY, "--model", "m2", "--labels", "20", "--out", out)
    assert result.returncode == 0, result.stderr
    png = str(tmp_path / "three.png")
    result = cli(capsys, "sample", out, "--label", "3", "--n", "4", "--out", png)
    assert result.returncode == 0 and os.path.exists(png), result.stderr
    result = cli(capsys, "sample", out, "--label", "11", "--out", str(tmp_path / "x.png"))
    assert result.returncode == 1 and "labels must be integers from 0 to 9" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
