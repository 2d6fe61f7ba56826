import pyro
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from pyro_vae import evaluate
from pyro_vae.config import Config, build
from pyro_vae.data import Data, load_dataset
from pyro_vae.errors import ConfigError, DataError, DivergenceError
from pyro_vae.guides import LocalGuide
from pyro_vae.train import fit


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
