"""What a run with a class latent (``--model m2`` or ``gmvae``, or a model file trained with
``--labels``) adds to its metrics and figures.

- :func:`report`: the test accuracy of q(y|x) (for the mixture: the cluster accuracy, clusters
  matched one-to-one to labels, :func:`cluster_accuracy`; for a model file: the argmax of the
  guide's class site), and the run's figure: for M2 and a model file the analogies
  (:func:`analogies`; Kingma et al. 2014, figure 1: the style z of a few test images decoded
  under every class; a model file's through the door, :func:`decoded`), for the mixture one row
  of decoded draws per cluster (:func:`clusters`).

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
    analogies(run, data.test_x[:8], os.path.join(run.path, "analogies.png"))
    return {
        "test_accuracy": round(accuracy, 4),
        "labels": run.config.labels,
        "class_effect": round(class_effect(run), 4),
    }


@torch.no_grad()
def class_effect(run, n=200, seed=0):
    """How much M2's decoder output (a model file's image site's mean) depends on the class,
    from 0 to 1: ``n`` codes z ~ p(z) are decoded under every class, and the pixel variance
    across classes (same z) is divided by the total variance across classes and codes (as
    :func:`pyro_vae.classifier.label_effect` does for a conditional VAE). 0: the decoder ignores y and z carries the class, so q(y|x) learns nothing
    from the unlabelled images; Kingma et al.'s analogies need it well above 0."""
    k = run.num_classes
    z = _codes(run, n, torch.Generator().manual_seed(seed))
    classes = torch.eye(k).repeat_interleave(n, 0)
    images = decoded(run, z.repeat(k, *([1] * (z.dim() - 1))), classes).reshape(k, n, -1)
    across_classes = images.var(0, correction=0).sum(-1).mean()
    total = images.reshape(k * n, -1).var(0, correction=0).sum()
    return (across_classes / total).item()


@torch.no_grad()
def analogies(run, x, path):
    """Each row: a test image, then its style z (the mean of q(z | x, y) at q's class) decoded
    under every class y = 0, 1, ..., K - 1."""
    x = run._images(x)
    k = run.num_classes
    predicted = predictions(run, x)
    if _model_file(run):  # the mean of q at the code site, given the class
        z, _ = program.site_moments(run.guide, x, predicted, site=run.structure.code.name)
    else:
        z, _ = run.guide.encoder(x, F.one_hot(predicted, k).float())
    n = x.shape[0]
    images = decoded(run, z.repeat_interleave(k, 0), torch.eye(k).repeat(n, 1))
    rows = torch.cat([x[:, None], images.reshape(n, k, *x.shape[1:])], 1)
    plots.image_grid(
        rows.reshape(-1, *x.shape[1:]),
        path,
        title=f"analogies: a test image (left), its style z decoded under y = 0 ... {k - 1}",
        nrow=k + 1,
    )


def _model_file(run):
    """Whether ``run`` is a model file trained with labels (else the built-in M2 or mixture,
    whose networks :func:`class_effect` and :func:`analogies` call directly)."""
    structure = getattr(run, "structure", None)
    return structure is not None and structure.y.partial


def _codes(run, n, generator):
    """``n`` codes drawn from the prior of the code site: N(0, I) for the built-in M2, else
    with the mean and standard deviation of the model's own prior
    (:func:`pyro_vae.program.prior_moments`)."""
    if not _model_file(run):
        return torch.randn(n, run.config.z_dim, generator=generator)
    loc, scale = program.prior_moments(run.model)
    return loc + scale * torch.randn(n, *run.structure.code.shape, generator=generator)


def decoded(run, z, classes):
    """The image means of codes ``z`` under one-hot ``classes`` ``(N, K)``, ``(N, ...)``: the
    built-in decoder's, or a model file's through the door (:func:`pyro_vae.program.decode`,
    the code and class sites given)."""
    if not _model_file(run):
        return run.model.x_dist(z, classes).mean
    structure = run.structure
    latents = {
        structure.code.name: z,
        program.class_site(structure): structure.y.value(classes.argmax(-1)),
    }
    return program.decode(run.model, latents)


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
