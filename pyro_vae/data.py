"""Datasets, binarization and minibatches.

Images live in memory as float tensors ``(N, C, H, W)`` in [0, 1]; minibatches are index slices
(no per-item Python work), and dynamic binarization draws a fresh Bernoulli sample per minibatch.

Datasets:

- ``mnist-small`` (default): 5,000 real MNIST digits embedded in the package, split 4,000 / 1,000.
  No network, no extra dependency. MNIST: LeCun & Cortes, CC BY-SA 3.0.
- ``mnist``, ``fashion-mnist``: the full 60,000 / 10,000 sets through ``torchvision.datasets``,
  downloaded into the data root for users with internet. Offline, Fashion-MNIST is also found where
  Debian's ``dataset-fashion-mnist`` package installs it (``/usr/share/datasets/fashion-mnist``).
- ``cifar10``: 50,000 / 10,000 colour images of 32x32 through ``torchvision.datasets.CIFAR10``
  (Krizhevsky 2009), downloaded likewise.
- ``folder:PATH``: every image below ``PATH`` (PNG, JPEG, ...), resized and centre-cropped to
  ``image_size`` (default 64), one channel if all are grayscale, else RGB. Images in a
  subfolder get that subfolder's label (sorted names, like ``torchvision``'s ``ImageFolder``);
  a fixed-seed tenth (at least one image) is the test split.

``image_size`` resizes any dataset (bilinear, antialiased) to square images of that size.
"""

import gzip
import os
import shutil
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np
import torch

from .errors import DataError, DatasetUnavailableError, first_line, shown
from .resources import check_fits

DATASETS = ("mnist-small", "mnist", "fashion-mnist", "cifar10", "folder:PATH")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_FOLDER_SIZE = 64
FOLDER_SPLIT_SEED = 2024
BINARIZATIONS = ("none", "static", "dynamic", "threshold")
#: ``binarize="threshold"``: pixels at or above it become 1, the others 0 (Cremer, Li & Duvenaud
#: 2018 binarize Fashion-MNIST so).
THRESHOLD = 0.5
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# The classes of the datasets whose labels are not their names (a folder's are its subfolders).
CLASS_NAMES = {
    "fashion-mnist": (
        "T-shirt/top", "trouser", "pullover", "dress", "coat",
        "sandal", "shirt", "sneaker", "bag", "ankle boot",
    ),
    "cifar10": (
        "airplane", "automobile", "bird", "cat", "deer",
        "dog", "frog", "horse", "ship", "truck",
    ),
}  # fmt: skip

# Fixed seeds: every run, whatever its own seed, sees the same static training set and scores the
# same binarized test images.
STATIC_TRAIN_SEED = 1234
TEST_BINARIZATION_SEED = 4321


def default_root():
    """Where downloaded datasets go: ``$PYRO_VAE_DATA`` or ``~/.cache/pyro_vae``."""
    return os.environ.get("PYRO_VAE_DATA") or os.path.join(
        os.path.expanduser("~"), ".cache", "pyro_vae"
    )


def bernoulli(x, generator=None):
    """``torch.bernoulli(x, generator=generator)``: the same draws, bit for bit, and the
    generator left in the same state, drawn as uniform numbers compared with ``x``, which takes
    half the time on a CPU (a minibatch of 128 Fashion-MNIST images: 1.1 ms against 2.1 ms). On
    other devices, ``torch.bernoulli`` itself."""
    if x.device.type != "cpu":
        return torch.bernoulli(x, generator=generator)
    uniform = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    return (uniform < x).to(x.dtype)


def binarize_once(x, seed):
    """A Bernoulli sample of ``x`` (pixel intensities as probabilities) from a fixed seed."""
    return bernoulli(x, generator=torch.Generator().manual_seed(seed))


