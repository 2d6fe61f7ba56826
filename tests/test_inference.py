import os

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from pyro_vae import evaluate
from pyro_vae.config import Config, build
from pyro_vae.errors import ConfigError
from pyro_vae.guides import LocalGuide
from pyro_vae.inference import e_step, grid_posterior, log_likelihood_grid, nuts_posterior
from tests.bare import bare_vae
from tests.conftest import assert_close
from tests.linear_gaussian import LinearGaussian, plain_functions


def diagonal_posterior_model():
    """A linear-Gaussian model with orthogonal columns of W: p(z|x) is a diagonal Gaussian, so
    it lies inside the local guide's family and the E-step's optimum is the exact posterior."""
    model = LinearGaussian(x_dim=5, z_dim=2, sigma=0.5)
    q, _ = torch.linalg.qr(model.W)
    model.W = q * torch.tensor([1.5, 0.7])
    return model


def test_e_step_converges_to_the_exact_posterior():
    model = diagonal_posterior_model()
    pyro.set_rng_seed(1)
    x = model(size=64).detach()
    loc, cov = model.exact_posterior(x)
    guide = LocalGuide(64, 2)
    before = [p.clone() for p in model.parameters()]
    elbo = TraceMeanField_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1)
    history = e_step(model, guide, x, steps=400, lr=0.1, final_lr=1e-4, elbo=elbo)
    assert len(history.train_elbo) == 400 and history.train_elbo[-1] > history.train_elbo[0]
    assert_close(guide.loc, loc, atol=0.03, msg="posterior means")
    assert_close(guide.scale, cov.diag().sqrt().expand(64, 2), rtol=0.05, atol=0, msg="sds")
    # At the exact posterior the ELBO is log p(x) itself.
    assert_close(
        evaluate.elbo(model, guide, x, num_samples=200).mean(),
        model.exact_log_px(x).mean(),
        atol=0.01,
    )
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_e_step_leaves_a_trained_decoder_frozen_and_trainable_afterwards():
    model, guide = build(Config(z_dim=2, hidden_dims=(8,)), (1, 4, 4))
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.5))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    e_step(model, LocalGuide.from_guide(guide, x), x, steps=5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ConfigError, match="positive number of steps"):
        e_step(model, LocalGuide(6, 2), x, steps=0)


def test_e_step_fits_under_torch_no_grad():
    """A figure drawn under ``torch.no_grad()`` fits a per-image guide to its images: the E-step
    takes its gradients all the same (it used to fail at its first backward pass)."""
    model, _ = build(Config(z_dim=2, hidden_dims=(8,)), (1, 4, 4))
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.5))
    q = LocalGuide(6, 2)
    with torch.no_grad():
        e_step(model, q, x, steps=5)
    assert not torch.equal(q.loc, torch.zeros(6, 2))


def test_grid_posterior_is_exact_on_the_linear_gaussian_model():
    model = LinearGaussian(x_dim=5, z_dim=2, sigma=0.5)
    pyro.set_rng_seed(2)
    x = model(size=8).detach()
    grid = grid_posterior(model, x, lim=6.0, points=200)
    assert_close(grid.log_px, model.exact_log_px(x), atol=1e-4)
    loc, cov = model.exact_posterior(x)
    mean, std = grid.moments()
    assert_close(mean, loc, atol=1e-3)
    assert_close(std, cov.diag().sqrt().expand(8, 2), atol=1e-3)
    assert (grid.error < 1e-4).all() and (grid.edge_mass < 1e-6).all()
    # A grid that cuts the posterior off says so.
    assert (grid_posterior(model, x + 20 * model.W[:, 0], lim=2.0).edge_mass > 0.1).any()


