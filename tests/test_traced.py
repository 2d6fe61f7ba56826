"""The recorded loss (pyro_vae.traced) against Pyro's eager step: the same losses, gradients,
buffer updates and random draws for every model variant, guide and ELBO pyro_vae trains, and the
eager step, with a notice, wherever a recording cannot be trusted."""

import copy
import shutil

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_vae.config import CONDITIONS, ELBOS, Config, build
from pyro_vae.data import Data, load_dataset
from pyro_vae.discrete import STRATEGIES, objective
from pyro_vae.errors import DataError, DivergenceError
from pyro_vae.families import FAMILIES
from pyro_vae.guides import DeltaGuide, LocalGuide
from pyro_vae.likelihoods import LIKELIHOODS
from pyro_vae.nets import NETS
from pyro_vae.traced import CompiledLoss, NotTraceable, TracedLoss, lean_loss
from pyro_vae.train import fit
from tests.conftest import assert_close
from tests.test_program import STYLES, X_SHAPE, build_style, tiny_data

N = 60_000  # the data set size the minibatch's loss is scaled to

# One change at a time from the default model, drawn from the registries the CLI offers.
VARIANTS = {
    "vae": {},
    **{f"likelihood={name}": {"likelihood": name} for name in LIKELIHOODS[1:]},
    **{f"net={name}": {"net": name, "hidden_dims": (4, 8)} for name in NETS if name != "mlp"},
    **{f"condition={name}": {"condition": name} for name in CONDITIONS[1:]},
    "learned prior": {"condition": "label", "learned_prior": True},
    "hierarchical": {"model": "hierarchical"},
    "beta": {"beta": 0.5},
    **{f"guide_family={name}": {"guide_family": name} for name in FAMILIES if name != "diag"},
}
CASES = [
    pytest.param(variant, elbo, particles, id=f"{variant}-{elbo}-{particles}")
    for variant in VARIANTS
    for elbo in ELBOS
    for particles in ((1, 3) if variant == "vae" else (1,))
    if not (variant == "hierarchical" and elbo == "meanfield")
]
GUIDES = {
    "amortized": lambda model, guide, n: guide,
    "local": lambda model, guide, n: LocalGuide(n, structure=model.structure),
    "delta(amortized)": lambda model, guide, n: DeltaGuide(guide),
    "delta(local)": lambda model, guide, n: DeltaGuide(LocalGuide(n, structure=model.structure)),
    **{
        f"local {name}": lambda model, guide, n, name=name: LocalGuide(
            n, structure=model.structure, family=name
        )
        for name in FAMILIES
        if name != "diag"
    },
}


@pytest.fixture(scope="module")
def images():
    data = load_dataset("mnist-small", binarize="none")
    x = torch.bernoulli(data.train_x[:8], generator=torch.Generator().manual_seed(0))
    return x, data.train_y[:8]


def condition(config, x, labels):
    if config.condition.startswith("quadrants:"):
        return x
    return labels if config.condition == "label" else None


def captured(loss_fn, batch_size):
    """:class:`CompiledLoss` with its captured graph run as it is (no compiler): what the
    compiler is given, checked for every program; the compiler itself is checked once below."""
    return CompiledLoss(loss_fn, batch_size, compiler=lambda graph: graph)


#: How each kind of lean loss must match the eager step: the recording bit for bit; the captured
#: graph to float rounding (its ATen operations are the eager step's, some decomposed, whose
#: backward formulas round differently).
LEAN = {"recorded": (TracedLoss, 0.0), "captured": (captured, 1e-5)}


