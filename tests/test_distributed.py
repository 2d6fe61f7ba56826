"""Data-parallel training: two CPU processes (gloo) measured against one process.

The two-process run happens once, in a subprocess: ``python -m tests.test_distributed OUT`` trains
a tiny VAE on mnist-small through :func:`pyro_vae.distributed.train_run_distributed`, as
``pyro-vae train --devices 2 --accelerator cpu`` does, and each process saves what it saw: the
minibatch positions of every step, and for the first step the images, the initial weights and the
gradient after DDP's all-reduce. The tests then recompute that gradient in this process on the
concatenated minibatch. A second two-process run (``python -m tests.test_distributed em OUT``,
slow tests only) takes fit's alternating E and M steps, with a Delta guide around the amortized one.
"""

import copy
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO
from pyro.poutine.messenger import Messenger

from pyro_vae import load_run
from pyro_vae.checkpoints import DIGEST, read_checkpoint
from pyro_vae.config import Config, build
from pyro_vae.data import Data, load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.guides import DeltaGuide, LocalGuide
from pyro_vae.runs import Run, evaluate_run
from pyro_vae.train import STATE_KEYS, fit
from tests.conftest import assert_close
from tests.test_cli import ROOT, TINY, assert_clean_error, pyro_vae
from tests.test_runs import METRIC_KEYS, RUN_FILES

needs_lightning = pytest.mark.skipif(
    importlib.util.find_spec("lightning") is None, reason="pyro_vae[distributed] is not installed"
)

CONFIG = Config(z_dim=4, hidden_dims=(32,), epochs=2, batch_size=200, log_px_samples=20)
N = 4000  # mnist-small's training images
PROCESSES = 2


class FixedNoise(Messenger):
    """Draw the guide's ``z`` as ``loc + scale * eps`` with a given ``eps``: still reparameterized,
    but the same Monte Carlo noise wherever the same images are used."""

    def __init__(self, eps):
        super().__init__()
        self.eps = eps

    def _pyro_sample(self, msg):
        # The model's "z" is replayed from the guide's (its value is set); only the guide draws.
        if msg["name"] == "z" and msg["value"] is None and not msg["is_observed"]:
            normal = msg["fn"].base_dist
            msg["value"] = normal.loc + normal.scale * self.eps


def noise(idx):
    return torch.randn(N, CONFIG.z_dim, generator=torch.Generator().manual_seed(5))[idx]


def probe(out):
    """Run in every process of the two-process run; writes ``out/run`` and ``out/rankR.pt``."""
    import lightning.pytorch as pl

    from pyro_vae.distributed import train_run_distributed

    class Recorder(pl.Callback):
        def __init__(self):
            self.steps, self.first, self.noise = [], {}, None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            x, y, idx = batch
            self.steps.append((trainer.current_epoch, idx.clone()))
            if trainer.global_step == 0:
                self.first.update(x=x.clone(), y=y.clone(), idx=idx.clone())
                for name in ("model", "guide"):
                    state = getattr(module, name).state_dict()
                    self.first[name] = {k: v.clone() for k, v in state.items()}
                self.noise = FixedNoise(noise(idx)).__enter__()

        def on_before_optimizer_step(self, trainer, module, optimizer):
            if trainer.global_step == 0:
                params = module.loss_fn.named_parameters()
                self.first["grad"] = {name: p.grad.clone() for name, p in params}

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if self.noise is not None:
                self.noise.__exit__(None, None, None)
                self.noise = None

        def on_fit_end(self, trainer, module):
            record = {"steps": self.steps, **self.first}
            torch.save(record, os.path.join(out, f"rank{trainer.global_rank}.pt"))

    train_run_distributed(
        CONFIG,
        os.path.join(out, "run"),
        quiet=True,
        devices=PROCESSES,
        accelerator="cpu",
        strategy="ddp",
        callbacks=[Recorder()],
    )


