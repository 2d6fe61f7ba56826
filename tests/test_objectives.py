import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae import evaluate
from pyro_vae.config import Config, build
from pyro_vae.objectives import IWAE, kl_warmup
from tests.conftest import assert_close


@pytest.fixture
def vae():
    model, guide = build(Config(z_dim=3, hidden_dims=(16,)), (1, 6, 5))
    x = torch.bernoulli(torch.full((10, 1, 6, 5), 0.4))
    return model, guide, x


def _loss(elbo, model, guide, *args, seed=3):
    pyro.set_rng_seed(seed)
    return elbo.differentiable_loss(model, guide, *args)


def test_iwae_with_one_particle_is_trace_elbo(vae):
    model, guide, x = vae
    idx = torch.arange(10) * 3
    for args in [(x,), (x, None, idx, 40)]:
        iwae = _loss(IWAE(num_particles=1), model, guide, *args)
        trace = _loss(Trace_ELBO(), model, guide, *args)
        assert_close(iwae, trace, atol=1e-4)


def test_iwae_bound_matches_the_importance_weighted_evaluation(vae):
    model, guide, x = vae
    loss = _loss(IWAE(num_particles=50), model, guide, x)
    pyro.set_rng_seed(3)
    bound = evaluate.log_px(model, guide, x, num_samples=50)
    assert_close(loss, -bound.sum(), atol=1e-3)


def test_iwae_scales_a_subsampled_minibatch_after_the_log_sum_exp(vae):
    # Pyro's RenyiELBO would scale each log weight by N/B inside the log-sum-exp; the unbiased
    # minibatch estimate scales the per-image bounds, so it is N/B times the unsubsampled loss.
    model, guide, x = vae
    whole = _loss(IWAE(num_particles=8), model, guide, x)
    sub = _loss(IWAE(num_particles=8), model, guide, x, None, torch.arange(10), 40)
    assert_close(sub, 4 * whole, rtol=1e-5)


def test_iwae_bound_is_at_least_the_elbo_and_has_gradients(vae):
    model, guide, x = vae
    bounds = [
        -_loss(IWAE(num_particles=k), model, guide, x, seed=s).item()
        for k in (1, 100)
        for s in range(5)
    ]
    assert sum(bounds[5:]) > sum(bounds[:5])
    loss = IWAE(num_particles=4)(model, guide)(x)
    loss.backward()
    assert all(p.grad is not None for p in guide.parameters())


def pyro_style():
    """A program as Pyro's VAE tutorial writes one (plain functions, pyro.module, a size-less
    plate), through the door."""
    from torch import nn

    from pyro_vae.program import Program

    decoder, encoder = nn.Linear(3, 30), nn.Linear(30, 6)

    def model(x):
        pyro.module("decoder", decoder)
        with pyro.plate("data"):
            z = pyro.sample("z", dist.Normal(torch.zeros(len(x), 3), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x)

    def guide(x):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(x).chunk(2, -1)
        with pyro.plate("data"):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    x = torch.bernoulli(torch.full((10, 1, 6, 5), 0.4))
    program = Program(model, guide, x)
    return program.model, program.guide, x


@pytest.mark.parametrize("program", ["built-in", "pyro-style file"])
def test_beta_scales_exactly_the_kl_and_evaluation_ignores_it(program, vae):
    """``z_scale`` (--beta, the KL warm-up) weighs every latent site of any program."""
    model, guide, x = vae if program == "built-in" else pyro_style()
    losses = []
    for beta in (1.0, 2.0, 3.0):
        model.z_scale = guide.z_scale = beta
        losses.append(_loss(TraceMeanField_ELBO(), model, guide, x).item())
    # loss(beta) = -E log p(x|z) + beta KL: linear in beta with slope KL > 0
    kl = losses[1] - losses[0]
    assert kl > 0 and abs((losses[2] - losses[1]) - kl) < 1e-3
    pyro.set_rng_seed(0)
    scaled = evaluate.elbo(model, guide, x)
    model.z_scale = guide.z_scale = 1.0
    pyro.set_rng_seed(0)
    assert_close(scaled, evaluate.elbo(model, guide, x))


def test_kl_warmup_ramps_the_scale_linearly_to_beta(vae):
    model, guide, _ = vae
    hook = kl_warmup([model, guide], beta=2.0, epochs=4)
    seen = []
    for epoch in range(1, 7):
        hook(epoch)
        assert model.z_scale == guide.z_scale
        seen.append(model.z_scale)
    assert seen == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    kl_warmup([model], beta=0.5)(1)
    assert model.z_scale == 0.5


def test_a_built_in_module_on_its_own_scales_its_latents_by_its_own_z_scale(vae):
    """Used without the door, the built-in VAE scales "z" itself (Pyro's DMM idiom), by the
    same amount as the door's latent scale."""
    model, guide, x = vae
    model.z_scale = guide.z_scale = 2.0
    through_the_door = _loss(TraceMeanField_ELBO(), model, guide, x)
    model.z_scale = guide.z_scale = 1.0
    model.target.z_scale = guide.target.z_scale = 2.0
    on_its_own = _loss(TraceMeanField_ELBO(), model.target, guide.target, x)
    assert_close(through_the_door, on_its_own)
