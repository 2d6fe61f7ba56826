"""Guide families (pyro_vae.families): each q is a normalized density, fullcov reaches the exact
posterior of a linear-Gaussian model where diag stops at its closed-form gap, guides of every
family resume exactly and work on a plain Pyro model file."""

import io
import math
import os

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vae import evaluate
from pyro_vae.config import Config, build
from pyro_vae.data import Data, load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.families import FAMILIES, families_help, make_family
from pyro_vae.guides import FamilyGuide, LocalGuide
from pyro_vae.inference import e_step
from pyro_vae.train import fit
from tests.conftest import assert_close
from tests.linear_gaussian import LinearGaussian

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYRO_STYLE = os.path.join(ROOT, "examples", "pyro_style_vae.py") + ":VAE"


@pytest.fixture(scope="module")
def mnist_small():
    return load_dataset("mnist-small", binarize="dynamic")


def _tiny(data, n=250):
    return Data(
        "tiny", "dynamic", data.train_x[:n], data.train_y[:n], data.test_x[:32], data.test_y[:32]
    )


def _shaken(module, seed=0, size=0.1):
    """``module`` with every parameter moved off its initial value (families start as diag)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(size * torch.randn(p.shape, generator=g))
    return module


def _quadrature(fn, lim=8.0, points=400):
    """The integral of ``exp(fn.log_prob)`` over ``[-lim, lim]^2``, per batch element."""
    h = 2 * lim / points
    axis = torch.linspace(-lim + h / 2, lim - h / 2, points)
    z = torch.cartesian_prod(axis, axis)  # (P*P, 2)
    batch = fn.batch_shape
    # the flow's context has the batch shape, so the points are expanded to it
    lp = fn.log_prob(z.reshape(-1, *([1] * len(batch)), 2).expand(-1, *batch, 2))
    return (torch.logsumexp(lp, 0) + 2 * math.log(h)).exp()


def test_the_registry_names_every_family_once_with_a_description():
    assert list(FAMILIES) == ["diag", "fullcov", "flow"]
    for name, family in FAMILIES.items():
        assert family.name == name and family.description in families_help()
    with pytest.raises(ConfigError, match="unknown guide family 'iaf'; choose one of diag"):
        make_family("iaf", 2)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_per_image_is_a_normalized_density_in_2d(family):
    q = _shaken(LocalGuide(3, 2, family=family, flow_layers=2), seed=1)
    fn = q.site_dists(torch.zeros(3, 2))["z"]
    assert_close(_quadrature(fn), torch.ones(3), atol=2e-3, msg=family)


@pytest.mark.parametrize("family", ["fullcov", "flow"])
def test_every_family_amortized_is_a_normalized_density_in_2d(family):
    pyro.set_rng_seed(0)
    model, guide = build(Config(z_dim=2, hidden_dims=(16,), guide_family=family), (1, 28, 28))
    assert isinstance(guide, FamilyGuide)
    _shaken(guide.families, seed=2)
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.5))
    fn = guide.z_dist(x)
    assert_close(_quadrature(fn), torch.ones(3), atol=2e-3, msg=family)


@pytest.mark.parametrize("family", ["fullcov", "flow"])
def test_a_family_starts_as_the_diagonal_gaussian_and_its_e_step_starts_at_its_q(family):
    pyro.set_rng_seed(0)
    model, diag = build(Config(z_dim=3, hidden_dims=(16,)), (1, 28, 28))
    wrapped = FamilyGuide(diag, family)
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.5))
    z = torch.randn(4, 3)
    assert_close(wrapped.z_dist(x).log_prob(z), diag.z_dist(x).log_prob(z), atol=1e-5)
    _shaken(wrapped.families, seed=3)
    local = LocalGuide.from_guide(wrapped, x, family=family)
    assert_close(
        local.site_dists(x)["z"].log_prob(z), wrapped.z_dist(x).log_prob(z), atol=1e-5, msg=family
    )


def _correlated_linear_gaussian():
    """A linear-Gaussian model whose posterior correlation is about -0.89."""
    model = LinearGaussian(x_dim=3, z_dim=2, sigma=0.5)
    model.W = torch.tensor([[1.0, 1.0], [1.0, 0.8], [0.5, 0.6]])
    x = model.x_dist(model.z_dist().sample((20,))).sample()
    return model, x


def test_fullcov_q_star_reaches_the_exact_posterior_where_diag_keeps_its_closed_form_gap():
    """The best diagonal Gaussian under KL(q || p) of a 2-D Gaussian posterior with correlation rho
    has precisions equal to the posterior's diagonal precisions, so its gap is
    -log(1 - rho^2) / 2, whatever the image; a full covariance has gap 0."""
    model, x = _correlated_linear_gaussian()
    exact = model.exact_log_px(x)
    loc, cov = model.exact_posterior(x)
    rho = cov[0, 1] / cov.diag().prod().sqrt()
    assert rho.abs() > 0.8
    gaps = {}
    for family in ("diag", "fullcov"):
        q = LocalGuide(len(x), 2, family=family)
        e_step(model, q, x, steps=1000, lr=0.1)
        pyro.set_rng_seed(0)
        gap = exact - evaluate.elbo(model, q, x, num_samples=5000)
        gaps[family] = (gap.mean().item(), (gap.std() / len(x) ** 0.5).item())
        if family == "fullcov":
            fn = q.site_dists(x)["z"]
            # q* is the exact posterior: KL(q* || p(z|x)) in closed form, per image
            kl = torch.distributions.kl_divergence(fn, dist.MultivariateNormal(loc, cov))
            assert kl.mean() < 0.02 and kl.max() < 0.05, kl
            # importance sampling with fullcov's q* as the proposal gives the exact log p(x)
            pyro.set_rng_seed(0)
            assert_close(evaluate.log_px(model, q, x, num_samples=2000), exact, atol=0.01)
    theory = -0.5 * math.log(1 - rho.item() ** 2)
    mean, stderr = gaps["diag"]
    assert abs(mean - theory) < 0.03 + 3 * stderr, (gaps, theory)
    mean, stderr = gaps["fullcov"]
    assert abs(mean) < 0.02 + 3 * stderr, gaps


def test_a_flow_q_star_closes_most_of_the_diagonal_gap_on_a_correlated_posterior():
    model, x = _correlated_linear_gaussian()
    exact = model.exact_log_px(x)
    q = LocalGuide(len(x), 2, family="flow")
    e_step(model, q, x, steps=1000, lr=0.1)
    pyro.set_rng_seed(0)
    gap = (exact - evaluate.elbo(model, q, x, num_samples=5000)).mean().item()
    assert -0.02 < gap < 0.1  # the diagonal family's gap here is 0.77


def _round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("model_name", ["vae", PYRO_STYLE])
@pytest.mark.parametrize("family", ["fullcov", "flow"])
def test_every_family_resumes_from_any_checkpoint_bit_for_bit(mnist_small, family, model_name):
    small = _tiny(mnist_small)
    config = Config(z_dim=4, hidden_dims=(32,), guide_family=family, model=model_name)
    pyro.set_rng_seed(7)
    model, guide = build(config, small.x_shape)
    states = []
    history = fit(
        model,
        guide,
        small,
        epochs=2,
        batch_size=64,
        quiet=True,
        seed=7,
        checkpoint=lambda s: states.append(_round_trip(s)),
        checkpoint_every=3,
    )
    expected = {**model.state_dict(), **guide.state_dict()}
    assert any(k.startswith("families.") for k in guide.state_dict())
    for state in states[:2]:
        pyro.set_rng_seed(123)
        model2, guide2 = build(config, small.x_shape)
        history2 = fit(
            model2, guide2, small, epochs=2, batch_size=64, quiet=True, seed=99, resume_from=state
        )
        resumed = {**model2.state_dict(), **guide2.state_dict()}
        for name, value in expected.items():
            assert torch.equal(resumed[name], value), (state["epoch"], state["step"], name)
        assert history2.train_elbo == history.train_elbo


MODEL_ONLY = """
import pyro, pyro.distributions as dist, torch
from torch import nn

decoder = nn.Linear(2, 784)

def model(x):
    pyro.module("decoder", decoder)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x.reshape(-1, 784))
"""


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_model_file_without_a_guide_gets_a_per_image_guide_of_the_family(
    family, mnist_small, tmp_path
):
    path = tmp_path / "model_only.py"
    path.write_text(MODEL_ONLY)
    small = _tiny(mnist_small, 64)
    config = Config(guide_family=family, model=str(path))
    model, guide = build(config, small.x_shape, train_size=64)
    assert isinstance(guide, LocalGuide) and guide.family == family
    history = fit(model, guide, small, epochs=2, batch_size=32, lr=0.03, quiet=True)
    assert all(math.isfinite(v) for v in history.train_elbo + history.test_elbo[-1:])


def test_config_refuses_an_unknown_family_and_bad_flow_layers():
    with pytest.raises(ConfigError, match="unknown guide_family 'iaf'"):
        Config(guide_family="iaf")
    with pytest.raises(ConfigError, match="flow_layers must be a positive integer"):
        Config(guide_family="flow", flow_layers=0)