def run_probe(out, *args):
    """``python -m tests.test_distributed *args out``: Lightning starts the other process."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.test_distributed", *args, out],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp"))
    run_probe(out)
    ranks = [torch.load(os.path.join(out, f"rank{r}.pt")) for r in range(PROCESSES)]
    return os.path.join(out, "run"), ranks


def single_process_gradient(record, x, y, idx):
    """The gradient one process computes for ``(x, y)`` at positions ``idx`` from the initial
    weights."""
    model, guide = build(CONFIG, x.shape[1:])
    model.load_state_dict(record["model"])
    guide.load_state_dict(record["guide"])
    loss_fn = CONFIG.make_elbo()(model, guide)
    with FixedNoise(noise(idx)):
        loss_fn(x, y, idx, N).backward()
    return {name: p.grad for name, p in loss_fn.named_parameters()}


EM = dict(epochs=2, batch_size=100, e_steps=1, lr_decay=0.5, test_samples=0)


def em_setup():
    """400 training images, and the model with a Delta guide around the amortized one (an
    autoencoder), built as every process of :func:`probe_em` builds it."""
    data = load_dataset("mnist-small")
    data = dataclasses.replace(data, train_x=data.train_x[:400], train_y=data.train_y[:400])
    pyro.set_rng_seed(0)
    model, guide = build(CONFIG, data.x_shape)
    return data, model, DeltaGuide(guide)


def probe_em(out):
    """Alternating E and M steps with a decaying learning rate on two processes: each process
    saves its final parameters, rank 0 its last checkpoint."""
    import lightning.pytorch as pl

    from pyro_vae.distributed import fit_distributed

    class Final(pl.Callback):
        def on_fit_end(self, trainer, module):
            state = {"model": module.model.state_dict(), "guide": module.guide.state_dict()}
            torch.save(state, os.path.join(out, f"em-rank{trainer.global_rank}.pt"))

    def checkpoint(state):
        torch.save(state, os.path.join(out, "em-checkpoint.pt"))

    data, model, guide = em_setup()
    fit_distributed(
        model,
        guide,
        data,
        Trace_ELBO(),
        **EM,
        quiet=True,
        checkpoint=checkpoint,
        devices=PROCESSES,
        accelerator="cpu",
        strategy="ddp",
        callbacks=[Final()],
    )


@pytest.fixture(scope="module")
def em_processes(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ddp-em"))
    run_probe(out, "em")
    return out


@needs_lightning
def test_gradient_equals_the_single_process_gradient_of_the_global_batch(two_processes):
    _, ranks = two_processes
    assert [len(r["idx"]) for r in ranks] == [CONFIG.batch_size // PROCESSES] * PROCESSES
    x, y, idx = (torch.cat([r[key] for r in ranks]) for key in ("x", "y", "idx"))
    expected = single_process_gradient(ranks[0], x, y, idx)
    for name, grad in expected.items():
        tol = 1e-4 * grad.abs().max().item()
        for r in ranks:
            assert_close(r["grad"][name], grad, rtol=1e-4, atol=tol, msg=name)
    # Rank 0's gradient of its own shard is far from it: the average over processes matters.
    own = single_process_gradient(ranks[0], ranks[0]["x"], ranks[0]["y"], ranks[0]["idx"])
    flat = lambda grads: torch.cat([g.flatten() for g in grads.values()])  # noqa: E731
    assert (flat(own) - flat(expected)).norm() > 0.05 * flat(expected).norm()


@needs_lightning
def test_each_epoch_deals_every_image_to_one_process_in_a_new_order(two_processes):
    _, ranks = two_processes
    shards = {
        (rank, epoch): torch.cat([idx for e, idx in r["steps"] if e == epoch])
        for rank, r in enumerate(ranks)
        for epoch in range(CONFIG.epochs)
    }
    for epoch in range(CONFIG.epochs):
        dealt = torch.cat([shards[rank, epoch] for rank in range(PROCESSES)])
        assert sorted(dealt.tolist()) == list(range(N))
    assert not torch.equal(shards[0, 0], shards[0, 1])  # the sampler's set_epoch reshuffles


@needs_lightning
def test_the_run_directory_is_that_of_a_single_process_run(two_processes):
    out, _ = two_processes
    assert RUN_FILES <= set(os.listdir(out))
    state = read_checkpoint(os.path.join(out, "checkpoint.pt"))
    model, guide = build(CONFIG, (1, 28, 28))
    # What a single-process run's checkpoint holds: the run, and the state to continue training.
    assert state.keys() == {*Run(CONFIG, model, guide, (1, 28, 28)).state(), *STATE_KEYS, DIGEST}
    assert state["num_classes"] == 10 and state["epoch"] == CONFIG.epochs

    run = load_run(out)
    assert run.config == CONFIG
    history = json.load(open(os.path.join(out, "history.json")))
    assert history["epoch"] == [1, 2] and history["test_elbo"][1] > history["test_elbo"][0]
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert METRIC_KEYS <= set(metrics)
    assert metrics["test_elbo"] > -500  # an untrained model scores about -543 nats
    again = evaluate_run(run, load_dataset("mnist-small"), num_samples=CONFIG.log_px_samples)
    for key in ("train_elbo", "test_elbo", "test_log_px"):
        assert again[key] == pytest.approx(metrics[key], abs=0.01)


@needs_lightning
@pytest.mark.slow
def test_cli_trains_on_two_processes_and_evaluate_reads_the_run(tmp_path):
    out = str(tmp_path / "run")
    flags = ["--devices", "2", "--accelerator", "cpu", "--strategy", "ddp", "--out", out]
    result = pyro_vae("train", *TINY, *flags)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("test log p(x)") == 1  # rank 0 reports for both processes
    result = pyro_vae("evaluate", out, "-k", "20", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert json.loads(result.stdout)["test_log_px"] == pytest.approx(
        metrics["test_log_px"], abs=0.01
    )
    assert_clean_error(pyro_vae("train", *TINY, *flags), "--overwrite")


@needs_lightning
def test_a_data_parallel_checkpoint_continues_in_one_process(two_processes):
    out, _ = two_processes
    state = read_checkpoint(os.path.join(out, "checkpoint.pt"))
    recorded = list(state["history"]["test_elbo"])
    data = load_dataset("mnist-small")
    model, guide = build(CONFIG, data.x_shape)
    history = fit(
        model,
        guide,
        data,
        CONFIG.make_elbo(),
        epochs=CONFIG.epochs + 1,
        batch_size=CONFIG.batch_size,
        resume_from=state,
        quiet=True,
    )
    assert history.epoch == [1, 2, 3]
    assert history.test_elbo[:2] == recorded
    assert history.test_elbo[2] > history.test_elbo[0]


@needs_lightning
def test_a_program_with_nothing_to_train_is_refused_in_one_line():
    """Any guide without per-image parameters may be data-parallel (the door takes any guide);
    one with no parameters at all gets a one-line refusal, not DDP's RuntimeError."""
    from pyro_vae.distributed import fit_distributed
    from tests.linear_gaussian import GaussianGuide, LinearGaussian

    model = LinearGaussian()
    x = model(size=64).detach()
    labels = torch.zeros(64, dtype=torch.long)
    data = Data("linear-gaussian", "none", x, labels, x[:8], labels[:8])
    guide = GaussianGuide(lambda x: x[..., :2], torch.eye(2))
    with pytest.raises(ConfigError, match="no parameters to train"):
        fit_distributed(model, guide, data, devices=2, accelerator="cpu")


