"""Datasets, binarization and minibatches.

Images live in memory as float tensors ``(N, C, H, W)`` in [0, 1]; minibatches are index slices
(no per-item Python work), and dynamic binarization draws a fresh Bernoulli sample per minibatch.

Datasets:

- ``mnist-small`` (default): 5,000 real MNIST digits embedded in the package, split 4,000 / 1,000.
  No network, no extra dependency. MNIST: LeCun & Cortes, CC BY-SA 3.0.
- ``mnist``, ``fashion-mnist``: the full 60,000 / 10,000 sets through ``torchvision.datasets``,
  downloaded into the data root for users with internet. Offline, Fashion-MNIST is also found where
  Debian's ``dataset-fashion-mnist`` package installs it (``/usr/share/datasets/fashion-mnist``).
"""

import gzip
import os
import shutil
from dataclasses import dataclass

import numpy as np
import torch

from .errors import DataError, DatasetUnavailableError

DATASETS = ("mnist-small", "mnist", "fashion-mnist")
BINARIZATIONS = ("none", "static", "dynamic")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"

# Fixed seeds: every run, whatever its own seed, sees the same static training set and scores the
# same binarized test images.
STATIC_TRAIN_SEED = 1234
TEST_BINARIZATION_SEED = 4321


def default_root():
    """Where downloaded datasets go: ``$PYRO_VAE_DATA`` or ``~/.cache/pyro_vae``."""
    return os.environ.get("PYRO_VAE_DATA") or os.path.join(
        os.path.expanduser("~"), ".cache", "pyro_vae"
    )


def binarize_once(x, seed):
    """A Bernoulli sample of ``x`` (pixel intensities as probabilities) from a fixed seed."""
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))


@dataclass
class Data:
    """A dataset ready for training: float images in [0, 1] and integer labels.

    ``train_x`` is binarized already for ``binarize="static"`` and stays grayscale for
    ``"dynamic"`` (:meth:`batches` samples it); ``test_x`` is binarized once, with a fixed seed,
    for both.
    """

    name: str
    binarize: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor

    @property
    def x_shape(self):
        return tuple(self.train_x.shape[1:])

    @property
    def binary(self):
        return self.binarize != "none"

    def batches(self, batch_size, generator=None):
        """Yield ``(x, idx)`` minibatches over a random permutation of the training set.

        ``idx`` holds the images' positions in the training set (per-datapoint guides use it).
        The last batch may be smaller.
        """
        n = self.train_x.shape[0]
        for idx in torch.randperm(n, generator=generator).split(batch_size):
            yield self.batch(idx, generator), idx

    def batch(self, idx, generator=None):
        """The training images at positions ``idx``, freshly binarized under ``"dynamic"``."""
        x = self.train_x[idx]
        if self.binarize == "dynamic":
            x = torch.bernoulli(x, generator=generator)
        return x

    def split(self, name):
        """The ``(x, y)`` of the ``"train"`` or ``"test"`` split, as scored by evaluation.

        A dynamically binarized training split is binarized once with a fixed seed.
        """
        if name == "test":
            return self.test_x, self.test_y
        if name == "train":
            x = self.train_x
            if self.binarize == "dynamic":
                x = binarize_once(x, STATIC_TRAIN_SEED)
            return x, self.train_y
        raise DataError(f"unknown split {name!r}; choose 'train' or 'test'")


def load_dataset(name="mnist-small", binarize="dynamic", root=None, download=True):
    """Load a dataset by name into memory.

    :param str name: one of :data:`DATASETS`.
    :param str binarize: ``"none"``, ``"static"`` (one fixed-seed Bernoulli sample) or
        ``"dynamic"`` (a fresh sample per minibatch).
    :param str root: where torchvision datasets are looked for and downloaded
        (default :func:`default_root`).
    :param bool download: whether ``mnist`` / ``fashion-mnist`` may be downloaded.
    :rtype: Data
    """
    if binarize not in BINARIZATIONS:
        raise DataError(
            f"unknown binarization {binarize!r}; choose one of {', '.join(BINARIZATIONS)}"
        )
    if name == "mnist-small":
        train, test = _load_mnist_small()
    elif name in ("mnist", "fashion-mnist"):
        train, test = _load_torchvision(name, root or default_root(), download)
    else:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")

    (train_x, train_y), (test_x, test_y) = [
        (_to_float_images(images), torch.as_tensor(labels, dtype=torch.long))
        for images, labels in (train, test)
    ]
    if binarize != "none":
        test_x = binarize_once(test_x, TEST_BINARIZATION_SEED)
    if binarize == "static":
        train_x = binarize_once(train_x, STATIC_TRAIN_SEED)
    return Data(name, binarize, train_x, train_y, test_x, test_y)


