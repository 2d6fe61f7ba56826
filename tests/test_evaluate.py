import math

import pyro
import pytest
import torch

from pyro_vae import evaluate
from tests.bare import bare_vae
from tests.conftest import assert_close
from tests.linear_gaussian import GaussianGuide, LinearGaussian, plain_functions


@pytest.fixture
def model_and_data():
    model = LinearGaussian(x_dim=5, z_dim=2, sigma=0.5)
    pyro.set_rng_seed(1)
    x = model(size=512).detach()
    return model, x


def exact_guide(model):
    loc_fn = lambda x: model.exact_posterior(x)[0]  # noqa: E731
    _, cov = model.exact_posterior(torch.zeros(1, 5))
    return GaussianGuide(loc_fn, torch.linalg.cholesky(cov))


def poor_guide(model):
    # The right shape of answer, the wrong numbers: a shifted mean and a too-wide scale.
    loc_fn = lambda x: model.exact_posterior(x)[0] + 0.1  # noqa: E731
    _, cov = model.exact_posterior(torch.zeros(1, 5))
    return GaussianGuide(loc_fn, 1.5 * torch.linalg.cholesky(cov))


def test_exact_posterior_guide_gives_exact_log_px(model_and_data):
    model, x = model_and_data
    guide = exact_guide(model)
    exact = model.exact_log_px(x)
    # With q = p(z|x), every importance weight equals p(x): the ELBO is tight, with zero variance.
    log_w = evaluate.log_weights(model, guide, x, num_samples=7)
    assert log_w.shape == (7, 512)
    assert_close(log_w, exact.expand(7, 512), atol=1e-4)
    assert_close(evaluate.elbo(model, guide, x, num_samples=3), exact, atol=1e-4)
    assert_close(evaluate.log_px(model, guide, x, num_samples=3), exact, atol=1e-4)


def test_elbo_below_log_px_and_iwae_approaches_it(model_and_data):
    model, x = model_and_data
    guide = poor_guide(model)
    exact = model.exact_log_px(x).mean().item()
    elbo = evaluate.elbo(model, guide, x, num_samples=200).mean().item()
    estimates = [
        evaluate.log_px(model, guide, x, num_samples=k).mean().item() for k in (1, 3, 30, 2000)
    ]
    assert elbo < exact - 0.5  # a poor guide leaves a clear gap
    # K=1 is the ELBO; more samples tighten the bound towards log p(x) from below.
    assert abs(estimates[0] - elbo) < 0.3  # 4 standard errors of a 512-image mean
    assert all(a < b for a, b in zip(estimates, estimates[1:])), estimates
    assert estimates[-1] <= exact + 0.02
    assert exact - estimates[-1] < 0.1 * (exact - elbo)


def test_chunking_does_not_change_the_estimate(model_and_data):
    model, x = model_and_data
    guide = poor_guide(model)
    pyro.set_rng_seed(3)
    whole = evaluate.log_px(model, guide, x, num_samples=200, max_rows=10**6)
    pyro.set_rng_seed(3)
    chunked = evaluate.log_px(model, guide, x, num_samples=200, max_rows=64)
    # Different random draws, same quantity: both sit within Monte Carlo error of each other.
    assert whole.shape == chunked.shape == (512,)
    assert abs(whole.mean() - chunked.mean()) < 0.05
    assert torch.isfinite(chunked).all()


def test_log_px_of_one_sample_is_the_elbo_estimator(model_and_data):
    model, x = model_and_data
    guide = poor_guide(model)
    pyro.set_rng_seed(5)
    a = evaluate.log_px(model, guide, x, num_samples=1)
    pyro.set_rng_seed(5)
    b = evaluate.elbo(model, guide, x, num_samples=1)
    assert_close(a, b, atol=1e-5)
    assert math.isfinite(a.mean().item())


def test_a_program_that_cannot_be_enumerated_has_its_class_sampled_from_the_guide(capsys):
    """A program that reshapes its class sample to one per image breaks under enumeration; its
    class is then sampled from q(y|x), said once, and the estimates are those of its twin
    written for enumeration (the same networks), whose class is summed out exactly. Three
    images for a class of three values: the reshape would pass on the batch itself."""
    from pyro_vae import program
    from tests.programs.reshaped_class import ReshapedClass

    pyro.set_rng_seed(0)
    x = (torch.rand(3, 1, 6, 6) > 0.5).float()
    broken = ReshapedClass(36, z_dim=2, hidden=8, num_classes=3)
    twin = ReshapedClass(36, z_dim=2, hidden=8, num_classes=3, reshape=False)
    twin.load_state_dict(broken.state_dict())
    model, guide = program.as_program(broken.model, broken.guide, x)
    twin_model, twin_guide = program.as_program(twin.model, twin.guide, x)
    for estimate in (evaluate.log_px, evaluate.elbo):
        pyro.set_rng_seed(1)
        sampled = estimate(model, guide, x, num_samples=1000)
        summed = estimate(twin_model, twin_guide, x, num_samples=1000)
        assert_close(sampled, summed, atol=0.15)
    assert evaluate.sampled_instead(model) and not evaluate.sampled_instead(twin_model)
    said = capsys.readouterr().err.strip().splitlines()
    assert len(said) == 1 and "samples the discrete site(s) 'y' from the guide" in said[0]


def test_plain_functions_are_evaluated_through_the_door():
    """A model and guide written as plain Pyro functions (their own site and plate names, the
    guide's parameters pyro.param statements), never through the door: evaluation takes them
    through it. With q near the posterior (its exact mean, 1.5 times its marginal sds), the
    importance-weighted estimate reaches the closed-form log p(x) and the ELBO stays below."""
    truth, model, guide = plain_functions()
    pyro.set_rng_seed(0)
    x = truth(size=8).detach()
    _, cov = truth.exact_posterior(x)
    gain = truth.W @ cov / truth.sigma**2  # the posterior mean is x @ gain - b @ gain
    pyro.param("A", gain.clone())
    pyro.param("c", -truth.b @ gain)
    pyro.param("s", 1.5 * cov.diag().sqrt(), constraint=torch.distributions.constraints.positive)
    exact = truth.exact_log_px(x)
    assert_close(evaluate.log_px(model, guide, x, num_samples=20000), exact, atol=0.03)
    assert (evaluate.elbo(model, guide, x, num_samples=100) < exact).all()
    assert evaluate.log_weights(model, guide, x, num_samples=3).shape == (3, 8)
    assert sorted(pyro.get_param_store().keys()) == ["A", "c", "s"]


def test_a_bare_built_in_vae_is_evaluated_through_the_door():
    """VAE(...) with AmortizedGuide(...), made by hand and never through the door: the estimates
    are those of the same networks after the door (pyro_vae.as_program), the ELBO below the
    importance-weighted bound."""
    from pyro_vae.program import as_program

    model, guide, x = bare_vae()
    doored = as_program(model, guide, x)
    for estimate in (evaluate.elbo, evaluate.log_px):
        pyro.set_rng_seed(1)
        bare = estimate(model, guide, x, num_samples=50)
        pyro.set_rng_seed(1)
        assert_close(bare, estimate(*doored, x, num_samples=50), atol=1e-5)
    pyro.set_rng_seed(1)
    elbo = evaluate.elbo(model, guide, x, num_samples=200)
    assert elbo.mean() < evaluate.log_px(model, guide, x, num_samples=200).mean()
