"""``pyro-vae train --resume``: a run killed with SIGKILL, at any point, and resumed ends with
exactly the parameters of the run that was never interrupted; ``--config`` reproduces a run."""

import contextlib
import json
import os
import random
import signal
import subprocess
import sys

import pytest
import torch

from pyro_vae.cli import _config_from_file, main, make_parser
from pyro_vae.config import Config
from pyro_vae.errors import CheckpointError
from pyro_vae.runs import resume_run
from tests.test_cli import ROOT, assert_clean_error, cli, pyro_vae

# 4,000 images in batches of 500: 8 steps per epoch. With a checkpoint every 3 steps the writes of
# checkpoint.pt are (epochs done, steps done) = (0, 3) (0, 6) (1, 0) (1, 3) (1, 6) (2, 0).
SETTINGS = ["--z-dim", "4", "--hidden-dims", "32", "--epochs", "2", "--batch-size", "500"]
SETTINGS += ["--log-px-samples", "20", "--seed", "3"]
OPTIONS = ["--quiet", "--checkpoint-every", "3"]


def checkpoint(run):
    return torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)


def read_json(run, name):
    with open(os.path.join(run, name)) as f:
        return json.load(f)


def assert_same_run(run, reference):
    """Bit-identical model, guide and optimizer state, loss trace and final metrics."""
    ours, theirs = checkpoint(run), checkpoint(reference)
    assert (ours["epoch"], ours["step"]) == (theirs["epoch"], theirs["step"]) == (2, 0)
    for part in ("model", "guide"):
        assert ours[part].keys() == theirs[part].keys()
        for name, value in theirs[part].items():
            assert torch.equal(ours[part][name], value), (part, name)
    assert len(ours["optimizer"]) == len(theirs["optimizer"])  # one entry per optimizer
    for mine, reference_state in zip(ours["optimizer"], theirs["optimizer"]):
        for i, state in reference_state["optimizer"]["state"].items():
            for key, value in state.items():
                assert torch.equal(mine["optimizer"]["state"][i][key], value), (i, key)
    for name in ("train_elbo", "test_elbo"):
        assert read_json(run, "history.json")[name] == read_json(reference, "history.json")[name]
    ours, theirs = read_json(run, "metrics.json"), read_json(reference, "metrics.json")
    for key in ("train_elbo", "test_elbo", "test_log_px"):
        assert ours[key] == theirs[key], key
    assert not [name for name in os.listdir(run) if name.endswith(".tmp")]


