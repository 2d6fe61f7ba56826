import io
import random
from types import SimpleNamespace

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from pyro_vae import evaluate
from pyro_vae.config import Config, build
from pyro_vae.data import Data, load_dataset
from pyro_vae.errors import CheckpointError, ConfigError, DataError, DivergenceError
from pyro_vae.guides import LocalGuide
from pyro_vae.train import STATE_KEYS, fit, rng_state, set_rng_state


@pytest.fixture(scope="module")
def mnist_small():
    return load_dataset("mnist-small", binarize="dynamic")


def test_training_beats_an_untrained_model_by_a_wide_margin(mnist_small):
    config = Config(z_dim=10, hidden_dims=(200,))
    model, guide = build(config, mnist_small.x_shape)
    before = evaluate.elbo(model, guide, mnist_small.test_x).mean().item()
    history = fit(
        model,
        guide,
        mnist_small,
        TraceMeanField_ELBO(),
        epochs=3,
        batch_size=100,
        lr=3e-3,
        quiet=True,
    )
    after = evaluate.elbo(model, guide, mnist_small.test_x).mean().item()
    assert history.epoch == [1, 2, 3]
    assert len(history.train_elbo) == len(history.test_elbo) == len(history.seconds) == 3
    assert history.test_elbo[-1] > history.test_elbo[0]
    assert before < -500  # an untrained decoder spreads each pixel near p=0.5: ~784 log 2 nats
    assert after > before + 300
    assert abs(history.test_elbo[-1] - after) < 3  # the recorded test ELBO is the real one


def test_same_seed_same_history(mnist_small):
    small = Data(
        "tiny",
        "dynamic",
        mnist_small.train_x[:256],
        mnist_small.train_y[:256],
        mnist_small.test_x[:64],
        mnist_small.test_y[:64],
    )
    histories = []
    for _ in range(2):
        pyro.set_rng_seed(7)
        model, guide = build(Config(z_dim=4, hidden_dims=(32,)), small.x_shape)
        histories.append(fit(model, guide, small, epochs=2, batch_size=64, quiet=True, seed=7))
    assert histories[0].train_elbo == histories[1].train_elbo
    assert histories[0].test_elbo == histories[1].test_elbo


def test_bad_arguments_are_refused(mnist_small):
    model, guide = build(Config(z_dim=2, hidden_dims=(8,)), mnist_small.x_shape)
    with pytest.raises(ConfigError, match="epochs"):
        fit(model, guide, mnist_small, epochs=0)
    with pytest.raises(ConfigError, match="learning rate"):
        fit(model, guide, mnist_small, lr=-1.0)
    empty = Data(
        "empty",
        "static",
        mnist_small.train_x[:0],
        mnist_small.train_y[:0],
        mnist_small.test_x,
        mnist_small.test_y,
    )
    with pytest.raises(DataError, match="empty"):
        fit(model, guide, empty)


def test_divergence_names_epoch_and_step(mnist_small):
    model, guide = build(Config(z_dim=2, hidden_dims=(8,)), mnist_small.x_shape)
    with torch.no_grad():
        guide.encoder.fc[0].weight.fill_(float("nan"))
    with pytest.raises(
        DivergenceError,
        match="parameters became non-finite at epoch 1, step 1; try a lower learning rate",
    ):
        fit(model, guide, mnist_small, epochs=1, quiet=True)


def _tiny(data, n=256):
    return Data(
        "tiny",
        "dynamic",
        data.train_x[:n],
        data.train_y[:n],
        data.test_x[:64],
        data.test_y[:64],
    )


def _fit_tiny(data, **kwargs):
    pyro.set_rng_seed(7)
    model, guide = build(Config(z_dim=4, hidden_dims=(32,)), data.x_shape)
    history = fit(model, guide, data, epochs=2, batch_size=64, quiet=True, seed=7, **kwargs)
    return model, guide, history