def assert_same_step(model, guide, elbo, x, y, n=N, lean="recorded"):
    """The recorded (or captured) loss and the eager one, from the same random state: the same
    value, the same gradients and buffer updates (bit for bit for the recording), the same random
    numbers drawn; on the first call and on a replay with other parameters and other random
    numbers."""
    loss_fn = elbo(model, guide)
    make, rtol = LEAN[lean]
    traced = make(loss_fn, x.shape[0]) if lean != "recorded" else make(loss_fn)
    idx = torch.arange(x.shape[0])
    params = [p for p in loss_fn.parameters() if p.requires_grad]
    buffers = list(loss_fn.buffers())
    for seed, call in enumerate(("record", "replay")):
        if call == "replay":
            with torch.no_grad():
                for p in params:
                    p.add_(0.05 * torch.randn_like(p))
        before = [b.clone() for b in buffers]
        torch.manual_seed(seed)
        eager = loss_fn(x, y, idx, n)
        eager_grads = torch.autograd.grad(eager, params, allow_unused=True)
        eager_buffers, rng = [b.clone() for b in buffers], torch.get_rng_state()
        for b, value in zip(buffers, before):
            b.copy_(value)
        torch.manual_seed(seed)
        loss = traced(x, y, idx, n)
        lean_grads = torch.autograd.grad(loss, params, allow_unused=True)
        assert torch.equal(torch.get_rng_state(), rng), call
        assert_close(loss, eager, rtol=1e-6, atol=0, msg=call)
        for name, a, b in zip(map(str, range(len(params))), lean_grads, eager_grads):
            if a is None or b is None:
                assert a is None and b is None, (call, name)
            elif rtol == 0:
                assert torch.equal(a, b), (call, name)
            else:  # relative to the gradient's largest entry: tiny entries round alike
                assert_close(a, b, rtol=0, atol=rtol * b.abs().max().item(), msg=(call, name))
        for a, b in zip(buffers, eager_buffers):
            assert torch.equal(a, b) if rtol == 0 else torch.allclose(a, b, rtol=rtol), call
        if lean != "recorded":
            assert traced.compile_failed is None, traced.compile_failed


@pytest.mark.parametrize("lean", LEAN)
@pytest.mark.parametrize("variant, elbo, particles", CASES)
def test_every_model_variant_and_elbo_records_the_eager_step(
    variant, elbo, particles, lean, images
):
    x, labels = images
    config = Config(z_dim=4, hidden_dims=(16,), elbo=elbo, num_particles=particles)
    for key, value in VARIANTS[variant].items():
        setattr(config, key, value)
    config.validate()
    model, guide = build(config, x.shape[1:])
    model.train(), guide.train()
    assert_same_step(model, guide, config.make_elbo(), x, condition(config, x, labels), lean=lean)


@pytest.mark.parametrize("lean", LEAN)
@pytest.mark.parametrize("elbo", ELBOS)
@pytest.mark.parametrize("family", GUIDES)
def test_every_guide_records_the_eager_step(family, elbo, lean, images):
    x, _ = images
    config = Config(z_dim=4, hidden_dims=(16,), elbo=elbo)
    model, guide = build(config, x.shape[1:])
    guide = GUIDES[family](model, guide, N)
    assert_same_step(model, guide, config.make_elbo(), x, None, lean=lean)


@pytest.mark.parametrize("lean", LEAN)
@pytest.mark.parametrize("elbo", ELBOS)
@pytest.mark.parametrize("style", STYLES)
def test_every_model_file_style_records_the_eager_step(style, elbo, lean, tmp_path):
    model, guide = build_style(tmp_path, style)
    x = tiny_data().train_x[:8]
    assert_same_step(model, guide, Config(elbo=elbo).make_elbo(), x, None, n=48, lean=lean)


def _tiny(n=256, binarize="dynamic"):
    data = load_dataset("mnist-small", binarize=binarize)
    return Data(
        "tiny", binarize, data.train_x[:n], data.train_y[:n], data.test_x[:64], data.test_y[:64]
    )


def _fit(data, eager=False, monkeypatch=None, **kwargs):
    if eager:
        monkeypatch.setattr("pyro_vae.train.lean_loss", lambda *args, **kw: None)
    pyro.set_rng_seed(7)
    model, guide = build(Config(z_dim=4, hidden_dims=(32,)), data.x_shape)
    history = fit(model, guide, data, epochs=2, batch_size=100, quiet=True, seed=7, **kwargs)
    monkeypatch.undo()
    return model, history


@pytest.mark.parametrize("elbo", [None, Trace_ELBO()], ids=["default", "trace"])
def test_fit_takes_the_eager_steps_with_the_recorded_loss(elbo, monkeypatch):
    data = _tiny()  # 100, 100, 56 images: two minibatch shapes
    model, history = _fit(data, elbo=elbo, monkeypatch=monkeypatch)
    eager_model, eager_history = _fit(data, True, monkeypatch, elbo=elbo)
    for a, b in zip(model.state_dict().values(), eager_model.state_dict().values()):
        assert torch.equal(a, b)
    assert_close(history.train_elbo, eager_history.train_elbo, rtol=1e-6)
    assert history.test_elbo == eager_history.test_elbo