def check_em_checkpoint(state):
    """A checkpoint of the E/M schedule, in fit's format, that fit continues in one process."""
    assert state.keys() == {"model", "guide", *STATE_KEYS}
    # One entry per optimizer (the M step's, then the E step's), each decayed once per epoch.
    assert len(state["optimizer"]) == 2
    for saved in state["optimizer"]:
        assert saved["scheduler"]["_last_lr"] == pytest.approx([1e-3 * EM["lr_decay"] ** 2])
    data, model, guide = em_setup()
    for part, module in (("model", model), ("guide", guide)):  # both halves trained
        assert any(not torch.equal(v, state[part][k]) for k, v in module.state_dict().items())
    history = fit(
        model, guide, data, Trace_ELBO(), **{**EM, "epochs": 3}, resume_from=state, quiet=True
    )
    assert history.epoch == [1, 2, 3] and history.train_elbo[:2] == state["history"]["train_elbo"]


@needs_lightning
def test_e_and_m_steps_through_lightning_save_fits_checkpoint():
    """One process, in this one: the Lightning module takes fit's E/M steps and LR decay."""
    from pyro_vae.distributed import fit_distributed

    data, model, guide = em_setup()
    states = []
    history = fit_distributed(
        model,
        guide,
        data,
        Trace_ELBO(),
        **EM,
        quiet=True,
        checkpoint=lambda state: states.append(copy.deepcopy(state)),
        devices=1,
        accelerator="cpu",
        strategy="auto",
    )
    assert history.epoch == [1, 2] and history.test_elbo == []  # test_samples=0 skips it
    assert [s["epoch"] for s in states] == [1, 2]
    check_em_checkpoint(states[-1])


@needs_lightning
@pytest.mark.slow
def test_e_and_m_steps_run_data_parallel_and_continue_in_one_process(em_processes):
    out = em_processes
    ranks = [torch.load(os.path.join(out, f"em-rank{r}.pt")) for r in range(PROCESSES)]
    # Different shards, identical parameters: the gradient of every E and M step was averaged.
    for part in ("model", "guide"):
        for name, value in ranks[0][part].items():
            assert torch.equal(value, ranks[1][part][name]), (part, name)
    check_em_checkpoint(torch.load(os.path.join(out, "em-checkpoint.pt"), weights_only=True))