def test_grid_log_px_matches_large_k_importance_sampling():
    model, guide = build(Config(z_dim=2, hidden_dims=(16,)), (1, 6, 5))
    with torch.no_grad():  # a decoder that cares about z, so the posterior is not the prior
        model.decoder.fc[-1].weight.mul_(6.0)
    x = torch.bernoulli(torch.full((16, 1, 6, 5), 0.5))
    grid = grid_posterior(model, x, points=200)
    mean, std = grid.moments()
    proposal = LocalGuide(16, 2, loc=mean, scale=1.5 * std)  # a wide proposal near p(z|x)
    is_estimate = evaluate.log_px(model, proposal, x, num_samples=20000)
    assert_close(is_estimate, grid.log_px, atol=0.03)
    assert grid.error.max() < 1e-3


def test_bernoulli_fast_path_equals_the_likelihood():
    model, _ = build(Config(z_dim=2, hidden_dims=(16,)), (1, 6, 5))
    x = torch.bernoulli(torch.full((3, 1, 6, 5), 0.5))
    z = torch.randn(7, 2)
    expected = torch.stack([model.x_dist(z).log_prob(xi.expand(7, 1, 6, 5)) for xi in x])
    assert_close(log_likelihood_grid(model, x, z, max_rows=3), expected, atol=1e-4)


def test_grid_needs_a_2d_latent():
    model, _ = build(Config(z_dim=3, hidden_dims=(8,)), (1, 4, 4))
    with pytest.raises(ConfigError, match="2-D latent"):
        grid_posterior(model, torch.zeros(1, 1, 4, 4))


def test_nuts_recovers_a_known_gaussian_posterior():
    model = LinearGaussian(x_dim=5, z_dim=2, sigma=0.5)
    pyro.set_rng_seed(3)
    x = model(size=2).detach()
    loc, cov = model.exact_posterior(x)
    nuts = nuts_posterior(model, x, num_samples=300, warmup_steps=150, seed=0)
    assert nuts.samples.shape == (300, 2, 2)
    sd = cov.diag().sqrt()
    # Monte Carlo error of a mean of ~300 nearly independent draws: about 0.06 sd; of an sd, 4%.
    assert ((nuts.mean - loc).abs() / sd < 0.25).all(), (nuts.mean, loc)
    assert ((nuts.std / sd - 1).abs() < 0.2).all(), (nuts.std, sd)


def test_nuts_refuses_a_latent_it_cannot_transform_by_name():
    example = os.path.join(
        os.path.dirname(os.path.dirname(__file__)), "examples", "gmm_prior_vae.py"
    )
    model, _ = build(Config(model=f"{example}:GMMPriorVAE", z_dim=2, hidden_dims=(8,)), (1, 6, 5))
    x = torch.bernoulli(torch.full((2, 1, 6, 5), 0.5))
    with pytest.raises(ConfigError, match="NUTS cannot sample this model's latents"):
        nuts_posterior(model, x, num_samples=2, warmup_steps=2)


def test_every_entry_point_takes_a_program_as_pyro_writes_it():
    """Plain Pyro functions that never went through the door (site names of their own, flat
    pixels, pyro.module): evaluation, the exact grid, NUTS and the gradient lab pass them
    through the door themselves, and agree with each other."""
    from torch import nn

    from pyro_vae.gradvar import gradient_draws

    torch.manual_seed(0)
    decoder, encoder = nn.Linear(2, 16), nn.Linear(16, 4)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(torch.zeros(len(x), 2), 1.0).to_event(1))
            pixels = x.reshape(len(x), -1)
            pyro.sample("obs", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=pixels)

    def guide(x):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(x.reshape(len(x), -1)).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("latent", dist.Normal(loc, log_scale.exp()).to_event(1))

    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.3), generator=torch.Generator().manual_seed(1))
    elbo = evaluate.elbo(model, guide, x, num_samples=50)
    log_px = evaluate.log_px(model, guide, x, num_samples=2000)
    exact = grid_posterior(model, x, points=100).log_px
    assert elbo.shape == log_px.shape == exact.shape == (6,)
    assert (elbo < exact).all()
    # importance sampling with an untrained encoder as the proposal: within a fifth of a nat
    # (a program scored wrongly, a plate or a scale, would be many nats off)
    assert_close(log_px, exact, atol=0.2)
    nuts = nuts_posterior(model, x[:2], num_samples=4, warmup_steps=4)
    assert nuts.samples.shape == (4, 2, 2) and set(nuts.sites) == {"latent"}
    draws = gradient_draws(model, guide, x, "reparam", num_draws=3)
    assert draws["encoder"].shape == (3, 68) and draws["decoder"].shape == (3, 48)