def test_a_per_epoch_hook_is_recorded_afresh(monkeypatch):
    from pyro_vae.objectives import kl_warmup

    data = _tiny()
    runs = []
    for eager in (False, True):
        pyro.set_rng_seed(7)
        model, guide = build(Config(z_dim=4, hidden_dims=(32,)), data.x_shape)
        if eager:
            monkeypatch.setattr("pyro_vae.train.lean_loss", lambda *args, **kw: None)
        hook = kl_warmup([model, guide], epochs=3)
        runs.append(fit(model, guide, data, epochs=3, batch_size=100, quiet=True, on_epoch=hook))
    assert_close(runs[0].train_elbo, runs[1].train_elbo, rtol=1e-6)


def test_kl_warmup_keeps_its_recordings_across_epochs(monkeypatch):
    """kl_warmup changes only z_scale, which the recordings are keyed by: each shape and scale is
    recorded once, not once per epoch (every command-line run has the hook)."""
    from pyro_vae.objectives import kl_warmup

    made = []
    record = TracedLoss._record
    monkeypatch.setattr(TracedLoss, "_record", lambda self, *a: made.append(1) or record(self, *a))
    data = _tiny()  # 100, 100, 56 images: two shapes
    for epochs, recordings in ((0, 2), (2, 4)):  # a constant scale; a scale that rises twice
        made.clear()
        model, guide = build(Config(z_dim=4, hidden_dims=(32,)), data.x_shape)
        hook = kl_warmup([model, guide], epochs=epochs)
        fit(model, guide, data, epochs=3, batch_size=100, quiet=True, on_epoch=hook)
        assert len(made) == recordings


class _MyELBO(Trace_ELBO):
    """A subclass: its loss may differ from Trace_ELBO's, so it is not recorded."""


def test_what_cannot_be_recorded_runs_eagerly_with_a_one_line_notice(tmp_path, capsys):
    data = _tiny()
    model, guide = build(Config(z_dim=4, hidden_dims=(32,)), data.x_shape)
    fit(model, guide, data, _MyELBO(), epochs=1, batch_size=128)
    notice = [line for line in capsys.readouterr().err.splitlines() if "eager" in line]
    assert notice == [
        "pyro_vae: training with the eager Pyro step: _MyELBO is not one of the ELBOs pyro_vae "
        "records (TraceMeanField_ELBO, IWAE, Trace_ELBO, Enumerate)"
    ]
    fit(model, guide, data, _MyELBO(), epochs=1, batch_size=128, quiet=True)
    assert "eager" not in capsys.readouterr().err


def test_a_program_that_branches_on_its_data_runs_eagerly(tmp_path, capsys):
    text, names, *_ = STYLES["function pair with pyro.param"]
    branching = text.replace(
        '        pyro.sample("pixels"',
        '        if bool(x.mean() > 2):\n            logits = -logits\n        pyro.sample("pixels"',
    )
    path = tmp_path / "branching.py"
    path.write_text(branching)
    config = Config(model=str(path), z_dim=3, hidden_dims=(16,), elbo="trace")
    data = tiny_data()
    model, guide = build(config, X_SHAPE, x=data.test_x[:4], train_size=48)
    history = fit(model, guide, data, Trace_ELBO(), epochs=2, batch_size=16)
    lines = [line for line in capsys.readouterr().err.splitlines() if "eager" in line]
    assert len(lines) == 1 and "turns a tensor into a Python value at branching.py:" in lines[0]
    assert len(history.train_elbo) == 2


def test_a_guide_without_reparameterized_samples_runs_eagerly():
    from pyro_vae.program import Program

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(z[:, None], 1.0).to_event(1), obs=x)

    def guide(x):
        loc = pyro.param("loc", torch.tensor(0.5))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc * torch.ones(x.shape[0]), 1.0).has_rsample_(False))

    x = torch.randn(4, 1)
    program = Program(model, guide, x)
    traced = TracedLoss(Trace_ELBO()(program.model, program.guide))
    with pytest.raises(NotTraceable, match="site 'z' has no reparameterized sampler"):
        traced(x, None, torch.arange(4), 4)


def test_data_outside_the_support_keeps_the_eager_error():
    grey = _tiny(binarize="none")
    model, guide = build(Config(z_dim=4, hidden_dims=(32,)), grey.x_shape)
    loss_fn = Config().make_elbo()(model, guide)
    assert lean_loss(loss_fn, model, grey) is None
    assert isinstance(lean_loss(loss_fn, model, _tiny(binarize="static")), TracedLoss)
    with pytest.raises(DataError, match="binary pixels"):
        fit(model, guide, grey, epochs=1, quiet=True)