@needs_lightning
@pytest.mark.parametrize(
    "guide, name",
    [
        (LocalGuide(4000, CONFIG.z_dim), "LocalGuide"),
        (DeltaGuide(LocalGuide(4000, CONFIG.z_dim)), "DeltaGuide(LocalGuide)"),
    ],
)
def test_per_image_guides_are_refused_with_one_line(guide, name):
    from pyro_vae.distributed import fit_distributed

    data = load_dataset("mnist-small")
    model, _ = build(CONFIG, data.x_shape)
    with pytest.raises(ConfigError) as error:
        fit_distributed(model, guide, data, e_steps=1, devices=2, accelerator="cpu")
    message = str(error.value)
    assert f"only the amortized guide, not {name}:" in message and "one process" in message
    assert "\n" not in message


@needs_lightning
@pytest.mark.parametrize(
    "args, message",
    [
        (["--devices", "2"], "needs --out"),
        (["--devices", "3", "--out", "{tmp}/r"], "does not split evenly over 3 processes"),
        (["--num-nodes", "2", "--batch-size", "101", "--out", "{tmp}/r"], "multiple of 2"),
        (["--resume", "{tmp}", "--devices", "2"], "cannot be resumed on several"),
        (["--devices", "2", "--checkpoint-every", "5", "--out", "{tmp}/r"], "end of each epoch"),
        (["--devices", "2", "--step", "compiled", "--out", "{tmp}/r"], "takes Lightning's steps"),
    ],
)
def test_bad_distributed_settings_are_one_line_errors(args, message, tmp_path, capsys):
    from pyro_vae.cli import main

    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main(["train", "--epochs", "1", "--quiet", *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pyro-vae: error:") and message in err[0], err


@needs_lightning
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_is_a_one_line_error(tmp_path, capsys):
    from pyro_vae.cli import main

    argv = ["train", "--accelerator", "gpu", "--epochs", "1", "--quiet", "--out", str(tmp_path)]
    assert main(argv) == 1
    assert "cannot train with --accelerator gpu" in capsys.readouterr().err


def test_without_lightning_the_flags_say_how_to_install_it(tmp_path, capsys, monkeypatch):
    from pyro_vae.cli import main

    # None in sys.modules makes "import lightning" fail as if it were not installed (in process:
    # a fresh interpreter would cost seconds of imports); pyro_vae.distributed is imported anew.
    for name in ["lightning", *(m for m in sys.modules if m.startswith("lightning."))]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "pyro_vae.distributed", raising=False)
    out = tmp_path / "r"
    assert main(["train", "--devices", "2", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyro-vae: error:"), err
    assert "pip install 'pyro_vae[distributed]'" in lines[0] and "Traceback" not in err
    assert not out.exists()


if __name__ == "__main__":
    probe_em(sys.argv[2]) if sys.argv[1] == "em" else probe(sys.argv[1])


@needs_lightning
def test_lightning_advertises_nothing(capfd, caplog):
    import logging

    import lightning.pytorch as pl

    from pyro_vae.distributed import _lightning_quiet

    with caplog.at_level(logging.INFO), _lightning_quiet(False):
        pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False)
    out, err = capfd.readouterr()
    # Lightning logs through `logging`: to the terminal, or to pytest's log capture when an
    # earlier test has left its handlers so; the advert must be in neither
    printed = out + err + caplog.text
    assert "litlogger" not in printed.lower()
    assert "GPU available" in printed  # the device report stays when not quiet


@needs_lightning
def test_discrete_sites_train_through_lightning_with_fits_objective():
    """A program with a discrete latent gets fit's objective through Lightning too (here the
    relaxed one, whose temperature the per-epoch hook anneals), and is scored by enumeration."""
    from pyro_vae.discrete import Relaxed, temperature
    from pyro_vae.distributed import fit_distributed
    from tests.test_discrete import Mixture, MixtureGuide, mixture

    truth, _, program, _ = mixture()
    torch.manual_seed(0)
    y = torch.distributions.Categorical(truth.pi).sample((100,))
    x = torch.randn(100, 2) @ truth.W.T + truth.B.detach()[y] + 0.5 * torch.randn(100, 2)
    data = Data("mixture", "none", x, y, x[:50], y[:50])
    elbo = Relaxed(program.structure)
    pyro.set_rng_seed(0)
    model = Mixture()
    kwargs = dict(epochs=3, batch_size=50, lr=0.05, quiet=True, devices=1, accelerator="cpu")
    history = fit_distributed(model, MixtureGuide(model), data, elbo, **kwargs)
    assert elbo.temperature == temperature(3)
    exact = truth.log_joint_y(x[:50]).logsumexp(0).mean().item()
    assert history.epoch == [1, 2, 3] and history.test_elbo[-1] <= exact + 0.05
    with pytest.raises(ConfigError, match="unknown discrete strategy"):
        fit_distributed(model, MixtureGuide(model), data, discrete="gumbel", **kwargs)
