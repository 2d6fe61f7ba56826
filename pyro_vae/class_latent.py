"""What a run with a class latent (``--model m2`` or ``gmvae``, or a model file trained with
``--labels``) adds to its metrics and figures.

- :func:`report` (M2, a model file trained with labels): the test accuracy of q(y|x), the argmax
  of the guide's class site, and the analogies figure (:func:`analogies`; Kingma et al. 2014,
  figure 1: the style z of a few test images decoded under every class, through the door).
- :func:`cluster_report` (the mixture): the cluster accuracy, clusters matched one-to-one to
  labels (:func:`cluster_accuracy`), and one row of decoded draws per cluster (:func:`clusters`).

Each is the report hook of its entry in :data:`pyro_vae.registry.MODELS`.

The study over numbers of labels, with the baseline classifier, is :mod:`pyro_vae.semi`.
"""

import os

import torch

from . import plots, program


@torch.no_grad()
def predictions(run, x):
    """The most probable class of q(y|x) for each image ``(N,)``: the argmax over the values of
    the guide's class site (:func:`pyro_vae.program.classify`)."""
    return program.classify(run.guide, run._images(x))


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
    """The test accuracy of q(y|x), the class effect, and the analogies figure in the run
    directory (M2, a model file trained with labels)."""
    predicted = predictions(run, data.test_x)
    accuracy = (predicted == data.test_y).float().mean().item()
    analogies(run, data.test_x[:8], os.path.join(run.path, "analogies.png"))
    return {
        "test_accuracy": round(accuracy, 4),
        "labels": run.config.labels,
        "class_effect": round(class_effect(run), 4),
    }


def cluster_report(run, data):
    """The mixture's cluster accuracy on the test split, and its figure of clusters."""
    predicted = predictions(run, data.test_x)
    clusters(run, os.path.join(run.path, "clusters.png"))
    return {"test_cluster_accuracy": round(cluster_accuracy(predicted, data.test_y), 4)}


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
    z, _ = program.site_moments(run.guide, x, predicted, site=run.structure.code.name)
    n = x.shape[0]
    images = decoded(run, z.repeat_interleave(k, 0), torch.eye(k).repeat(n, 1))
    rows = torch.cat([x[:, None], images.reshape(n, k, *x.shape[1:])], 1)
    plots.image_grid(
        rows.reshape(-1, *x.shape[1:]),
        path,
        title=f"analogies: a test image (left), its style z decoded under y = 0 ... {k - 1}",
        nrow=k + 1,
    )


def _codes(run, n, generator):
    """``n`` codes drawn from the prior of the code site, with the mean and standard deviation
    of the model's own prior (:func:`pyro_vae.program.prior_moments`)."""
    loc, scale = program.prior_moments(run.model)
    return loc + scale * torch.randn(n, *run.structure.code.shape, generator=generator)


def decoded(run, z, classes):
    """The image means of codes ``z`` under one-hot ``classes`` ``(N, K)``, ``(N, ...)``,
    through the door (:func:`pyro_vae.program.decode`, the code and class sites given)."""
    structure = run.structure
    latents = {
        structure.code.name: z,
        program.class_site(structure): program.class_value(structure, classes.argmax(-1)),
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