def test_parameters_gone_non_finite_between_recorded_steps_are_named():
    data = _tiny(binarize="static")
    model, guide = build(Config(z_dim=4, hidden_dims=(32,)), data.x_shape)

    def poison(state):  # the state's tensors are the live parameters
        for value in state["guide"].values():
            value.fill_(float("nan"))

    with pytest.raises(
        DivergenceError, match="the parameters became non-finite at epoch 1, step 2; try"
    ):
        fit(
            model,
            guide,
            data,
            epochs=1,
            batch_size=64,
            quiet=True,
            checkpoint=poison,
            checkpoint_every=1,
        )


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s != "enumerate"])
def test_a_discrete_strategy_not_recorded_yet_runs_eagerly_with_a_notice(strategy):
    data = _tiny()
    config = Config(model="gmvae", z_dim=4, hidden_dims=(16,), elbo="trace")
    model, guide = build(config, data.x_shape)
    loss_fn = objective(model.structure, strategy, config.make_elbo())(model, guide)
    lines = []
    assert lean_loss(loss_fn, model, data, notify=lines.append) is None
    assert len(lines) == 1 and "is not one of the ELBOs pyro_vae records" in lines[0]


CLASS_MODELS = {
    "m2": {"model": "m2", "labels": 4, "alpha": 2.0},
    "gmvae": {"model": "gmvae"},
}
LABELS = {
    "none labelled": [-1] * 8,
    "some labelled": [0, 1, -1, -1, 3, -1, -1, 2],
    "all labelled": [0, 1, 2, 3, 4, 5, 6, 7],
}


@pytest.mark.parametrize("labels", LABELS)
@pytest.mark.parametrize("variant", CLASS_MODELS)
def test_enumeration_records_the_eager_step(variant, labels, images):
    """The class summed out (TraceEnum_ELBO) for the built-in M2 and mixture: the eager step's
    losses and gradients, bit for bit, on minibatches with no, some and only labelled images."""
    x, _ = images
    config = Config(z_dim=4, hidden_dims=(16,), elbo="trace", **CLASS_MODELS[variant])
    model, guide = build(config, x.shape[1:], train_size=100)
    model.train(), guide.train()
    elbo = objective(model.structure, "enumerate", config.make_elbo())
    assert_same_step(model, guide, elbo, x, torch.tensor(LABELS[labels]))


def test_enumeration_is_recorded_not_compiled_with_a_notice(images):
    """Pyro's enumeration reads a tensor's value as it contracts, which a capture for the
    compiler cannot hold: the compiled step records the loss instead, and says so once."""
    x, _ = images
    config = Config(z_dim=4, hidden_dims=(16,), elbo="trace", **CLASS_MODELS["m2"])
    model, guide = build(config, x.shape[1:], train_size=100)
    loss_fn = objective(model.structure, "enumerate", config.make_elbo())(model, guide)
    lines = []
    compiled = CompiledLoss(loss_fn, 8, compiler=lambda graph: graph, announce=lines.append)
    torch.manual_seed(0)
    loss = compiled(x, torch.tensor(LABELS["some labelled"]), torch.arange(8), N)
    assert torch.isfinite(loss) and compiled.compile_failed is not None
    assert len(lines) == 1 and lines[0].startswith("the training step is recorded, not compiled")


def test_a_recording_of_one_minibatch_holds_for_others_with_other_labels(images):
    """Recorded on a minibatch without labels, replayed on ones with some and with only
    labelled images (the same shape): the eager step's losses and gradients each time."""
    x, _ = images
    config = Config(z_dim=4, hidden_dims=(16,), elbo="trace", **CLASS_MODELS["m2"])
    model, guide = build(config, x.shape[1:], train_size=100)
    loss_fn = objective(model.structure, "enumerate", config.make_elbo())(model, guide)
    traced, idx = TracedLoss(loss_fn), torch.arange(8)
    params = [p for p in loss_fn.parameters() if p.requires_grad]
    for seed, labels in enumerate(LABELS.values()):
        y = torch.tensor(labels)
        torch.manual_seed(seed)
        eager = loss_fn(x, y, idx, N)
        eager_grads = torch.autograd.grad(eager, params, allow_unused=True)
        torch.manual_seed(seed)
        loss = traced(x, y, idx, N)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        assert_close(loss, eager, rtol=1e-6, atol=0, msg=labels)  # as assert_same_step
        assert all(
            (a is None and b is None) or torch.equal(a, b) for a, b in zip(grads, eager_grads)
        )
    assert len(traced._recordings) == 1


