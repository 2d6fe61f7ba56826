import pytest
import torch

from pyro_vae.errors import ConfigError
from pyro_vae.nets import (
    ACTIVATIONS,
    ConvDecoder,
    ConvEncoder,
    join,
    linear_join,
    make_networks,
)
from tests.conftest import assert_close


@pytest.mark.parametrize(
    "x_shape, channels",
    [((1, 28, 28), [8, 16]), ((3, 32, 32), [8, 16, 16]), ((3, 64, 64), [4, 8, 8, 16])],
)
def test_conv_networks_round_trip_any_leading_dims(x_shape, channels):
    enc, dec = make_networks("conv", x_shape, 5, channels, outputs=2)
    x = torch.rand(2, 3, *x_shape)
    loc, scale = enc(x)
    assert loc.shape == scale.shape == (2, 3, 5) and (scale > 0).all()
    # (K, B, z_dim) latents, as in a vectorized particle plate
    out = dec(torch.randn(7, 3, 5))
    assert out.shape == (7, 3, 2 * x_shape[0], *x_shape[1:])


def test_conv_networks_take_a_condition():
    enc = ConvEncoder((1, 28, 28), 4, [8, 16], c_dim=10)
    dec = ConvDecoder((1, 28, 28), 4, [16, 8], c_dim=10)
    c = torch.eye(10)[:6]
    assert enc(torch.rand(6, 1, 28, 28), c)[0].shape == (6, 4)
    assert dec(torch.randn(5, 6, 4), c).shape == (5, 6, 1, 28, 28)


def test_batch_norm_sees_particles_and_images_as_one_batch():
    dec = ConvDecoder((1, 8, 8), 2, [4, 4])
    z = torch.randn(3, 5, 2)
    # In training mode batch norm normalizes over all 15 rows: flattening first gives the same.
    assert torch.allclose(dec(z), dec(z.reshape(15, 2)).reshape(3, 5, 1, 8, 8), atol=1e-5)


def test_sizes_must_be_divisible_by_the_strides():
    with pytest.raises(ConfigError, match="divisible by 8, got 28x28"):
        make_networks("conv", (1, 28, 28), 4, [8, 8, 8])
    with pytest.raises(ConfigError, match="unknown net 'rnn'"):
        make_networks("rnn", (1, 28, 28), 4, [8])


def test_a_split_first_layer_equals_the_layer_on_the_joined_input():
    """Images (B, D) meet the K enumerated one-hot classes (K, 1, K): the split weight gives
    what the layer gives on the concatenation, (K, B, out), and the MLPs use it."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(6 + 3, 5)
    h, c = torch.randn(4, 6), torch.eye(3)[:, None, :]
    assert_close(linear_join(layer, h, c), layer(join(h, c)), atol=1e-6)
    plain = torch.nn.Linear(6, 5)
    assert_close(linear_join(plain, h, None), plain(h))
    encoder, decoder = make_networks("mlp", (1, 2, 3), 2, [7], c_dim=3)
    x = torch.rand(4, 1, 2, 3)
    loc, _ = encoder(x, c)
    assert loc.shape == (3, 4, 2)
    assert_close(loc, encoder.fc(join(x.reshape(4, -1), c)).chunk(2, -1)[0], atol=1e-6)
    out = decoder(torch.randn(3, 4, 2), c)
    assert out.shape == (3, 4, 1, 2, 3)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_the_mlps_hidden_layers_take_the_chosen_activation(name):
    encoder, decoder = make_networks("mlp", (1, 4, 4), 2, [8, 6], activation=name)
    for net in (encoder, decoder):
        hidden = [m for m in net.fc if not isinstance(m, torch.nn.Linear)]
        assert len(hidden) == 2
        assert all(type(m) is ACTIVATIONS[name] for m in hidden)
    loc, scale = encoder(torch.rand(3, 1, 4, 4))
    assert decoder(loc).shape == (3, 1, 4, 4) and (scale > 0).all()


def test_an_activation_is_refused_for_the_conv_networks_and_unknown_names():
    with pytest.raises(ConfigError, match="the conv networks use LeakyReLU"):
        make_networks("conv", (1, 28, 28), 4, [8], activation="relu")
    with pytest.raises(ConfigError, match="unknown activation 'tanh'"):
        make_networks("mlp", (1, 28, 28), 4, [8], activation="tanh")
