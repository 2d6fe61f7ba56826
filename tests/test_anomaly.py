import pytest
import torch

from pyro_vae.anomaly import SCORES, anomaly_scores, auroc, detection_table
from pyro_vae.config import Config, build
from pyro_vae.data import load_dataset
from pyro_vae.errors import DataError
from pyro_vae.runs import Run
from pyro_vae.train import fit


@pytest.mark.parametrize(
    "scores_in, scores_out, expected",
    [
        ([1.0, 2.0, 3.0], [4.0, 5.0], 1.0),  # perfect separation
        ([4.0, 5.0], [1.0, 2.0, 3.0], 0.0),  # perfectly backwards
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.5),  # identical
        ([2.0, 2.0], [2.0, 2.0, 2.0], 0.5),  # all tied: each pair counts one half
        ([1.0, 2.0], [2.0, 3.0], 0.875),  # pairs: (1,2) (1,3) (2,3) win, (2,2) ties -> 3.5 / 4
        ([0.0, 0.0, 1.0], [0.0, 1.0], 7 / 12),  # 6 pairs: 2 wins, 3 ties, 1 loss
    ],
)
def test_auroc_counts_pairs_with_ties_as_one_half(scores_in, scores_out, expected):
    # brute force over all pairs, the definition the rank formula must reproduce
    pairs = [(a, b) for a in scores_in for b in scores_out]
    brute = sum((b > a) + 0.5 * (b == a) for a, b in pairs) / len(pairs)
    assert brute == pytest.approx(expected)
    assert auroc(scores_in, scores_out) == pytest.approx(expected, abs=1e-12)


def test_auroc_matches_the_pairwise_definition_on_random_tied_scores():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 20, (300,), generator=g).double()
    b = torch.randint(3, 25, (200,), generator=g).double()
    brute = ((b[None] > a[:, None]).double() + 0.5 * (b[None] == a[:, None]).double()).mean()
    assert auroc(a, b) == pytest.approx(brute.item(), abs=1e-12)
    sklearn = pytest.importorskip("sklearn.metrics")  # not a dependency; a cross-check if present
    labels = torch.cat([torch.zeros(300), torch.ones(200)]).numpy()
    expected = sklearn.roc_auc_score(labels, torch.cat([a, b]).numpy())
    assert auroc(a, b) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "a, b, message",
    [([], [1.0], "at least one"), ([1.0], [float("nan")], "finite")],
)
def test_auroc_refuses_empty_and_nan(a, b, message):
    with pytest.raises(DataError, match=message):
        auroc(a, b)


@pytest.fixture(scope="module")
def run_without_ones():
    data = load_dataset("mnist-small", "dynamic", exclude_classes=(1,))
    config = Config(z_dim=8, hidden_dims=(128,), exclude_classes=(1,))
    model, guide = build(config, data.x_shape)
    fit(model, guide, data, config.make_elbo(), epochs=4, batch_size=100, lr=3e-3, quiet=True)
    return Run(config, model, guide, data.x_shape), data


def test_scores_are_per_image_nats_with_the_right_order(run_without_ones):
    run, data = run_without_ones
    x = data.test_x[:200]
    scores = anomaly_scores(run, x, num_samples=50)
    assert set(scores) == set(SCORES)
    assert all(s.shape == (200,) and torch.isfinite(s).all() for s in scores.values())
    assert (scores["kl"] >= 0).all()
    # -log p(x) by importance sampling lies below -ELBO on average (the IWAE bound is tighter)
    assert scores["log_px"].mean() < scores["elbo"].mean()
    # the KL is part of -ELBO = -E log p(x|z) + KL, so it cannot exceed it
    assert (scores["kl"] < scores["elbo"] + 1e-3).all()


def test_images_unlike_the_training_data_are_detected(run_without_ones):
    run, data = run_without_ones
    noise = torch.bernoulli(torch.full((200, 1, 28, 28), 0.5))
    table = detection_table(
        anomaly_scores(run, data.test_x[:200], num_samples=20),
        anomaly_scores(run, noise, num_samples=20),
    )
    assert [r["score"] for r in table] == list(SCORES)
    by = {r["score"]: r for r in table}
    # coin-flip pixels cost ~784 log 2 nats: every likelihood score separates them perfectly
    assert by["elbo"]["auroc"] == 1.0 and by["log_px"]["auroc"] == 1.0
    assert by["elbo"]["mean_out"] > by["elbo"]["mean_in"] + 200


def test_unknown_score_and_bad_images(run_without_ones):
    run, data = run_without_ones
    with pytest.raises(DataError, match="unknown score 'entropy'"):
        anomaly_scores(run, data.test_x[:2], scores=("entropy",))
    with pytest.raises(DataError, match="binary"):
        anomaly_scores(run, torch.rand(2, 28, 28))
