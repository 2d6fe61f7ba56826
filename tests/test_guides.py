import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae import evaluate
from pyro_vae.config import Config, build
from pyro_vae.errors import DataError
from pyro_vae.guides import DeltaGuide, LocalGuide
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
