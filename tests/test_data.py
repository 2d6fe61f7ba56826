import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from pyro_vae.data import DEBIAN_FASHION_MNIST, as_images, bernoulli, load_dataset
from pyro_vae.errors import DataError, DatasetUnavailableError


def test_mnist_small_is_embedded_and_split_4000_1000():
    data = load_dataset("mnist-small", binarize="none")
    assert data.train_x.shape == (4000, 1, 28, 28)
    assert data.test_x.shape == (1000, 1, 28, 28)
    assert data.x_shape == (1, 28, 28)
    assert data.train_y.bincount().tolist() == [400] * 10
    assert data.test_y.bincount().tolist() == [100] * 10
    assert 0 <= data.train_x.min() and data.train_x.max() <= 1
    assert len(data.train_x.unique()) > 2  # grayscale, not binary


def test_static_binarization_is_fixed_across_loads():
    a = load_dataset("mnist-small", binarize="static")
    b = load_dataset("mnist-small", binarize="static")
    assert set(a.train_x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(a.train_x, b.train_x)
    assert torch.equal(a.test_x, b.test_x)


def test_dynamic_binarization_resamples_each_batch_but_fixes_the_test_split():
    data = load_dataset("mnist-small", binarize="dynamic")
    grey = load_dataset("mnist-small", binarize="none")
    # The test split is one fixed-seed sample, the same as under static binarization.
    assert torch.equal(data.test_x, load_dataset("mnist-small", binarize="static").test_x)
    assert set(data.test_x.unique().tolist()) == {0.0, 1.0}
    x1, _, _ = next(data.batches(4000, torch.Generator().manual_seed(0)))
    x2, _, _ = next(data.batches(4000, torch.Generator().manual_seed(1)))
    assert set(x1.unique().tolist()) == {0.0, 1.0}
    # Same images in another order and another Bernoulli draw: pixel means agree, pixels do not.
    assert not torch.equal(x1.sum(0), x2.sum(0))
    assert abs(x1.mean() - grey.train_x.mean()) < 0.01


@pytest.mark.parametrize(
    "shape", [(1, 784), (17, 784), (96, 784), (128, 784), (5, 1, 28, 28), (33,)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bernoulli_draws_what_torch_bernoulli_draws(shape, dtype):
    # The faster draw must keep every dynamically binarized run's numbers, and the generator's
    # state after it, exactly as torch.bernoulli gave them; probabilities 0, 1/2 and 1 included.
    p = torch.rand(shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    p.view(-1)[:3] = torch.tensor([0.0, 0.5, 1.0], dtype=dtype)
    ours, theirs = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    for _ in range(3):
        drawn, expected = bernoulli(p, ours), torch.bernoulli(p, generator=theirs)
        assert drawn.dtype == dtype
        assert torch.equal(drawn, expected)
    assert torch.equal(ours.get_state(), theirs.get_state())


def test_batches_cover_the_training_set_once():
    data = load_dataset("mnist-small", binarize="static")
    seen = torch.cat([idx for _, _, idx in data.batches(300, torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == list(range(4000))
    x, y, idx = next(data.batches(300, torch.Generator().manual_seed(0)))
    assert torch.equal(x, data.train_x[idx])  # static: batches are the stored sample
    assert torch.equal(y, data.train_y[idx])  # and y are their labels


@pytest.mark.parametrize(
    "name, message", [("cifar-100", "unknown dataset"), ("mnist-small:x", "unknown dataset")]
)
def test_unknown_dataset(name, message):
    with pytest.raises(DataError, match=message):
        load_dataset(name)


def test_unknown_binarization():
    with pytest.raises(DataError, match="unknown binarization 'sometimes'"):
        load_dataset("mnist-small", binarize="sometimes")


def test_missing_dataset_says_where_to_put_it(tmp_path):
    with pytest.raises(DatasetUnavailableError, match=r"mnist is not available .*MNIST/raw"):
        load_dataset("mnist", root=str(tmp_path), download=False)


def test_failed_download_names_the_file_and_the_error(tmp_path, monkeypatch):
    from torchvision import datasets

    def offline(*args, **kwargs):  # what torchvision raises when every mirror fails
        raise RuntimeError(
            "Error downloading train-images-idx3-ubyte.gz:\n"
            "Tried https://a/, got:\n<urlopen error [Errno -3] name resolution>\n"
            "Tried https://b/, got:\n<urlopen error [Errno -2] Name or service not known>\n"
        )

    monkeypatch.setattr(datasets, "MNIST", offline)
    with pytest.raises(DatasetUnavailableError) as error:
        load_dataset("mnist", root=str(tmp_path))
    assert "(Error downloading train-images-idx3-ubyte.gz: <urlopen error [Errno -2] Name" in str(
        error.value
    )


@pytest.mark.skipif(
    not os.path.isdir(DEBIAN_FASHION_MNIST),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_fashion_mnist_from_debian(tmp_path):
    data = load_dataset("fashion-mnist", binarize="dynamic", root=str(tmp_path), download=False)
    assert data.train_x.shape == (60000, 1, 28, 28)
    assert data.test_x.shape == (10000, 1, 28, 28)
    assert data.train_y.bincount().tolist() == [6000] * 10
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path / "FashionMNIST" / "raw"))


def test_as_images_accepts_channel_free_and_single_images():
    x = torch.rand(5, 28, 28)
    assert as_images(x, (1, 28, 28)).shape == (5, 1, 28, 28)
    assert as_images(x[0], (1, 28, 28)).shape == (1, 1, 28, 28)
    assert as_images((x * 255).to(torch.uint8) // 255, (1, 28, 28)).dtype == torch.float32


@pytest.mark.parametrize(
    "x, shape, binary, message",
    [
        (
            torch.rand(3, 32, 32),
            (1, 28, 28),
            False,
            r"do not fit this model, which expects \(N, 1, 28, 28\)",
        ),
        (torch.full((2, 1, 28, 28), float("nan")), (1, 28, 28), False, "NaN or infinite"),
        (torch.full((2, 1, 28, 28), 255.0), (1, 28, 28), False, r"must lie in \[0, 1\]"),
        (torch.full((2, 1, 28, 28), 0.5), (1, 28, 28), True, "binary pixels"),
        (torch.zeros(0, 1, 28, 28), (1, 28, 28), False, "empty"),
    ],
)
def test_as_images_rejects_bad_input(x, shape, binary, message):
    with pytest.raises(DataError, match=message):
        as_images(x, shape, binary=binary)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=16))
def test_as_images_accepts_exactly_the_finite_unit_interval(values):
    x = torch.tensor(values).reshape(len(values), 1)
    ok = all(v == v and 0 <= v <= 1 for v in values)
    if ok:
        assert torch.equal(as_images(x, (1,)).flatten(), x.flatten())
    else:
        with pytest.raises(DataError):
            as_images(x, (1,))


@settings(max_examples=150, deadline=None)
@given(
    arrays(
        st.sampled_from([np.float32, np.float64, np.uint8, np.int64, np.bool_]),
        array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=3),
    ),
    st.booleans(),
)
def test_any_array_is_accepted_as_images_or_refused_with_a_data_error(array, binary):
    """Whatever a user passes, the answer is images of the model's shape or a one-line DataError."""
    x_shape = (1, 2, 3)
    try:
        x = as_images(array, x_shape, binary=binary)
    except DataError as e:
        assert len(str(e).splitlines()) == 1
        return
    assert x.dtype == torch.float32 and x.shape[1:] == x_shape and x.shape[0] >= 1
    assert torch.equal(x.flatten(), torch.as_tensor(array).float().flatten())
    assert ((x >= 0) & (x <= 1)).all()
    if binary:
        assert ((x == 0) | (x == 1)).all()


def test_threshold_binarization_keeps_pixels_at_or_above_one_half():
    grey = load_dataset("mnist-small", binarize="none")
    data = load_dataset("mnist-small", binarize="threshold")
    assert data.binary
    assert torch.equal(data.train_x, (grey.train_x >= 0.5).float())
    assert torch.equal(data.test_x, (grey.test_x >= 0.5).float())
    x, _, _ = data.batch(torch.arange(5))  # no resampling per minibatch
    assert torch.equal(x, data.train_x[:5])


def test_scoring_the_first_training_images_in_place_of_the_test_split():
    from pyro_vae.data import scored_on_train

    data = load_dataset("mnist-small", binarize="dynamic")
    scored = scored_on_train(data, 1000)
    x, y = data.split("train")
    assert torch.equal(scored.test_x, x[:1000]) and torch.equal(scored.test_y, y[:1000])
    assert torch.equal(scored.train_x, data.train_x)
    assert scored.name == "mnist-small, first 1000 training images"
    with pytest.raises(DataError, match="must be positive"):
        scored_on_train(data, 0)
