import math

import pyro
import pytest
import torch

from pyro_vae.errors import ConfigError
from pyro_vae.gradvar import ESTIMATORS, ScoreFunction, gradient_draws, gradient_variance
from pyro_vae.guides import AmortizedGuide
from pyro_vae.nets import MLPEncoder
from pyro_vae.program import as_program
from tests.bare import bare_vae
from tests.linear_gaussian import LinearGaussian, plain_functions


@pytest.fixture
def problem():
    """The linear-Gaussian model with a learnable decoder (W, b) and an MLP encoder."""
    model = LinearGaussian(x_dim=5, z_dim=2, sigma=0.5)
    pyro.set_rng_seed(1)
    x = model(size=8).detach()
    model.W = torch.nn.Parameter(model.W.clone())
    model.b = torch.nn.Parameter(model.b.clone())
    guide = AmortizedGuide(MLPEncoder((5,), 2, [6]))
    return model, guide, x


def exact_gradient(model, guide, x):
    """Autograd through the closed-form ELBO of a diagonal Gaussian guide, per image:

    E_q log p(x|z) = log N(x; W m + b, s^2 I) - sum_j s_j^2 |W_j|^2 / (2 sigma^2)
    KL(q || p(z))  = sum_j (s_j^2 + m_j^2 - 1 - 2 log s_j) / 2
    """
    loc, scale = guide.encoder(x)
    encoder, decoder = list(guide.parameters()), list(model.parameters())
    return closed_form_gradient(model, loc, scale, x, encoder, decoder)


def closed_form_gradient(model, loc, scale, x, encoder, decoder):
    """The gradient of :func:`exact_gradient`'s loss for q = Normal(loc, scale), with respect
    to the guide's parameters ``encoder`` and the model's ``decoder``."""
    sigma2 = model.sigma**2
    mean = loc @ model.W.T + model.b
    expected_log_lik = (
        -0.5 * x.shape[1] * math.log(2 * math.pi * sigma2)
        - ((x - mean) ** 2).sum(-1) / (2 * sigma2)
        - (scale**2 @ (model.W**2).sum(0)) / (2 * sigma2)
    )
    kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
    loss = -(expected_log_lik - kl).mean()
    flat = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, encoder + decoder)])
    return dict(
        zip(
            ("encoder", "decoder"),
            flat.split([sum(p.numel() for p in ps) for ps in (encoder, decoder)]),
        )
    )


@pytest.mark.parametrize("estimator", list(ESTIMATORS))
def test_every_estimator_is_unbiased(problem, estimator):
    model, guide, x = problem
    truth = exact_gradient(model, guide, x)
    # The score-function estimators are ~100x noisier: more particles per draw, not more draws.
    num_particles = 2 if estimator.startswith("reparam") else 32
    num_draws = 200
    draws = gradient_draws(model, guide, x, estimator, num_draws, num_particles, baseline_steps=50)
    assert_unbiased(draws, truth, ("encoder", "decoder"), num_draws)


def assert_unbiased(draws, truth, groups, num_draws):
    for group in groups:
        g = draws[group]
        assert g.shape == (num_draws, truth[group].numel())
        stderr = g.std(0) / num_draws**0.5
        z = (g.mean(0) - truth[group]) / stderr
        # ~110 coordinates: |z| > 4.5 has probability ~1e-3 overall for an unbiased estimator.
        assert z.abs().max() < 4.5, (group, z)
        # and the test has power: the truth stands far outside the noise
        assert truth[group].norm() > 5 * stderr.norm(), group


@pytest.mark.parametrize("estimator", ["reparam", "score-avg-baseline"])
def test_plain_functions_get_unbiased_gradients_through_the_door(estimator):
    """gradient_draws on the linear-Gaussian model and guide written as plain Pyro functions
    (never through the door; the guide's parameters are pyro.param statements in Pyro's global
    store): the draws average to the closed-form gradient, and the store keeps its parameters
    while they are drawn, and gains nothing (the average baseline lives there meanwhile)."""
    truth, model, guide = plain_functions()
    pyro.set_rng_seed(1)
    x = truth(size=8).detach()
    _, doored = as_program(model, guide, x)  # the order the door lists the guide's parameters in
    encoder = list(doored.parameters())
    loc = x @ pyro.param("A") + pyro.param("c")
    scale = pyro.param("s").expand_as(loc)
    exact = closed_form_gradient(truth, loc, scale, x, encoder, [])
    num_particles = 2 if estimator == "reparam" else 32
    draws = gradient_draws(model, guide, x, estimator, 200, num_particles, warmup=20)
    assert_unbiased(draws, exact, ("encoder",), 200)
    assert draws["decoder"].shape == (200, 0)  # the model's W and b are constants
    assert sorted(pyro.get_param_store().keys()) == ["A", "c", "s"]


def test_variance_ordering_and_particles(problem):
    model, guide, x = problem
    rows = gradient_variance(model, guide, x, particles=(1, 4), num_draws=100, baseline_steps=100)
    by = {(r["estimator"], r["num_particles"]): r for r in rows}
    for k in (1, 4):
        enc = {name: by[name, k]["encoder"]["variance"] for name in ESTIMATORS}
        assert by["reparam", k]["encoder"]["ratio"] == 1.0
        assert enc["score"] > 20 * enc["reparam"]  # the score function is far noisier
        # baselines help; a decaying average of noisy costs less than a per-image prediction
        assert enc["score-avg-baseline"] < 0.8 * enc["score"]
        assert enc["score-nn-baseline"] < enc["score"] / 2
        # the decoder's gradient never differentiates through z's sampling
        dec = by["score", k]["decoder"]["variance"]
        assert dec == pytest.approx(by["reparam", k]["decoder"]["variance"], rel=1e-4)
    # independent particles average: variance falls like 1/k (within sampling error)
    ratio = by["reparam", 1]["encoder"]["variance"] / by["reparam", 4]["encoder"]["variance"]
    assert 2.5 < ratio < 6