def _to_float_images(images):
    x = torch.as_tensor(np.asarray(images))
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.float().div_(255.0)


def _load_mnist_small():
    path = os.path.join(os.path.dirname(__file__), "_embedded", "mnist_small.npz")
    with np.load(path, allow_pickle=False) as f:
        return (f["train_images"], f["train_labels"]), (f["test_images"], f["test_labels"])


def _load_torchvision(name, root, download):
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "fashion-mnist": datasets.FashionMNIST}[name]
    if name == "fashion-mnist":
        _unpack_debian_fashion_mnist(os.path.join(root, cls.__name__, "raw"))
    splits = []
    for train in (True, False):
        try:
            ds = cls(root, train=train, download=download)
        except (RuntimeError, OSError) as e:
            hint = {
                "mnist": "connect to the internet once, or put the four MNIST IDX files in "
                f"{os.path.join(root, cls.__name__, 'raw')}",
                "fashion-mnist": "install Debian's dataset-fashion-mnist (apt-get install "
                "dataset-fashion-mnist), connect to the internet once, or put the four IDX files in "
                f"{os.path.join(root, cls.__name__, 'raw')}",
            }[name]
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DatasetUnavailableError(f"{name} is not available ({reason}); {hint}") from None
        splits.append((ds.data.numpy(), ds.targets.numpy()))
    return splits


def _unpack_debian_fashion_mnist(raw):
    """Decompress Debian's gzipped IDX files where torchvision looks, so torchvision reads them."""
    if not os.path.isdir(DEBIAN_FASHION_MNIST):
        return
    for gz in sorted(os.listdir(DEBIAN_FASHION_MNIST)):
        target = os.path.join(raw, gz[: -len(".gz")])
        if gz.endswith("-ubyte.gz") and not os.path.exists(target):
            os.makedirs(raw, exist_ok=True)
            tmp = target + f".tmp{os.getpid()}"
            with gzip.open(os.path.join(DEBIAN_FASHION_MNIST, gz)) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, target)


def as_images(x, x_shape=None, binary=False):
    """Check and convert user images to a float tensor ``(N, *x_shape)``.

    Accepts ``(N, H, W)`` for one-channel images, ``(N, C, H, W)``, and a single image without
    the batch dimension. Values must be finite and in [0, 1]; with ``binary=True``, 0 or 1.
    """
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.float()
    if x_shape is not None:
        x_shape = tuple(x_shape)
        if tuple(x.shape) == x_shape or (x_shape[0] == 1 and tuple(x.shape) == x_shape[1:]):
            x = x.reshape(1, *x_shape)
        elif x.dim() == len(x_shape) and x_shape[0] == 1 and tuple(x.shape[1:]) == x_shape[1:]:
            x = x.unsqueeze(1)
        if tuple(x.shape[1:]) != x_shape:
            raise DataError(
                f"images of shape {tuple(x.shape)} do not fit this model, which expects "
                f"(N, {', '.join(map(str, x_shape))})"
            )
    if x.shape[0] == 0:
        raise DataError("no images given (an empty batch)")
    if not torch.isfinite(x).all():
        raise DataError("the images contain NaN or infinite values")
    if x.min() < 0 or x.max() > 1:
        raise DataError(
            f"pixel values must lie in [0, 1], found [{x.min().item():.3g}, {x.max().item():.3g}]; "
            "divide 8-bit images by 255"
        )
    if binary and not torch.all((x == 0) | (x == 1)):
        raise DataError(
            "this model has a Bernoulli likelihood and needs binary pixels (0 or 1); binarize the "
            "images first, e.g. torch.bernoulli(x)"
        )
    return x