def test_enumerated_training_is_the_eager_training(monkeypatch):
    """Two epochs of the enumerated M2 with the recorded step and with the eager one: the same
    parameters, bit for bit, and the same losses."""
    data = _tiny()
    data.labelled = torch.arange(len(data.train_y)) < 20
    runs = []
    for eager in (False, True):
        if eager:
            monkeypatch.setattr("pyro_vae.train.lean_loss", lambda *args, **kw: None)
        config = Config(model="m2", labels=20, z_dim=4, hidden_dims=(16,), alpha=2.0)
        pyro.set_rng_seed(3)
        model, guide = build(config, data.x_shape, train_size=len(data.train_y))
        history = fit(model, guide, data, epochs=2, batch_size=100, quiet=True, seed=3)
        runs.append((model.state_dict(), history))
    (recorded, history), (eager, eager_history) = runs
    assert all(torch.equal(a, b) for a, b in zip(recorded.values(), eager.values()))
    assert_close(history.train_elbo, eager_history.train_elbo, rtol=1e-6)  # loss values


def test_a_model_file_trained_with_labels_runs_eagerly_with_a_notice(tmp_path):
    """A program called once on the labelled and once on the unlabelled images of a minibatch
    (pyro_vae.semi.SemiSupervisedLoss) is not recorded."""
    import os

    from tests.test_cli import ROOT

    data = _tiny()
    data.labelled = torch.arange(len(data.train_y)) < 20
    spec = os.path.join(ROOT, "tests", "programs", "ss_vae.py:make")
    config = Config(model=spec, labels=20, z_dim=4, hidden_dims=(16,))
    model, guide = build(config, data.x_shape, train_size=len(data.train_y))
    loss_fn = objective(model.structure, "enumerate", config.make_elbo())(model, guide)
    lines = []
    assert lean_loss(loss_fn, model, data, notify=lines.append) is None
    assert len(lines) == 1 and "splits labelled and unlabelled images" in lines[0]


@pytest.mark.skipif(
    not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
    reason="torch.compile needs a C++ compiler on a CPU",
)
def test_the_compiled_step_trains_as_the_eager_step_and_resumes_bit_for_bit(capsys):
    """torch.compile proper, once: the compiled step's run against the eager step's (float
    rounding apart), and a run resumed from its first checkpoint against the uninterrupted one,
    bit for bit."""
    data = _tiny()  # 100, 100, 56 images: the last minibatch replays the recording

    def run(step, **kwargs):
        pyro.set_rng_seed(7)
        model, guide = build(Config(z_dim=4, hidden_dims=(32,)), data.x_shape)
        history = fit(model, guide, data, epochs=2, batch_size=100, seed=7, step=step, **kwargs)
        return model, history

    states = []
    compiled, history = run("compiled", checkpoint=lambda s: states.append(copy.deepcopy(s)))
    notices = capsys.readouterr().err.splitlines()
    assert notices == [
        "pyro_vae: compiling the training step for minibatches of 100 (once per run; seconds to "
        "a minute)"
    ]
    eager, eager_history = run("eager", quiet=True)
    assert_close(history.train_elbo, eager_history.train_elbo, rtol=1e-5)
    for a, b in zip(compiled.state_dict().values(), eager.state_dict().values()):
        assert_close(a, b, rtol=1e-4, atol=1e-5)
    resumed, resumed_history = run("compiled", quiet=True, resume_from=states[0])
    assert resumed_history.train_elbo == history.train_elbo
    for a, b in zip(resumed.state_dict().values(), compiled.state_dict().values()):
        assert torch.equal(a, b)


def test_a_compiler_that_fails_leaves_the_recorded_step_with_a_one_line_notice(capsys, monkeypatch):
    def failing(graph):
        raise RuntimeError("no C++ compiler found\nsecond line")

    monkeypatch.setattr("pyro_vae.traced.inductor", failing)
    data = _tiny()
    runs = []
    for step in ("compiled", "recorded"):
        pyro.set_rng_seed(7)
        model, guide = build(Config(z_dim=4, hidden_dims=(32,)), data.x_shape)
        fit(model, guide, data, epochs=1, batch_size=100, seed=7, step=step)
        runs.append(model)
    notices = capsys.readouterr().err.splitlines()
    assert notices == [
        "pyro_vae: compiling the training step for minibatches of 100 (once per run; seconds to "
        "a minute)",
        "pyro_vae: the training step is recorded, not compiled: torch.compile failed: no C++ "
        "compiler found",
    ]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values()):
        assert torch.equal(a, b)
