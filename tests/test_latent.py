import math

import pytest
import torch

from pyro_vae import latent
from pyro_vae.config import Config, build
from pyro_vae.errors import ConfigError
from pyro_vae.runs import Run
from tests.conftest import assert_close

X_SHAPE = (1, 6, 5)


def tiny_run(z_dim):
    config = Config(z_dim=z_dim, hidden_dims=(8,))
    model, guide = build(config, X_SHAPE)
    return Run(config, model, guide, X_SHAPE)


def images(n, seed=0):
    return torch.bernoulli(
        torch.full((n, *X_SHAPE), 0.5), generator=torch.Generator().manual_seed(seed)
    )


def test_lerp_and_slerp_end_points_and_norms():
    z0, z1 = torch.tensor([3.0, 0.0, 0.0]), torch.tensor([0.0, 3.0, 0.0])
    line, arc = latent.lerp(z0, z1, 5), latent.slerp(z0, z1, 5)
    for path in (line, arc):
        assert_close(path[0], z0)
        assert_close(path[-1], z1)
    assert_close(line[2], (z0 + z1) / 2)
    # equal norms: the arc keeps them, the line's midpoint is shorter by cos(45 degrees)
    assert_close(arc.norm(dim=1), torch.full((5,), 3.0))
    assert line[2].norm() == pytest.approx(3.0 / math.sqrt(2))
    # equal angles between successive points on the arc
    cos = (arc[1:] * arc[:-1]).sum(1) / 9.0
    assert_close(cos, torch.full((4,), math.cos(math.pi / 8)))
    # parallel codes fall back to the line instead of dividing by sin(0)
    assert_close(latent.slerp(z0, 2 * z0, 3), latent.lerp(z0, 2 * z0, 3))


def test_interpolate_decodes_the_path_between_posterior_means():
    run = tiny_run(3)
    x = images(2)
    loc, _ = run.encode(x)
    out = latent.interpolate(run, x[0], x[1], steps=4, method="linear")
    assert out.shape == (4, *X_SHAPE)
    assert_close(out, run.decode(latent.lerp(loc[0], loc[1], 4)))
    with pytest.raises(ConfigError, match="unknown interpolation"):
        latent.interpolate(run, x[0], x[1], method="cubic")


def test_manifold_grid_is_evenly_spaced_in_probability():
    run = tiny_run(2)
    grid = latent.manifold_grid(run, n=5, span=0.8)
    q = latent.grid_axis(5, 0.8)
    assert_close(torch.distributions.Normal(0.0, 1.0).cdf(q), torch.linspace(0.1, 0.9, 5))
    assert grid.shape == (25, *X_SHAPE)
    # row 0, column 4 is the top-right corner: z = (largest, largest)
    assert_close(grid[4], run.decode(torch.stack([q[4], q[4]])[None])[0])
    assert_close(grid[20], run.decode(torch.stack([q[0], q[0]])[None])[0])
    with pytest.raises(ConfigError, match="z_dim = 2"):
        latent.manifold_grid(tiny_run(3))


def test_traversals_sweep_one_dimension_per_row():
    run = tiny_run(3)
    x = images(1)
    loc, _ = run.encode(x)
    values = torch.tensor([-2.0, 0.0, 2.0])
    out = latent.traversals(run, x, dims=[0, 2], values=values)
    assert out.shape == (6, *X_SHAPE)
    expected = loc.repeat(3, 1)
    expected[:, 2] = values
    assert_close(out[3:], run.decode(expected))
    with pytest.raises(ConfigError, match="dimension 3 does not exist"):
        latent.traversals(run, x, dims=[3])


def test_corruptions_and_denoising():
    x = images(50)
    noisy = latent.flip_pixels(x, p=0.2, seed=1)
    assert set(noisy.unique().tolist()) <= {0.0, 1.0}
    assert abs((noisy != x).float().mean().item() - 0.2) < 0.03
    hidden = latent.occlude(x)
    assert (hidden[..., 3:, :] == 0).all() and torch.equal(hidden[..., :3, :], x[..., :3, :])
    assert torch.equal(
        latent.visible(x), hidden.new_ones(x.shape).index_fill(-2, torch.arange(3, 6), 0).bool()
    )
    run = tiny_run(3)
    encoder = latent.denoise(run, noisy, method="encoder")
    assert_close(encoder, run.decode(run.encode(noisy)[0]))
    assert latent.pixel_error(x, x) == 0 and latent.pixel_error(noisy, x) == pytest.approx(
        (noisy != x).float().mean().item()
    )


def run_that_knows(clean, sure=0.99):
    """A run whose decoder means are ``clean`` pushed to ``sure`` / ``1 - sure``, whatever z."""
    run = tiny_run(3)
    last = run.model.decoder.fc[-1]
    with torch.no_grad():
        last.weight.zero_()
        probs = clean * sure + (1 - clean) * (1 - sure)
        last.bias.copy_(torch.logit(probs).reshape(-1))
    return run


def test_denoising_by_fitting_q_keeps_seen_pixels_unless_the_model_is_sure():
    clean = images(1)[0]
    noisy = latent.flip_pixels(clean.expand(20, *X_SHAPE), p=0.1, seed=2)
    run = run_that_knows(clean)
    # Flip noise at 10 %: a pixel the model is 99 % sure of overrules the seen one.
    restored = latent.denoise(run, noisy, flip=0.1, steps=5)
    assert latent.pixel_error(restored, clean.expand_as(noisy)) == 0
    # Noise at 0.5 %: the seen pixel wins against a model that is only 99 % sure.
    restored = latent.denoise(run, noisy, flip=0.005, steps=5)
    assert torch.equal(restored >= 0.5, noisy >= 0.5)
    # No flips: seen pixels are kept exactly; hidden ones get the decoder's mean.
    seen = latent.visible(noisy)
    restored = latent.denoise(run, latent.occlude(noisy), observed=seen, steps=5)
    assert torch.equal(restored[seen], noisy[seen])
    assert_close(restored[~seen], run.decode(torch.zeros(20, 3))[~seen])


def test_denoising_arguments_are_checked():
    run = tiny_run(3)
    with pytest.raises(ConfigError, match="unknown denoising method 'median'"):
        latent.denoise(run, images(2), method="median")
    with pytest.raises(ConfigError, match=r"flip must be a rate in \[0, 0.5\)"):
        latent.denoise(run, images(2), flip=0.7)
