import pyro
import pytest
import torch
from pyro import poutine

from pyro_vae.config import Config, build
from pyro_vae.errors import DataError
from pyro_vae.nets import MLPDecoder, MLPEncoder, make_fc


@pytest.fixture
def vae():
    return build(Config(z_dim=3, hidden_dims=(16,)), (1, 6, 5))


def test_make_fc_builds_the_widths_it_is_given():
    net = make_fc([7, 11, 13, 2])
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(7, 11), (11, 13), (13, 2)]


def test_networks_take_leading_batch_dims():
    enc, dec = MLPEncoder((1, 6, 5), 3, [8]), MLPDecoder((1, 6, 5), 3, [8])
    loc, scale = enc(torch.rand(4, 2, 1, 6, 5))
    assert loc.shape == scale.shape == (4, 2, 3) and (scale > 0).all()
    assert dec(torch.randn(7, 4, 2, 3)).shape == (7, 4, 2, 1, 6, 5)


def test_model_and_guide_sites_and_shapes(vae):
    model, guide = vae
    x = torch.bernoulli(torch.full((4, 1, 6, 5), 0.5))
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x)
    assert guide_trace.nodes["z"]["value"].shape == (4, 3)
    assert model_trace.nodes["z"]["fn"].event_shape == (3,)
    assert model_trace.nodes["x"]["is_observed"]
    assert model_trace.nodes["x"]["fn"].batch_shape == (4,)
    assert model_trace.nodes["x"]["fn"].event_shape == (1, 6, 5)
    assert {"z", "x", "data"} <= set(model_trace.nodes)


def test_subsampled_plate_scales_to_the_dataset_size(vae):
    model, guide = vae
    x = torch.bernoulli(torch.full((4, 1, 6, 5), 0.5))
    idx = torch.tensor([3, 17, 40, 99])
    trace = poutine.trace(model).get_trace(x, None, idx, 100)
    assert trace.nodes["x"]["scale"] == 25.0
    assert trace.nodes["data"]["value"].tolist() == idx.tolist()


def test_model_generates_without_data(vae):
    model, _ = vae
    assert model(size=5).shape == (5, 1, 6, 5)


def test_non_binary_data_points_at_binarize(vae):
    model, guide = vae
    x = torch.full((2, 1, 6, 5), 0.3)
    with pytest.raises(DataError, match="--binarize"):
        pyro.infer.Trace_ELBO().loss(model, guide, x)