def kill_when_paused(args, pause):
    """Start ``pyro-vae ARGS`` with the testing hook that pauses it in a write; SIGKILL it there."""
    env = {**os.environ, "PYTHONPATH": ROOT, "PYRO_VAE_TEST_PAUSE_IN_WRITE": pause}
    child = subprocess.Popen(
        [sys.executable, "-m", "pyro_vae.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        said = []
        while not said or "paused in write" not in said[-1]:
            said.append(child.stderr.readline())
            assert said[-1], f"the run ended without pausing at {pause}: {''.join(said)}"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The run that is never interrupted."""
    out = str(tmp_path_factory.mktemp("reference") / "run")
    result = pyro_vae("train", *SETTINGS, *OPTIONS, "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def test_killed_at_every_kind_of_point_and_resumed_gives_the_same_run(reference, tmp_path):
    run = str(tmp_path / "run")
    # Killed inside the first checkpoint write: there is no checkpoint yet, only config.json and a
    # half-written temporary file, so --resume starts over from the config.
    kill_when_paused(["train", *SETTINGS, *OPTIONS, "--out", run], "checkpoint.pt:1")
    assert not os.path.exists(os.path.join(run, "checkpoint.pt"))
    assert [n for n in os.listdir(run) if n.endswith(".tmp")]
    # Each resume is killed inside a later write; each time the checkpoint before it must be
    # intact, and the next resume replays the steps since then.
    for pause, kept in [("checkpoint.pt:3", (0, 6)), ("checkpoint.pt:2", (1, 0))]:
        kill_when_paused(["train", "--resume", run, *OPTIONS], pause)
        assert (checkpoint(run)["epoch"], checkpoint(run)["step"]) == kept
    # Killed after training, while writing the metrics: the final checkpoint is in place.
    kill_when_paused(["train", "--resume", run, *OPTIONS], "metrics.json:1")
    assert not os.path.exists(os.path.join(run, "metrics.json"))
    result = pyro_vae("train", "--resume", run, "--quiet")
    assert result.returncode == 0, result.stderr
    assert_same_run(run, reference)


def test_config_json_reproduces_the_run(reference, tmp_path, capsys):
    again = str(tmp_path / "again")
    assert main(["train", "--config", reference, *OPTIONS, "--out", again]) == 0
    assert read_json(again, "config.json") == read_json(reference, "config.json")
    assert_same_run(again, reference)


def test_options_given_with_config_override_the_file(reference):
    config = os.path.join(reference, "config.json")
    argv = ["train", "--config", config, "--epochs", "1", "--seed", "0", "--clip-grad", "5"]
    args = make_parser().parse_args(argv)
    args.argv = argv
    expected = {**read_json(reference, "config.json"), "epochs": 1, "seed": 0, "clip_grad": 5.0}
    assert _config_from_file(args) == Config.from_dict(expected)


@pytest.mark.slow
def test_killed_at_random_moments_and_resumed_gives_the_same_run(reference, tmp_path):
    """Wall-clock kills, wherever they land: in a step, a write, the evaluation, the figures."""
    run = str(tmp_path / "run")
    rng = random.Random(0)
    args = ["train", *SETTINGS, *OPTIONS, "--out", run]
    env = {**os.environ, "PYTHONPATH": ROOT}
    kills = 0
    while True:
        child = subprocess.Popen([sys.executable, "-m", "pyro_vae.cli", *args], env=env)
        try:
            child.wait(timeout=rng.uniform(3, 12))
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait()
        if child.returncode == 0:
            break
        assert child.returncode == -signal.SIGKILL
        kills += 1
        assert kills < 30, "the run never finished: use longer delays"
        if os.path.exists(os.path.join(run, "config.json")):
            args = ["train", "--resume", run, *OPTIONS]
    assert kills > 0, "never killed: use shorter delays"
    assert_same_run(run, reference)


def test_resume_refuses_what_it_cannot_continue(reference, tmp_path, capsys):
    run = str(tmp_path / "run")
    assert_clean_error(cli(capsys, "train", "--resume", run), "no config file at")
    assert_clean_error(
        cli(capsys, "train", "--resume", reference, "--lr", "0.1"), "takes no --lr; to change"
    )
    os.makedirs(run)
    with open(os.path.join(run, "config.json"), "w") as f:
        json.dump({**read_json(reference, "config.json"), "z_dim": 5}, f)
    with open(os.path.join(reference, "checkpoint.pt"), "rb") as f:
        data = f.read()
    with open(os.path.join(run, "checkpoint.pt"), "wb") as f:
        f.write(data)
    before = {name: open(os.path.join(run, name), "rb").read() for name in os.listdir(run)}
    assert_clean_error(
        cli(capsys, "train", "--resume", run), "different configuration than config.json (z_dim 4"
    )
    with pytest.raises(CheckpointError, match="different configuration than config.json"):
        resume_run(run)
    assert {name: open(os.path.join(run, name), "rb").read() for name in os.listdir(run)} == before


class _Stop(BaseException):
    """Stands in for a kill: nothing in pyro_vae catches it."""


@contextlib.contextmanager
def stopped_after_writes(m, count):
    """The process stopped (:class:`_Stop`, in place of a kill) in the block, right after
    pyro_vae's ``count``-th checkpoint write; ``m`` is a ``pytest.MonkeyPatch``."""
    import pyro_vae.runs

    write, writes = pyro_vae.runs._atomic_write, []

    def write_then_stop(file, save):
        write(file, save)
        writes.append(file)
        if len(writes) == count:
            raise _Stop

    m.setattr(pyro_vae.runs, "_atomic_write", write_then_stop)
    try:
        with pytest.raises(_Stop):
            yield
    finally:
        m.setattr(pyro_vae.runs, "_atomic_write", write)


def test_a_time_limited_run_stops_early_is_finished_and_resumes_exactly(tmp_path, capsys):
    import pyro_vae.train

    clock = [0.0]

    def tick():  # a fake clock for fit: one second per reading, two readings per epoch
        clock[0] += 1.0
        return clock[0]

    fake = type("Time", (), {"perf_counter": staticmethod(tick)})
    args = [*SETTINGS[:5], "6", *SETTINGS[6:], "--time-limit", "7", "--quiet"]
    reference, run = str(tmp_path / "reference"), str(tmp_path / "run")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(pyro_vae.train, "time", fake)
        result = cli(capsys, "train", *args, "--out", reference)
        assert result.returncode == 0 and "(time limit 7 s)" in result.stdout, result.stdout
        epochs = read_json(reference, "metrics.json")["epochs"]
        assert 1 < epochs < 6  # stopped by the limit, not by --epochs
        assert read_json(reference, "config.json")["time_limit"] == 7.0
        assert len(read_json(reference, "history.json")["epoch"]) == epochs
        assert checkpoint(reference)["epoch"] == epochs
        # a finished run: evaluate does not call it unfinished, --resume trains nothing more
        result = cli(capsys, "evaluate", reference, "-k", "5")
        assert result.returncode == 0 and "stopped after" not in result.stdout, result.stdout
        before = open(os.path.join(reference, "checkpoint.pt"), "rb").read()
        assert cli(capsys, "train", "--resume", reference, "--quiet").returncode == 0
        assert open(os.path.join(reference, "checkpoint.pt"), "rb").read() == before

        # killed after its second epoch's checkpoint, then resumed: the same epochs, bit for bit
        with stopped_after_writes(m, 2):
            cli(capsys, "train", *args, "--out", run)
        assert checkpoint(run)["epoch"] == 2
        assert cli(capsys, "train", "--resume", run, "--quiet").returncode == 0
    assert read_json(run, "metrics.json")["epochs"] == epochs
    ours, theirs = checkpoint(run), checkpoint(reference)
    for part in ("model", "guide"):
        for name, value in theirs[part].items():
            assert torch.equal(ours[part][name], value), (part, name)