def test_model_guide_and_param_store_are_left_as_they_were(problem):
    model, guide, x = problem
    before = [p.detach().clone() for p in [*model.parameters(), *guide.parameters()]]
    pyro.param("mine", torch.ones(2))
    gradient_draws(model, guide, x, "score-nn-baseline", num_draws=3, baseline_steps=5)
    gradient_draws(model, guide, x, "score-avg-baseline", num_draws=3, warmup=2)
    after = [*model.parameters(), *guide.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert all(p.grad is None for p in after)
    assert list(pyro.get_param_store().keys()) == ["mine"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"estimator": "magic"}, "unknown estimator 'magic'"),
        ({"num_draws": 1}, "at least 2"),
        ({"num_particles": 0}, "num_particles must be a positive integer"),
    ],
)
def test_bad_settings(problem, kwargs, message):
    model, guide, x = problem
    with pytest.raises(ConfigError, match=message):
        gradient_draws(model, guide, x, **kwargs)


def test_training_stages_are_one_uninterrupted_run():
    from pyro_vae import Config, build, fit, load_dataset
    from pyro_vae.gradvar import training_stages

    data = load_dataset("mnist-small")
    config = Config(z_dim=2, hidden_dims=(16,), batch_size=500, lr=1e-2, lr_decay=0.5, seed=3)
    stages = list(training_stages(config, data, (0, 1, 3)))
    # each stage trains the same model and guide further, in place
    model, guide = stages[-1][1:]
    labels = [label for label, _, _ in stages]
    pyro.set_rng_seed(config.seed)
    model2, guide2 = build(config, data.x_shape)
    fit(
        model2,
        guide2,
        data,
        config.make_elbo(),
        epochs=3,
        batch_size=500,
        lr=1e-2,
        lr_decay=0.5,
        seed=3,
        quiet=True,
    )
    assert labels == ["epoch 0", "epoch 1", "epoch 3"]
    for a, b in ((model, model2), (guide, guide2)):
        for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(p, q), name


@pytest.fixture
def mixture():
    """A tiny Gaussian-mixture VAE: a discrete cluster site ``y`` next to the code ``z``."""
    from pyro_vae import Config, build

    pyro.set_rng_seed(0)
    model, guide = build(Config(model="gmvae", z_dim=2, hidden_dims=(8,)), (1, 6, 6))
    return model, guide, (torch.rand(16, 1, 6, 6) > 0.5).float()


def test_a_discrete_site_is_summed_out_by_the_pathwise_estimator(mixture, capsys):
    """reparam sums the cluster out (no score function for it): its mean is the gradient the
    score function that samples the cluster estimates too; the analytic KL is left out, once."""
    from pyro_vae.gradvar import measure_stages

    model, guide, x = mixture
    rows = measure_stages([("now", model, guide)], x, num_draws=3)
    estimators = [r["estimator"] for r in rows]
    assert estimators == [e for e in ESTIMATORS if e != "reparam-analytic-kl"]
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "reparam-analytic-kl" in said[0] and "'y'" in said[0]
    with pytest.raises(ConfigError, match="none of the estimators asked for applies"):
        measure_stages([("now", model, guide)], x, estimators=("reparam-analytic-kl",))
    pathwise = gradient_draws(model, guide, x, "reparam", num_draws=200)
    score = gradient_draws(model, guide, x, "score-avg-baseline", num_draws=200, num_particles=8)
    for group in ("encoder", "decoder"):
        a, b = pathwise[group], score[group]
        z = (a.mean(0) - b.mean(0)) / (a.var(0) / 200 + b.var(0) / 200).sqrt()
        assert z.abs().max() < 4.5 and z.pow(2).mean() < 1.5, group
        assert a.mean(0).norm() > 5 * (a.var(0).sum() / 200).sqrt(), group


def test_a_bare_built_in_vae_gets_its_gradients_through_the_door():
    """VAE(...) and AmortizedGuide(...) made by hand: the draws hold a number for each of the
    encoder's and the decoder's parameters, the score function treating the site "z"."""
    model, guide, x = bare_vae()
    for estimator in ("reparam", "score-nn-baseline"):
        draws = gradient_draws(model, guide, x, estimator, num_draws=3, baseline_steps=5)
        assert draws["encoder"].shape == (3, sum(p.numel() for p in guide.parameters()))
        assert draws["decoder"].shape == (3, sum(p.numel() for p in model.parameters()))
        assert draws["encoder"].abs().sum() > 0 and draws["decoder"].abs().sum() > 0


def test_the_score_function_treats_every_latent_site_by_default():
    """ScoreFunction() on a guide whose latent site is not called "z": every latent site."""
    from pyro import poutine

    truth, model, guide = plain_functions()
    x = truth(size=4).detach()
    trace = poutine.trace(ScoreFunction()(guide)).get_trace(x)
    assert not trace.nodes["h"]["fn"].has_rsample
    assert poutine.trace(guide).get_trace(x).nodes["h"]["fn"].has_rsample
