import json
import os
import pickle
import shutil

import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from pyro_vae import load_run
from pyro_vae.checkpoints import DIGEST, save_checkpoint
from pyro_vae.config import Config
from pyro_vae.errors import CheckpointError, ConfigError, DataError, DivergenceError, RunDirError
from pyro_vae.runs import resume_run, train_run
from tests.test_checkpoints import _fail_halfway

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


class _NaNAfter(TraceMeanField_ELBO):
    """An ELBO that turns NaN after ``steps`` evaluations, as a diverging run's would."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def differentiable_loss(self, model, guide, *args, **kwargs):
        self.steps -= 1
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        return loss if self.steps >= 0 else loss * float("nan")


def test_divergence_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch
):
    out = str(tmp_path / "run")
    monkeypatch.setattr(
        Config, "make_elbo", lambda self, *args: _NaNAfter(24)
    )  # 20 steps per epoch
    with pytest.raises(
        DivergenceError,
        match=r"the ELBO became nan at epoch 2, step 5; try a lower learning rate \(--lr\), "
        r"gradient clipping \(--clip-grad\) or a KL warm-up; the last good checkpoint, from epoch "
        r"2, step 4, stays in .*checkpoint.pt",
    ):
        train_run(Config(**{**TINY, "epochs": 2}), out, quiet=True, checkpoint_every=3)
    state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 4)  # global step 24
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert load_run(out).elbo(torch.zeros(1, 28, 28)).isfinite().all()
    assert not [name for name in os.listdir(out) if name.endswith(".tmp")]


def test_a_full_disk_while_checkpointing_is_a_clean_error(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    writes = []

    def torch_save(obj, f):
        writes.append(obj["step"])
        if len(writes) == 2:
            _fail_halfway(f)
        original(obj, f)

    original = torch.save
    monkeypatch.setattr(torch, "save", torch_save)
    with pytest.raises(RunDirError, match="No space left on device.*--resume"):
        train_run(Config(**TINY), out, quiet=True, checkpoint_every=2)
    assert sorted(os.listdir(out)) == ["checkpoint.pt", "config.json"]
    monkeypatch.undo()
    assert torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)["step"] == 2


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda out: os.remove(os.path.join(out, "config.json")), RunDirError, "no config file"),
        (lambda out: _write(out, "config.json", b"{"), ConfigError, "cannot read .*config.json"),
        (lambda out: _write(out, "config.json", b"[]"), ConfigError, "not .* JSON object"),
        (
            lambda out: _write(out, "config.json", b'{"epochs": 0}'),
            ConfigError,
            "epochs must be a positive integer, got 0",
        ),
        (
            lambda out: _write(out, "config.json", b'{"guide": "flow"}'),
            ConfigError,
            "unknown config keys: guide",
        ),
        (lambda out: _resave(out, format_version=99), CheckpointError, "newer than this"),
        (lambda out: _resave(out, optimizer=None, keep=False), CheckpointError, "no training"),
    ],
    ids=[
        "no config",
        "bad JSON",
        "not an object",
        "bad setting",
        "unknown setting",
        "newer format",
        "no training state",
    ],
)
def test_resume_refuses_a_broken_run_dir(run_dir, tmp_path, make, error, message):
    out = str(tmp_path / "copy")
    shutil.copytree(run_dir, out)
    make(out)
    before = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)}
    with pytest.raises(error, match=message):
        resume_run(out)
    assert {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)} == before


def _write(out, name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def _resave(out, keep=True, **changes):
    file = os.path.join(out, "checkpoint.pt")
    state = torch.load(file, weights_only=True)
    state.update(changes)
    if not keep:
        state = {k: v for k, v in state.items() if k not in changes}
    with open(file, "wb") as f:  # as a writer with these contents would (its checksum matching)
        save_checkpoint({k: v for k, v in state.items() if k != DIGEST}, f)


def test_resuming_a_finished_run_evaluates_it_again(run_dir, tmp_path):
    out = str(tmp_path / "copy")
    shutil.copytree(run_dir, out)
    os.remove(os.path.join(out, "metrics.json"))
    before = open(os.path.join(out, "checkpoint.pt"), "rb").read()
    _, metrics = resume_run(out, quiet=True)
    assert metrics == {
        **json.load(open(os.path.join(run_dir, "metrics.json"))),
        **_timings(metrics),
    }
    assert open(os.path.join(out, "checkpoint.pt"), "rb").read() == before


def _timings(metrics):
    return {k: v for k, v in metrics.items() if "seconds" in k}


def test_completion_reconstructions_keep_the_observed_quadrants(tmp_path, monkeypatch):
    import pyro_vae
    from pyro_vae import plots, runs

    config = Config(z_dim=2, hidden_dims=(8,), condition="quadrants:2")
    data = runs.load_run_data(config)
    model, guide = pyro_vae.build(config, data.x_shape)  # untrained: noise wherever it decodes
    run = pyro_vae.Run(config, model, guide, data.x_shape, path=str(tmp_path))
    shown = {}
    monkeypatch.setattr(
        plots, "reconstructions", lambda x, r, path, title: shown.update(x=x, r=r, title=title)
    )
    runs.write_figures(run, data, {"epoch": [1], "train_elbo": [-1.0], "test_elbo": [-1.0]})
    observed = model.condition.observed.expand_as(shown["x"])
    assert torch.equal(shown["r"][observed], shown["x"][observed])
    assert not torch.equal(shown["r"][~observed], shown["x"][~observed])
    assert "observed quadrants as given" in shown["title"]


PROGRAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "programs")


@pytest.mark.parametrize(
    "settings",
    [
        dict(model="m2", labels=20),
        dict(model=os.path.join(PROGRAMS, "ss_vae.py:make"), labels=20),
        dict(model=os.path.join(PROGRAMS, "ss_vae.py:make_indices"), labels=20),
        dict(condition="label"),
    ],
    ids=["m2", "model file, one-hot class site", "model file, index class site", "label CVAE"],
)
def test_sample_draws_the_given_class_of_every_run_that_generates_per_class(settings, tmp_path):
    run, _ = train_run(Config.recipe(**TINY, **settings), str(tmp_path / "run"), quiet=True)
    three = run.sample(4, seed=0, y=3)
    assert three.shape == (4, *run.x_shape)
    assert torch.equal(three, run.sample(4, seed=0, y=torch.full((4,), 3)))
    assert not torch.equal(three, run.sample(4, seed=0, y=5))  # the class reaches the decoder
    with pytest.raises(DataError, match="labels must be integers from 0 to 9"):
        run.sample(4, y=11)


def test_sample_refuses_a_class_for_a_run_that_does_not_read_one(run_dir):
    run = load_run(run_dir)
    with pytest.raises(DataError, match="does not read y"):
        run.sample(10, y=3)
    assert run.sample(2, seed=0).shape == (2, *run.x_shape)
