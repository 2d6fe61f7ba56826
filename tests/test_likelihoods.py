import math

import pytest
import torch

from pyro_vae.errors import ConfigError
from pyro_vae.likelihoods import Gaussian, make_likelihood
from tests.conftest import assert_close


def test_fixed_sigma_gaussian_is_the_mse_plus_its_constant():
    sigma, x_shape = 0.3, (1, 6, 5)
    likelihood = make_likelihood("gaussian", x_shape, sigma=sigma)
    h = torch.randn(8, *x_shape)
    x = torch.rand(8, *x_shape)
    log_px = likelihood(h).to_event(3).log_prob(x)
    mse_sum = ((x - h.sigmoid()) ** 2).flatten(1).sum(1)
    d = math.prod(x_shape)
    assert_close(log_px, -mse_sum / (2 * sigma**2) - d / 2 * math.log(2 * math.pi * sigma**2))
    assert likelihood.outputs == 1


def test_learned_gaussian_takes_loc_and_scale_from_the_decoder():
    likelihood = make_likelihood("gaussian", (3, 4, 4))
    assert likelihood.outputs == 2
    h = torch.randn(5, 6, 4, 4) * 10
    fn = likelihood(h)
    assert fn.batch_shape == (5, 3, 4, 4)
    assert_close(fn.loc, h[:, :3].sigmoid())
    assert (fn.scale >= likelihood.min_scale).all()
    # the floor caps each pixel's log-density at -log(min_scale sqrt(2 pi))
    cap = -math.log(likelihood.min_scale * math.sqrt(2 * math.pi))
    assert (fn.log_prob(fn.loc) <= cap + 1e-5).all()


def test_continuous_bernoulli_is_a_density_on_the_unit_interval():
    fn = make_likelihood("continuous-bernoulli", (1,))(torch.tensor([-4.0, -0.5, 0.0, 3.0]))
    grid = torch.linspace(0, 1, 20001).unsqueeze(-1)
    integral = torch.trapezoid(fn.log_prob(grid).exp(), grid.squeeze(-1), dim=0)
    assert_close(integral, torch.ones(4), atol=1e-4)


def test_only_the_bernoulli_needs_binary_pixels():
    binary = {name: make_likelihood(name, (1, 2, 2)).binary for name in ("bernoulli",)}
    binary.update(
        {n: make_likelihood(n, (1, 2, 2)).binary for n in ("continuous-bernoulli", "gaussian")}
    )
    assert binary == {"bernoulli": True, "continuous-bernoulli": False, "gaussian": False}


@pytest.mark.parametrize(
    "name, sigma, message",
    [
        ("poisson", None, "unknown likelihood 'poisson'"),
        ("bernoulli", 0.1, "sigma fixes the scale of a gaussian"),
        ("gaussian", -1.0, "sigma must be a positive number"),
    ],
)
def test_bad_likelihoods_are_refused(name, sigma, message):
    with pytest.raises(ConfigError, match=message):
        make_likelihood(name, (1, 2, 2), sigma)


def test_gaussian_scale_floor_is_configurable():
    assert Gaussian(min_scale=0.05)(torch.full((2, 1, 1), -50.0)).scale.min() >= 0.05
