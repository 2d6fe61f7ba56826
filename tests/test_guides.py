import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae import evaluate
from pyro_vae.config import Config, build
from pyro_vae.errors import DataError
from pyro_vae.guides import DeltaGuide, LocalGuide
from tests.bare import bare_vae
from tests.conftest import assert_close


@pytest.fixture
def vae():
    return build(Config(z_dim=3, hidden_dims=(16,)), (1, 6, 5))


def binary_images(n):
    return torch.bernoulli(torch.full((n, 1, 6, 5), 0.5))


def test_local_guide_picks_its_rows_through_the_subsampled_plate(vae):
    model, _ = vae
    guide = LocalGuide(10, 3, loc=torch.arange(30.0).reshape(10, 3))
    x, idx = binary_images(3), torch.tensor([7, 2, 5])
    guide_trace = poutine.trace(guide).get_trace(x, None, idx, 10)
    fn = guide_trace.nodes["z"]["fn"]
    assert_close(fn.mean, guide.loc[idx])
    assert guide_trace.nodes["z"]["scale"] == 10 / 3  # the plate scales like the model's
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        x, None, idx, 10
    )
    assert model_trace.nodes["data"]["value"].tolist() == [7, 2, 5]


def test_local_guide_refuses_images_it_has_no_parameters_for():
    with pytest.raises(DataError, match="holds parameters for 4 images, got 5"):
        LocalGuide(4, 2).z_dist(binary_images(5))
    with pytest.raises(DataError, match=r"shape \(4, 2\)"):
        LocalGuide(4, 2, loc=torch.zeros(3, 2))


def test_semi_amortized_with_no_refinement_is_the_amortized_guide(vae):
    model, guide = vae
    x = binary_images(8)
    local = LocalGuide.from_guide(guide, x)
    pyro.set_rng_seed(3)
    a = evaluate.log_weights(model, guide, x, num_samples=5)
    pyro.set_rng_seed(3)
    b = evaluate.log_weights(model, local, x, num_samples=5)
    assert_close(a, b, atol=1e-5)


def test_a_bare_built_in_guide_starts_a_local_guide_at_its_q():
    """AmortizedGuide(...) made by hand, never through the door: its local guide holds the
    built-in models' one site (guides.one_site), at the encoder's q image for image."""
    model, guide, x = bare_vae(n=8)
    local = LocalGuide.from_guide(guide, x)
    assert local.structure.latent_names == ("z",) and local.loc.shape == (8, 2)
    pyro.set_rng_seed(3)
    a = evaluate.log_weights(model, guide, x, num_samples=5)
    pyro.set_rng_seed(3)
    b = evaluate.log_weights(model, local, x, num_samples=5)
    assert_close(a, b, atol=1e-5)
    assert local.fresh(3).structure == local.structure


def test_delta_guide_scores_the_joint_at_its_point(vae):
    model, guide = vae
    x = binary_images(4)
    delta = DeltaGuide(guide)
    z = guide.z_dist(x).mean
    expected = model.z_dist().log_prob(z) + model.x_dist(z).log_prob(x)
    log_w = evaluate.log_weights(model, delta, x, num_samples=3)
    assert log_w.shape == (3, 4)
    # Every sample is the same point and q contributes nothing: log w = log p(x, z).
    assert_close(log_w, expected.expand(3, 4), atol=1e-4)


MIXTURE_MEANS = torch.tensor([-2.0, 0.0, 3.0])
MIXTURE_PROBS = torch.tensor([0.2, 0.3, 0.5])


def mixture_model(x, y=None):
    """A class ``c`` moves the first number, a code ``z`` the second: p(c, z | x) = p(c | x1)
    p(z | x2), so a per-image q(c) q(z) can equal the posterior."""
    import pyro.distributions as dist

    with pyro.plate("data", x.shape[0]):
        c = pyro.sample("c", dist.OneHotCategorical(MIXTURE_PROBS))
        z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
        loc = torch.cat(torch.broadcast_tensors((c * MIXTURE_MEANS).sum(-1, keepdim=True), z), -1)
        pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)


def mixture_guide(x, y=None):
    import pyro.distributions as dist

    with pyro.plate("data", x.shape[0]):
        pyro.sample("c", dist.OneHotCategorical(logits=torch.zeros(3)))
        pyro.sample("z", dist.Normal(0.0, 1.0).expand([1]).to_event(1))


def test_a_local_guide_holds_a_categorical_q_per_image_for_a_discrete_site():
    """Fitted from the prior by the E-step, q(c) q(z) reaches the exact posterior: the ELBO meets
    the closed-form log p(x) and q(c) the posterior class probabilities."""
    import math

    import pyro.distributions as dist

    from pyro_vae import program
    from pyro_vae.inference import e_step

    pyro.set_rng_seed(0)
    x = torch.randn(5, 2) * 2
    model, _ = program.as_program(mixture_model, mixture_guide, x)
    q = LocalGuide(5, structure=model.structure)
    e_step(model, q, x, steps=300)
    joint = MIXTURE_PROBS.log() + dist.Normal(MIXTURE_MEANS, 1.0).log_prob(x[:, :1])
    exact = joint.logsumexp(-1) + dist.Normal(0.0, math.sqrt(2)).log_prob(x[:, 1])
    elbo = evaluate.elbo(model, q, x, num_samples=2000)
    assert (exact - elbo).max() < 0.05 and (exact - elbo).min() > -0.01
    assert_close(evaluate.log_px(model, q, x, num_samples=2000), exact, atol=0.02)
    q_c = q.site_dists(x)["c"]
    assert_close(q_c.probs, joint.softmax(-1), atol=0.02)
    # a Delta over it keeps the class's q: the point mass is on z
    assert DeltaGuide(q).site_dists(x)["c"] is not None
    assert isinstance(DeltaGuide(q).site_dists(x)["z"], dist.Delta)
