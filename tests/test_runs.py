import json
import os
import pickle

import pytest
import torch

from pyro_vae import load_run
from pyro_vae.config import Config
from pyro_vae.errors import CheckpointError, ConfigError, DataError, RunDirError
from pyro_vae.runs import train_run

TINY = dict(z_dim=4, hidden_dims=(32,), epochs=1, batch_size=200, log_px_samples=20)
METRIC_KEYS = {
    "dataset",
    "epochs",
    "seconds",
    "train_elbo",
    "test_elbo",
    "test_log_px",
    "log_px_samples",
}

RUN_FILES = {
    "config.json",
    "checkpoint.pt",
    "metrics.json",
    "history.json",
    "samples.png",
    "reconstructions.png",
    "latent.png",
    "training-curve.png",
}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("runs") / "tiny")
    train_run(Config(**TINY), out, quiet=True)
    return out


def test_run_directory_contents(run_dir):
    names = set(os.listdir(run_dir))
    assert RUN_FILES <= names
    assert not [n for n in names if n.endswith(".tmp")]
    metrics = json.load(open(os.path.join(run_dir, "metrics.json")))
    assert METRIC_KEYS <= set(metrics)
    assert metrics["dataset"] == "mnist-small" and metrics["log_px_samples"] == 20
    assert metrics["test_elbo"] <= metrics["test_log_px"] + 1.0  # IWAE tightens the ELBO
    assert Config.from_dict(json.load(open(os.path.join(run_dir, "config.json")))) == Config(**TINY)


def test_checkpoint_is_plain_tensors(run_dir):
    state = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=True)
    assert state["format"] == "pyro_vae.checkpoint"
    assert state["x_shape"] == [1, 28, 28]


def test_load_run_api(run_dir):
    run = load_run(run_dir)
    x = torch.bernoulli(torch.rand(6, 28, 28))
    assert run.elbo(x).shape == (6,)
    log_px = run.log_px(x, num_samples=50)
    assert log_px.shape == (6,) and torch.isfinite(log_px).all()
    loc, scale = run.encode(x)
    assert loc.shape == scale.shape == (6, 4) and (scale > 0).all()
    images = run.decode(loc)
    assert images.shape == (6, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert run.sample(3, seed=1).shape == (3, 1, 28, 28)
    assert torch.equal(run.sample(3, seed=1), run.sample(3, seed=1))


def test_load_run_api_refuses_bad_input(run_dir):
    run = load_run(run_dir)
    with pytest.raises(DataError, match="binary"):
        run.elbo(torch.rand(2, 28, 28))
    with pytest.raises(DataError, match="do not fit"):
        run.elbo(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ConfigError, match="num_samples"):
        run.log_px(torch.zeros(2, 28, 28), num_samples=0)


def test_existing_run_dir_is_not_overwritten(run_dir):
    before = open(os.path.join(run_dir, "metrics.json")).read()
    with pytest.raises(RunDirError, match="--overwrite"):
        train_run(Config(**TINY), run_dir, quiet=True)
    assert open(os.path.join(run_dir, "metrics.json")).read() == before


def test_missing_and_corrupt_checkpoints(tmp_path, run_dir):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_run(str(tmp_path))
    data = open(os.path.join(run_dir, "checkpoint.pt"), "rb").read()
    (tmp_path / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_run(str(tmp_path))
    torch.save({"hello": torch.zeros(1)}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="not a pyro_vae checkpoint"):
        load_run(str(tmp_path))


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "checkpoint.pt", "wb") as f:
        pickle.dump({"format": "pyro_vae.checkpoint", "x": _Payload(str(marker))}, f)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_run(str(tmp_path))
    assert not marker.exists()
