"""What a run with a class latent (``--model m2`` or ``gmvae``, or a model file trained with
``--labels``) adds to its metrics and figures.

- :func:`report`: the test accuracy of q(y|x) (for the mixture: the cluster accuracy, clusters
  matched one-to-one to labels, :func:`cluster_accuracy`; for a model file: the argmax of the
  guide's class site), and the run's figure: for M2 the
  analogies (:func:`analogies`; Kingma et al. 2014, figure 1: the style z of a few test images
  decoded under every class), for the mixture one row of decoded draws per cluster
  (:func:`clusters`).

The study over numbers of labels, with the baseline classifier, is :mod:`pyro_vae.semi`.
"""

import os

import torch
from torch.nn import functional as F

from . import plots, program
from .config import CLASS_MODELS


@torch.no_grad()
def predictions(run, x):
    """The most probable class of q(y|x) for each image ``(N,)``: the built-in guide's
    classifier, or the argmax over the values of a model file's class site
    (:func:`pyro_vae.program.classify`)."""
    x = run._images(x)
    if run.config.model in CLASS_MODELS:
        return run.guide.classify(x)
    return program.classify(run.guide, x)


def cluster_accuracy(predicted, labels):
    """The accuracy of ``predicted`` clusters under the one-to-one matching of clusters to
    labels that maximizes it (the Hungarian method, ``linear_sum_assignment``)."""
    from scipy.optimize import linear_sum_assignment  # here: scipy takes a second to import

    k = int(max(predicted.max(), labels.max())) + 1
    counts = torch.zeros(k, k)
    counts.index_put_((predicted.long(), labels.long()), torch.ones(len(labels)), accumulate=True)
    rows, cols = linear_sum_assignment(-counts.numpy())
    return counts[rows, cols].sum().item() / len(labels)


def report(run, data):
    """The class model's numbers on the test split, and its figure in the run directory."""
    predicted = predictions(run, data.test_x)
    if run.config.model == "gmvae":
        out = {"test_cluster_accuracy": round(cluster_accuracy(predicted, data.test_y), 4)}
        clusters(run, os.path.join(run.path, "clusters.png"))
        return out
    accuracy = (predicted == data.test_y).float().mean().item()
    if run.config.model not in CLASS_MODELS:  # a model file: its networks are its own
        return {"test_accuracy": round(accuracy, 4), "labels": run.config.labels}
    analogies(run, data.test_x[:8], os.path.join(run.path, "analogies.png"))
    return {
        "test_accuracy": round(accuracy, 4),
        "labels": run.config.labels,
        "class_effect": round(class_effect(run), 4),
    }


@torch.no_grad()
def class_effect(run, n=200, seed=0):
    """How much M2's decoder output depends on the class, from 0 to 1: ``n`` codes z ~ p(z) are
    decoded under every class, and the pixel variance across classes (same z) is divided by the
    total variance across classes and codes (as :func:`pyro_vae.classifier.label_effect` does for
    a conditional VAE). 0: the decoder ignores y and z carries the class, so q(y|x) learns nothing
    from the unlabelled images; Kingma et al.'s analogies need it well above 0."""
    k = run.num_classes
    z = torch.randn(n, run.config.z_dim, generator=torch.Generator().manual_seed(seed))
    classes = torch.eye(k).repeat_interleave(n, 0)
    images = run.model.x_dist(z.repeat(k, 1), classes).mean.reshape(k, n, -1)
    across_classes = images.var(0, correction=0).sum(-1).mean()
    total = images.reshape(k * n, -1).var(0, correction=0).sum()
    return (across_classes / total).item()


@torch.no_grad()
def analogies(run, x, path):
    """Each row: a test image, then its style z (the mean of q(z | x, y) at q's class) decoded
    under every class y = 0, 1, ..., K - 1."""
    x = run._images(x)
    k = run.num_classes
    c = F.one_hot(predictions(run, x), k).float()
    z, _ = run.guide.encoder(x, c)
    n = x.shape[0]
    decoded = run.model.x_dist(z.repeat_interleave(k, 0), torch.eye(k).repeat(n, 1)).mean
    rows = torch.cat([x[:, None], decoded.reshape(n, k, *x.shape[1:])], 1)
    plots.image_grid(
        rows.reshape(-1, *x.shape[1:]),
        path,
        title=f"analogies: a test image (left), its style z decoded under y = 0 ... {k - 1}",
        nrow=k + 1,
    )


@torch.no_grad()
def clusters(run, path, per_cluster=10):
    """Each row: images decoded from z drawn in one cluster's bump of the mixture prior."""
    model, k = run.model, run.num_classes
    c = torch.eye(k).repeat_interleave(per_cluster, 0)
    g = torch.Generator().manual_seed(0)
    z = model.z_dist(c).base_dist
    z = z.loc + z.scale * torch.randn(z.loc.shape, generator=g)
    images = model.x_dist(z, c).mean
    plots.image_grid(images, path, title="one row per cluster: z ~ p(z | cluster)")
