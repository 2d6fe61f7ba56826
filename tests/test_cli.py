"""Each command runs as a user would run it: a subprocess, tiny sizes."""

import io
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_vae import load_run
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
    ],
)
def test_bad_arguments_are_usage_errors(args):
    result = pyro_vae(*args)
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


def _tampered(good, **changes):
    state = torch.load(io.BytesIO(good), weights_only=True)
    state.update(changes)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


CHECKPOINTS = {
    "missing": (lambda good, marker: None, "no checkpoint at"),
    "truncated": (lambda good, marker: good[: len(good) // 2], "cannot read checkpoint"),
    "corrupt": (lambda good, marker: bytes(range(256)) * 40, "cannot read checkpoint"),
    "empty": (lambda good, marker: b"", "cannot read checkpoint"),
    "foreign": (lambda good, marker: _tampered(good, format="other"), "not a pyro_vae checkpoint"),
    "newer format": (lambda good, marker: _tampered(good, format_version=3), "upgrade pyro_vae"),
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
        "cannot read checkpoint",
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
        (["train", "--clip-grad", "-1"], "--clip-grad: expected a positive number"),
        (["train", "--num-particles", "0"], "--num-particles: expected a positive integer"),
        (["train", "--log-px-samples", "0"], "--log-px-samples: expected a positive integer"),
        (["train", "--checkpoint-every", "0"], "--checkpoint-every: expected a positive"),
        (["train", "--dataset", "cifar"], "--dataset: invalid choice: 'cifar'"),
        (["train", "--binarize", "maybe"], "--binarize: invalid choice: 'maybe'"),
        (["train", "--elbo", "renyi"], "--elbo: invalid choice: 'renyi'"),
        (["train", "--guide", "flow"], "unrecognized arguments: --guide flow"),
        (["evaluate", "run", "-k", "-5"], "--num-samples/-k: expected a positive integer"),
        (["evaluate", "run", "--elbo-samples", "0"], "--elbo-samples: expected a positive"),
        (["sample", "run", "--n", "0"], "--n: expected a positive integer"),
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
        ({"log_px_samples": 0}, "log_px_samples must be a positive integer"),
        ({"dataset": "cifar"}, "unknown dataset 'cifar'"),
        ({"guide": "flow"}, "unknown config keys: guide"),
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