@dataclass
class Data:
    """A dataset ready for training: float images in [0, 1] and integer labels.

    ``train_x`` is binarized already for ``binarize="static"`` and stays grayscale for
    ``"dynamic"`` (:meth:`batches` samples it); ``test_x`` is binarized once, with a fixed seed,
    for both.

    ``y_is_x`` says what a model is conditioned on: the labels (``False``), or the image itself
    (``True``, for image completion, where the model sees only part of it).
    """

    name: str
    binarize: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    y_is_x: bool = False
    class_names: Optional[tuple] = None  # label -> name (None: the labels are the names)
    # Semi-supervised and unsupervised class models: which training labels the model may see
    # (None: all). With a mask, every image scored is unlabelled (y = -1) and a training
    # minibatch shows the labels of the masked-in images only.
    labelled: Optional[torch.Tensor] = None

    @property
    def x_shape(self):
        return tuple(self.train_x.shape[1:])

    @property
    def binary(self):
        return self.binarize != "none"

    @property
    def num_classes(self):
        return int(max(self.train_y.max(), self.test_y.max()).item()) + 1

    def example_batch(self, n=4):
        """A few training images (binarized as the model sees them) and their condition, for the
        program door to discover a model's structure on."""
        x, y = self.train_x[:n], self.train_y[:n]
        if self.binarize == "dynamic":
            x = binarize_once(x, 0)
        return x, self.model_y(x, y)

    def model_y(self, x, labels):
        """What the model is conditioned on for images ``x`` with ``labels``."""
        if self.labelled is not None:
            return torch.full_like(labels, -1)
        return x if self.y_is_x else labels

    def batches(self, batch_size, generator=None, order=None, start=0):
        """Yield ``(x, y, idx)`` minibatches over a random permutation of the training set.

        ``y`` is the model's condition (:meth:`model_y`: the labels, or the binarized ``x``
        itself); ``idx`` holds the images' positions in the training set (per-datapoint guides use
        it). The last batch may be smaller. ``order`` gives the permutation instead (a resumed
        epoch passes its own), and ``start`` skips that many batches of it.
        """
        if order is None:
            order = torch.randperm(self.train_x.shape[0], generator=generator)
        for idx in order.split(batch_size)[start:]:
            yield self.batch(idx, generator)

    def batch(self, idx, generator=None):
        """The minibatch ``(x, y, idx)`` of the training images at positions ``idx``, freshly
        binarized under ``"dynamic"``, with the model's condition ``y`` (see :meth:`batches`)."""
        x = self.train_x[idx]
        if self.binarize == "dynamic":
            x = bernoulli(x, generator=generator)
        if self.labelled is not None:
            return x, torch.where(self.labelled[idx], self.train_y[idx], -1), idx
        return x, self.model_y(x, self.train_y[idx]), idx

    def select_classes(self, classes, keep=True):
        """A copy with only the images whose label is in ``classes`` (``keep=False``: all others),
        in both splits.

        Held-out classes make out-of-distribution tests: train on the rest, score the held-out.
        """
        classes = torch.as_tensor(list(classes), dtype=torch.long)
        keep_train = torch.isin(self.train_y, classes) == keep
        keep_test = torch.isin(self.test_y, classes) == keep
        return Data(
            self.name,
            self.binarize,
            self.train_x[keep_train],
            self.train_y[keep_train],
            self.test_x[keep_test],
            self.test_y[keep_test],
            class_names=self.class_names,
        )

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
        raise DataError(f"unknown split {shown(name)}; choose 'train' or 'test'")


def scored_on_train(data, n=1000):
    """``data`` with the first ``n`` training images (binarized as evaluation scores them) in place
    of its test split: what evaluation and ``compare`` then measure is the model's fit to
    images it was trained on, as Cremer, Li & Duvenaud (2018) report their gaps."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"the number of training images to score must be positive, got {shown(n)}")
    x, y = data.split("train")
    n = min(n, x.shape[0])
    return replace(data, name=f"{data.name}, first {n} training images", test_x=x[:n], test_y=y[:n])


def balanced_labels(labels, n, seed=0):
    """A mask over ``labels`` that keeps ``n`` of them, as equal a number per class as ``n``
    allows (the first ``n % K`` classes get one more), chosen by ``seed``: the labelled set of a
    semi-supervised run."""
    classes = torch.unique(labels)
    if n < len(classes) or n > len(labels):
        raise DataError(
            f"labels must be from {len(classes)} (one per class) to {len(labels)} (the training "
            f"set), got {n}"
        )
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(labels), dtype=torch.bool)
    for i, c in enumerate(classes):
        members = torch.nonzero(labels == c).squeeze(-1)
        take = n // len(classes) + (1 if i < n % len(classes) else 0)
        if take > len(members):
            raise DataError(f"class {int(c)} has {len(members)} training images, fewer than {take}")
        mask[members[torch.randperm(len(members), generator=g)[:take]]] = True
    return mask


def labelled_repeats(share, size, labelled):
    """How many copies of each of ``labelled`` labelled images, among ``size`` training images,
    make a fraction ``share`` of an epoch's images labelled (at least 1: no copy added)."""
    return max(1, round(share * (size - labelled) / ((1 - share) * labelled)))