def _round_trip(state):
    """What a checkpoint file gives back: torch.save, then a weights-only load."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_resuming_from_any_checkpoint_gives_the_same_parameters_and_history(mnist_small):
    small = _tiny(mnist_small, 250)  # 4 steps per epoch, the last one short
    states = []
    model, guide, history = _fit_tiny(
        small, checkpoint=lambda s: states.append(_round_trip(s)), checkpoint_every=3
    )
    # Steps 3 (mid-epoch 1), end of epoch 1, step 6 (mid-epoch 2), end of epoch 2.
    assert [(s["epoch"], s["step"]) for s in states] == [(0, 3), (1, 0), (1, 2), (2, 0)]
    expected = {**model.state_dict(), **guide.state_dict()}
    for state in states:
        # A fresh model with other initial weights and another global RNG state.
        pyro.set_rng_seed(123)
        torch.rand(5)
        model2, guide2 = build(Config(z_dim=4, hidden_dims=(32,)), small.x_shape)
        history2 = fit(
            model2, guide2, small, epochs=2, batch_size=64, quiet=True, seed=99, resume_from=state
        )
        resumed = {**model2.state_dict(), **guide2.state_dict()}
        for name, value in expected.items():
            assert torch.equal(resumed[name], value), (state["epoch"], state["step"], name)
        assert history2.train_elbo == history.train_elbo
        assert history2.test_elbo == history.test_elbo


def test_checkpoint_state_is_plain_and_refuses_another_setup(mnist_small):
    small = _tiny(mnist_small)
    states = []
    _fit_tiny(small, checkpoint=lambda s: states.append(_round_trip(s)))
    state = states[0]
    assert set(STATE_KEYS) | {"model", "guide"} == set(state)
    model, guide = build(Config(z_dim=4, hidden_dims=(32,)), small.x_shape)
    with pytest.raises(CheckpointError, match="batch_size 64, not 32"):
        fit(model, guide, small, epochs=2, batch_size=32, resume_from=state)
    with pytest.raises(CheckpointError, match="training set size 256, not 128"):
        fit(model, guide, _tiny(mnist_small, 128), epochs=2, batch_size=64, resume_from=state)
    other, other_guide = build(Config(z_dim=5, hidden_dims=(32,)), small.x_shape)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        fit(other, other_guide, small, epochs=2, batch_size=64, resume_from=state)
    with pytest.raises(CheckpointError, match="no training state"):
        fit(model, guide, small, epochs=2, batch_size=64, resume_from={"model": {}})


def test_rng_state_round_trips_every_generator():
    np.random.randn()  # NumPy caches the second Gaussian of each pair: that is state too
    state = _round_trip(rng_state())
    expected = torch.rand(3), random.random(), np.random.randn(3)
    set_rng_state(state)
    again = torch.rand(3), random.random(), np.random.randn(3)
    assert torch.equal(again[0], expected[0])
    assert again[1] == expected[1]
    assert (again[2] == expected[2]).all()


def test_gradient_clipping_bounds_the_update(mnist_small):
    small = _tiny(mnist_small)
    moves = {}
    for clip_grad in (None, 1e-9):
        pyro.set_rng_seed(7)
        model, guide = build(Config(z_dim=4, hidden_dims=(32,)), small.x_shape)
        before = [p.detach().clone() for p in model.parameters()]
        fit(model, guide, small, epochs=1, batch_size=64, quiet=True, clip_grad=clip_grad)
        moves[clip_grad] = max(
            (p - b).abs().max().item() for p, b in zip(model.parameters(), before)
        )
    # Adam moves each weight by about lr per step, whatever the gradient's size. Clipped to a norm
    # of 1e-9, every gradient entry is at most 1e-9, so each of the 4 steps moves a weight by at
    # most lr * 1e-9 / eps (Adam's eps = 1e-8).
    assert moves[None] > 1e-3
    assert moves[1e-9] <= 4 * 1e-3 * 1e-9 / 1e-8
    with pytest.raises(ConfigError, match="clip_grad must be a positive number"):
        fit(model, guide, small, clip_grad=0.0)


class _NaNGradientAfter(Trace_ELBO):
    """A finite loss whose gradient is NaN after ``steps`` evaluations: 0 * sqrt(p - p) is 0, but
    its derivative is 0 * inf."""

    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def differentiable_loss(self, model, guide, *args, **kwargs):
        self.steps -= 1
        loss = super().differentiable_loss(model, guide, *args, **kwargs)
        if self.steps >= 0:
            return loss
        weight = next(guide.parameters())
        return loss + 0 * (weight - weight).sqrt().sum()


def test_a_non_finite_gradient_stops_training_before_the_step(mnist_small):
    small = _tiny(mnist_small)
    model, guide = build(Config(z_dim=4, hidden_dims=(32,)), small.x_shape)
    states = []
    with pytest.raises(
        DivergenceError, match="the gradient norm became nan at epoch 2, step 2; try a lower"
    ):
        fit(
            model,
            guide,
            small,
            _NaNGradientAfter(5),
            epochs=2,
            batch_size=64,
            quiet=True,
            checkpoint=states.append,
        )
    # No step was taken with the NaN gradient, and no checkpoint after it.
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [(s["epoch"], s["step"]) for s in states] == [(1, 0)]


@pytest.mark.parametrize("e_steps", [0, 2], ids=["joint", "alternating"])
def test_variational_em_trains_decoder_and_local_parameters(mnist_small, e_steps):
    x = load_dataset("mnist-small", binarize="static").train_x[:200]
    data = Data("small", "static", x, mnist_small.train_y[:200], x[:0], mnist_small.test_y[:0])
    model, _ = build(Config(z_dim=4, hidden_dims=(32,)), data.x_shape)
    guide = LocalGuide(200, 4)
    before = evaluate.elbo(model, guide, x).mean().item()
    history = fit(
        model, guide, data, epochs=5, batch_size=50, lr=0.03, e_steps=e_steps, test_samples=0
    )
    after = evaluate.elbo(model, guide, x).mean().item()
    assert history.test_elbo == [] and len(history.train_elbo) == 5
    assert after > before + 150, (before, after)


def test_schedule_arguments_are_checked(mnist_small):
    model, guide = build(Config(z_dim=2, hidden_dims=(8,)), mnist_small.x_shape)
    with pytest.raises(ConfigError, match="e_steps must be a non-negative integer"):
        fit(model, guide, mnist_small, e_steps=-1)
    with pytest.raises(ConfigError, match="lr_decay"):
        fit(model, guide, mnist_small, lr_decay=1.5)


def test_time_limit_stops_before_an_epoch_that_would_overrun(mnist_small, monkeypatch):
    small = _tiny(mnist_small)
    model, guide = build(Config(z_dim=2, hidden_dims=(8,)), small.x_shape)
    clock = [0.0]  # each epoch takes 10 fake seconds
    monkeypatch.setattr("pyro_vae.train.time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def tick(epoch):
        clock[0] += 10.0

    history = fit(model, guide, small, epochs=5, quiet=True, on_epoch=tick, time_limit=25)
    assert history.epoch == [1, 2]  # a third epoch would end at 30 s
    history = fit(model, guide, small, epochs=2, quiet=True, on_epoch=tick, time_limit=1e-9)
    assert history.epoch == [1]  # the first epoch always runs
    with pytest.raises(ConfigError, match="time_limit must be a positive number"):
        fit(model, guide, small, time_limit=0)


def test_a_per_image_guide_is_tested_by_an_e_step_on_the_test_images(mnist_small):
    from pyro_vae.inference import e_step

    x = load_dataset("mnist-small", binarize="static").train_x[:200]
    t = mnist_small.test_x[:100]
    data = Data("small", "static", x, mnist_small.train_y[:200], t, mnist_small.test_y[:100])
    model, _ = build(Config(z_dim=4, hidden_dims=(32,)), data.x_shape)
    history = fit(model, LocalGuide(200, 4), data, epochs=3, batch_size=50, lr=0.03)
    assert history.test_elbo[:2] == [None, None]  # no q for the test images until an E-step
    q = LocalGuide(100, 4)
    e_step(model, q, t, steps=300, seed=1)
    real = evaluate.elbo(model, q, t, num_samples=10).mean().item()
    assert abs(history.test_elbo[-1] - real) < 3, (history.test_elbo[-1], real)