def test_the_grid_nuts_and_the_e_step_take_plain_functions_through_the_door():
    """Pyro's plain functions, never through the door, with their own site (h) and plate names:
    the grid's log p(x) is the closed form, NUTS samples the posterior of h, and the E-step fits
    the guide's pyro.param values with the model fixed."""
    truth, model, guide = plain_functions()
    pyro.set_rng_seed(2)
    x = truth(size=4).detach()
    grid = grid_posterior(model, x, lim=6.0)
    assert_close(grid.log_px, truth.exact_log_px(x), atol=1e-4)
    nuts = nuts_posterior(model, x[:2], num_samples=100, warmup_steps=100)
    assert set(nuts.sites) == {"h"} and nuts.samples.shape == (100, 2, 2)
    loc, cov = truth.exact_posterior(x[:2])
    assert ((nuts.mean - loc).abs() / cov.diag().sqrt() < 0.5).all(), (nuts.mean, loc)
    pyro.set_rng_seed(0)
    before = evaluate.elbo(model, guide, x, num_samples=100).mean()
    history = e_step(model, guide, x, steps=100, lr=0.05)
    pyro.set_rng_seed(0)
    after = evaluate.elbo(model, guide, x, num_samples=100).mean()
    assert len(history.train_elbo) == 100 and after > before + 1, (before, after)


def test_the_grid_nuts_and_the_e_step_take_a_bare_built_in_vae_through_the_door():
    """VAE(...) and AmortizedGuide(...) made by hand: the grid's log p(x) matches importance
    sampling with a wide q near the grid's posterior, the encoder's ELBO lies below it, NUTS
    samples "z", and the E-step from the encoder's q leaves the decoder as it was, trainable."""
    model, guide, x = bare_vae()
    grid = grid_posterior(model, x)
    mean, std = grid.moments()
    proposal = LocalGuide(16, 2, loc=mean, scale=1.5 * std)
    assert_close(evaluate.log_px(model, proposal, x, num_samples=20000), grid.log_px, atol=0.03)
    assert evaluate.elbo(model, guide, x, num_samples=100).mean() < grid.log_px.mean()
    nuts = nuts_posterior(model, x[:2], num_samples=5, warmup_steps=5)
    assert set(nuts.sites) == {"z"} and nuts.samples.shape == (5, 2, 2)
    before = [p.clone() for p in model.parameters()]
    history = e_step(model, LocalGuide.from_guide(guide, x), x, steps=50)
    assert history.train_elbo[-1] > history.train_elbo[0]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.requires_grad for p in model.parameters())


def test_the_e_step_of_a_program_trained_with_labels_observes_no_label(recwarn):
    """Without labels the E-step passes every image as "no label": a program trained with
    --labels (Pyro's SS-VAE convention) then samples its class, as its guide does; it was
    passed class 0 for every image, and Pyro warned of a guide site the model observed."""
    spec = os.path.join(os.path.dirname(__file__), "programs", "ss_vae.py:make")
    config = Config(model=spec, labels=4, z_dim=2, hidden_dims=(8,))
    model, _ = build(config, (1, 4, 4), num_classes=3, train_size=12)
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.5))
    guide = LocalGuide(6, structure=model.structure)
    e_step(model, guide, x, steps=3)
    assert not [w for w in recwarn if "non-auxiliary vars in guide" in str(w.message)]
    trace = pyro.poutine.trace(guide).get_trace(x)
    assert "y" in trace.nodes and not trace.nodes["y"]["is_observed"]