def repeat_labelled(data, share):
    """A copy of ``data`` whose labelled training images (``data.labelled``) are repeated
    :func:`labelled_repeats` times, so that a fraction ``share`` of every epoch, and on average
    of every minibatch, is labelled: Siddharth et al.'s (2017) supervision rate. The copies are
    appended; the test split is unchanged."""
    labelled = torch.nonzero(data.labelled).squeeze(-1)
    r = labelled_repeats(share, len(data.labelled), len(labelled))
    extra = labelled.repeat(r - 1)
    return replace(
        data,
        train_x=torch.cat([data.train_x, data.train_x[extra]]),
        train_y=torch.cat([data.train_y, data.train_y[extra]]),
        labelled=torch.cat([data.labelled, torch.ones(len(extra), dtype=torch.bool)]),
    )


def is_dataset_name(name):
    """Whether ``name`` names a dataset: one of :data:`DATASETS` or ``folder:PATH``."""
    return isinstance(name, str) and (
        (name in DATASETS and name != "folder:PATH")
        or (name.startswith("folder:") and len(name) > 7)
    )


def load_dataset(
    name="mnist-small",
    binarize="dynamic",
    root=None,
    download=True,
    image_size=None,
    exclude_classes=(),
):
    """Load a dataset by name into memory.

    :param str name: one of :data:`DATASETS`, ``folder:PATH`` with a real path.
    :param str binarize: ``"none"``, ``"static"`` (one fixed-seed Bernoulli sample),
        ``"dynamic"`` (a fresh sample per minibatch) or ``"threshold"`` (pixels >= 0.5 become 1,
        the rest 0, in both splits).
    :param str root: where torchvision datasets are looked for and downloaded
        (default :func:`default_root`).
    :param bool download: whether ``mnist`` / ``fashion-mnist`` / ``cifar10`` may be downloaded.
    :param int image_size: resize images to ``image_size`` x ``image_size`` (default: the
        dataset's own size; 64 for a folder).
    :param exclude_classes: labels to leave out of both splits (see :meth:`Data.select_classes`).
    :rtype: Data
    """
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1
    ):
        raise DataError(f"image_size must be a positive integer, got {shown(image_size)}")
    try:
        exclude_classes = tuple(() if exclude_classes is None else exclude_classes)
    except TypeError:
        exclude_classes = None
    if exclude_classes is None or any(
        isinstance(c, bool) or not isinstance(c, int) for c in exclude_classes
    ):
        raise DataError("exclude_classes must be a list of class labels (integers)")
    if not isinstance(binarize, str) or binarize not in BINARIZATIONS:
        raise DataError(
            f"unknown binarization {shown(binarize)}; choose one of {', '.join(BINARIZATIONS)}"
        )
    if not is_dataset_name(name):
        raise DataError(f"unknown dataset {shown(name)}; choose one of {', '.join(DATASETS)}")
    class_names = CLASS_NAMES.get(name)
    if name == "mnist-small":
        train, test = _load_mnist_small()
    elif name in ("mnist", "fashion-mnist", "cifar10"):
        train, test = _load_torchvision(name, root or default_root(), download)
    elif is_dataset_name(name):
        train, test, class_names = _load_folder(
            name[len("folder:") :], image_size or DEFAULT_FOLDER_SIZE
        )
    else:
        raise DataError(f"unknown dataset {shown(name)}; choose one of {', '.join(DATASETS)}")

    (train_x, train_y), (test_x, test_y) = [
        (_resized(_to_float_images(images), image_size), torch.as_tensor(labels, dtype=torch.long))
        for images, labels in (train, test)
    ]
    if binarize == "threshold":
        train_x, test_x = (train_x >= THRESHOLD).float(), (test_x >= THRESHOLD).float()
    elif binarize != "none":
        test_x = binarize_once(test_x, TEST_BINARIZATION_SEED)
    if binarize == "static":
        train_x = binarize_once(train_x, STATIC_TRAIN_SEED)
    data = Data(name, binarize, train_x, train_y, test_x, test_y, class_names=class_names)
    if not exclude_classes:
        return data
    labels = sorted(set(train_y.tolist()))
    unknown = [c for c in exclude_classes if c not in labels]
    if unknown:
        raise DataError(
            f"{name} has no class {shown(unknown[0])} to exclude; its labels are {labels[0]}..{labels[-1]}"
        )
    if len(set(exclude_classes)) == len(labels):
        raise DataError(f"excluding every class of {name} leaves no training data")
    # Excluding after binarization keeps every remaining image exactly as it is without exclusion.
    data = data.select_classes(exclude_classes, keep=False)
    for split, x in (("training", data.train_x), ("test", data.test_x)):
        if x.shape[0] == 0:
            excluded = ",".join(map(str, exclude_classes))
            raise DataError(
                f"excluding classes {excluded} of {name} leaves its {split} split empty; "
                "exclude fewer classes, or add images of the others"
            )
    return data


