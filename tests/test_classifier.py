import pytest
import torch

import pyro_vae
from pyro_vae import classifier


@pytest.fixture(scope="module")
def small_data():
    data = pyro_vae.load_dataset("mnist-small", binarize="dynamic")
    data.train_x, data.train_y = data.train_x[:1000], data.train_y[:1000]
    return data


def test_the_classifier_learns_the_digits(small_data):
    net = classifier.train_classifier(small_data, epochs=10)
    assert classifier.accuracy(net, small_data.test_x, small_data.test_y) > 0.7
    assert classifier.recognised(net, small_data.test_x, threshold=0.5) > 0.7
    blank = torch.full((20, 1, 28, 28), 0.5)  # no digit: at least not confidently one
    assert classifier.recognised(net, blank, threshold=0.99) < 0.5


def label_run(z_weight, label_weight):
    """A tiny label CVAE whose decoder's first layer reads z and the label with these factors."""
    config = pyro_vae.Config(z_dim=3, hidden_dims=(16,), condition="label")
    model, guide = pyro_vae.build(config, (1, 28, 28), num_classes=10)
    with torch.no_grad():
        first = model.decoder.fc[0].weight
        first[:, :3] *= z_weight
        first[:, 3:] *= label_weight
    return pyro_vae.Run(config, model, guide, (1, 28, 28), num_classes=10)


@pytest.mark.parametrize(
    "z_weight, label_weight, expected",
    [(1.0, 0.0, 0.0), (0.0, 1.0, 1.0)],
    ids=["decoder ignores the label", "decoder ignores z"],
)
def test_label_effect_in_the_limits(z_weight, label_weight, expected):
    assert classifier.label_effect(label_run(z_weight, label_weight), n=50) == pytest.approx(
        expected, abs=0.02
    )


def test_label_effect_in_between():
    assert 0.05 < classifier.label_effect(label_run(1.0, 5.0), n=50) < 0.95