def _to_float_images(images):
    x = torch.as_tensor(np.asarray(images))
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return x.float().div_(255.0)


def _resized(x, size):
    if size is None or tuple(x.shape[-2:]) == (size, size):
        return x
    if not isinstance(size, int) or size < 1:
        raise DataError(f"image_size must be a positive integer, got {shown(size)}")
    n, channels = x.shape[:2]
    check_fits(
        n * channels * size * size * 4,
        f"image_size {size} asks for {n} images of {channels}x{size}x{size} floats",
        "choose a smaller --image-size",
    )
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return x.clamp_(0, 1)


def _load_folder(path, size):
    """Images below ``path``, resized (shorter side) and centre-cropped to ``size``, as uint8.

    One image is decoded at a time and only its resized pixels are kept, so memory grows with
    ``size``, not with the originals' resolution. 16-bit images are scaled to 8 bits."""
    if not os.path.isdir(path):
        raise DatasetUnavailableError(f"folder:{path}: no such directory")
    files = sorted(
        os.path.join(folder, f)
        for folder, _, names in os.walk(path)
        for f in names
        # Regular files only: a FIFO named like an image would block the read for ever.
        if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
    )
    if len(files) < 2:
        raise DataError(
            f"folder:{path} has {len(files)} image(s); it needs at least 2 "
            f"({', '.join(IMAGE_EXTENSIONS)}), one for the test split"
        )

    def subfolder(f):  # the label's name: the subfolder right below path, "" for path itself
        parts = os.path.relpath(f, path).split(os.sep)
        return parts[0] if len(parts) > 1 else ""

    classes = sorted({subfolder(f) for f in files})
    labels = [classes.index(subfolder(f)) for f in files]
    modes = set()
    for f in files:  # the headers only: is every image grayscale?
        with _open_image(f) as img:
            modes.add(img.mode)
    mode = "L" if modes <= GRAYSCALE_MODES else "RGB"
    channels = 1 if mode == "L" else 3
    check_fits(
        len(files) * channels * size * size,
        f"image_size {size} asks for {len(files)} images of {channels}x{size}x{size} bytes",
        "choose a smaller --image-size",
    )
    x = np.empty((len(files), channels, size, size), np.uint8)
    for i, f in enumerate(files):
        x[i] = _resized_image(f, mode, size)
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(FOLDER_SPLIT_SEED))
    n_test = max(1, round(0.1 * len(files)))
    test, train = order[:n_test].numpy(), order[n_test:].numpy()
    y = np.asarray(labels)
    names = tuple(c or os.path.basename(os.path.normpath(path)) for c in classes)
    return (x[train], y[train]), (x[test], y[test]), names


GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def _open_image(f):
    """``PIL.Image.open(f)`` (the header only), with its failures as one-line DataErrors."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(f)
    except Image.DecompressionBombError:
        raise DataError(
            f"cannot read image {f}: it has more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, "
            "Pillow's limit against decompression bombs; shrink it or move it out of the folder"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"cannot read image {f}: {first_line(e)}") from None


def _resized_image(f, mode, size):
    """The image in file ``f`` as ``mode`` ("L" or "RGB") pixels, resized (shorter side) and
    centre-cropped to ``size``: a uint8 array ``(C, size, size)``."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    with _open_image(f) as img:
        img.draft(mode, (size, size))  # JPEG: decode at the smallest scale that is large enough
        try:
            img.load()
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"cannot read image {f}: {first_line(e)}") from None
        img = _eight_bit(img).convert(mode)
    return TF.pil_to_tensor(TF.center_crop(TF.resize(img, size), size)).numpy()


def _eight_bit(img):
    """``img`` with 8 bits per channel: 16-bit and 32-bit integer pixels are scaled to 0-255 by
    their format's range (Pillow's own conversion clips them, turning most of an image white),
    float pixels by [0, 1]."""
    from PIL import Image

    if not (img.mode.startswith("I") or img.mode == "F"):
        return img
    pixels = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        top = 1.0 if pixels.max(initial=0) <= 1 else 255.0
    else:  # 16-bit images open as "I;16..." or, in older Pillow, as "I"
        top = (
            65535.0 if img.mode.startswith("I;16") or pixels.max(initial=0) <= 65535 else 2**32 - 1
        )
    scaled = np.clip(np.rint(pixels * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def _load_mnist_small():
    path = os.path.join(os.path.dirname(__file__), "_embedded", "mnist_small.npz")
    with np.load(path, allow_pickle=False) as f:
        return (f["train_images"], f["train_labels"]), (f["test_images"], f["test_labels"])


def _one_line(error):
    """An exception's message on one line: torchvision's download error puts the file on its
    first line ("Error downloading train-images-idx3-ubyte.gz:") and each mirror's failure below."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0].rstrip(':')}: {lines[-1]}"


def _load_torchvision(name, root, download):
    from torchvision import datasets

    cls = {
        "mnist": datasets.MNIST,
        "fashion-mnist": datasets.FashionMNIST,
        "cifar10": datasets.CIFAR10,
    }[name]
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
                "cifar10": "connect to the internet once (it downloads 163 MB), or put "
                f"cifar-10-python.tar.gz in {root}",
            }[name]
            raise DatasetUnavailableError(
                f"{name} is not available ({_one_line(e)}); {hint}"
            ) from None
        images, labels = np.asarray(ds.data), np.asarray(ds.targets)
        if images.ndim == 4:  # CIFAR stores (N, H, W, C)
            images = images.transpose(0, 3, 1, 2)
        splits.append((images, labels))
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


def load_images(path):
    """Images a user brings, as a tensor: a ``.npy`` array (read without pickles) or a ``.pt``
    file holding one tensor (read with ``weights_only=True``). :func:`as_images` checks them."""
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"path must be a path to a .npy or .pt file, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"no images at {path}")
    if not path.endswith((".npy", ".pt")):
        raise DataError(f"{path}: images must come in a .npy or .pt file")
    try:
        if path.endswith(".npy"):
            x = torch.from_numpy(np.load(path, allow_pickle=False))
        else:
            from .checkpoints import load_plain  # not at the top: checkpoints imports config

            x = load_plain(path)
    except Exception as e:  # truncated, not an array, or a pickle of anything but tensors
        raise DataError(f"cannot read images from {path}: {first_line(e)}") from None
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{path} holds a {type(x).__name__}, not a tensor of images")
    return x


def as_numbers(x, what="images"):
    """``x`` (a tensor, an array, nested lists of numbers) as a real tensor, or a ``DataError``."""
    try:
        x = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise DataError(
            f"{what} must be a tensor or an array of numbers, got {type(x).__name__}"
        ) from None
    if x.is_complex() or x.dtype not in _REAL_DTYPES:
        raise DataError(f"{what} must hold real numbers, got {x.dtype}")
    return x


_REAL_DTYPES = {
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
}


def as_images(x, x_shape=None, binary=False):
    """Check and convert user images to a float tensor ``(N, *x_shape)``.

    Accepts ``(N, H, W)`` for one-channel images, ``(N, C, H, W)``, and a single image without
    the batch dimension. Values must be finite and in [0, 1]; with ``binary=True``, 0 or 1.
    """
    x = as_numbers(x)
    if x.dtype != torch.float32:  # the networks' dtype; uint8, bool, float64 all arrive here
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
