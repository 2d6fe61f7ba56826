import errno
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_vae.checkpoints import _atomic_write, read_checkpoint, remove_stray_temporaries
from pyro_vae.errors import CheckpointError


def _fail_halfway(f):
    f.write(b"half a checkpoint")
    raise OSError(errno.ENOSPC, "No space left on device")


def _unpicklable_halfway(f):
    torch.save({"weights": torch.zeros(1000), "oops": lambda: None}, f)


@pytest.mark.parametrize("write", [_fail_halfway, _unpicklable_halfway])
def test_a_failing_write_leaves_the_previous_file_and_no_temporary(tmp_path, write):
    path = str(tmp_path / "checkpoint.pt")
    _atomic_write(path, lambda f: f.write(b"the good one"))
    with pytest.raises(Exception):  # noqa: B017  whatever the writer raised, unchanged
        _atomic_write(path, write)
    assert os.listdir(tmp_path) == ["checkpoint.pt"]
    assert open(path, "rb").read() == b"the good one"


def test_stray_temporaries_are_removed_and_nothing_else(tmp_path):
    for name in (".checkpoint.pt.x1y2.tmp", ".metrics.json.abc.tmp", "checkpoint.pt", "notes.tmp"):
        (tmp_path / name).write_bytes(b"")
    remove_stray_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt", "notes.tmp"]


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_are_read_or_refused_with_a_checkpoint_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "checkpoint.pt"
    path.write_bytes(data)
    with pytest.raises(CheckpointError):
        read_checkpoint(str(path))


# --- a checkpoint whose contents are malformed -------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run's checkpoint, with its training state."""
    from pyro_vae.config import Config
    from pyro_vae.runs import train_run

    out = str(tmp_path_factory.mktemp("ckpt") / "run")
    config = Config(z_dim=2, hidden_dims=(8,), epochs=1, batch_size=500, log_px_samples=2)
    train_run(config, out, quiet=True)
    return os.path.join(out, "checkpoint.pt")


def _rewrite(source, path, change, keep_digest=False):
    """``source``'s contents, changed by ``change(state)``, saved at ``path`` (with a fresh
    digest, so only the checks of the values can object, unless ``keep_digest``)."""
    from pyro_vae.checkpoints import DIGEST, load_plain, save_checkpoint

    state = load_plain(source)
    old = state.pop(DIGEST)
    change(state)
    with open(path, "wb") as f:
        if keep_digest:
            torch.save({**state, DIGEST: old}, f)
        else:
            save_checkpoint(state, f)
    return str(path)


def _first(weights):
    return next(k for k, v in weights.items() if v.is_floating_point())


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s["model"][_first(s["model"])].fill_(float("nan")), "holds non-finite values"),
        (lambda s: s["guide"][_first(s["guide"])].fill_(float("inf")), "holds non-finite values"),
        (lambda s: s["rng"].update(torch=torch.zeros(7, dtype=torch.uint8)), "torch's generator"),
        (lambda s: s.update(generator=torch.zeros(5)), "the minibatch generator"),
        (lambda s: s["rng"].update(numpy=["MT19937"]), "NumPy's or Python's generator"),
        (lambda s: s.update(model=[1, 2]), "not a dict of tensors"),
    ],
)
def test_a_checkpoint_with_bad_weights_or_generator_states_is_refused(
    trained, tmp_path, change, message
):
    path = _rewrite(trained, tmp_path / "checkpoint.pt", change)
    with pytest.raises(CheckpointError, match=message) as e:
        read_checkpoint(path)
    assert "is damaged" in str(e.value) and "\n" not in str(e.value)


def test_a_flipped_value_is_found_by_the_checksum(trained, tmp_path):
    """A changed optimizer moment resumed silently: nothing else checks those."""

    def flip(state):
        moments = [
            v
            for v in state["optimizer"][0]["optimizer"]["state"].values()
            for v in v.values()
            if v.dim()
        ]
        moments[0].view(-1)[0] += 1.0

    path = _rewrite(trained, tmp_path / "checkpoint.pt", flip, keep_digest=True)
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        read_checkpoint(path)
    assert read_checkpoint(trained)["epoch"] == 1  # the untouched one reads


def test_a_checkpoint_of_format_2_without_a_checksum_still_reads(trained, tmp_path):
    from pyro_vae.checkpoints import DIGEST, load_plain

    state = load_plain(trained)
    del state[DIGEST]
    state["format_version"] = 2
    path = tmp_path / "checkpoint.pt"
    torch.save(state, path)
    assert read_checkpoint(str(path))["epoch"] == 1


class _Mkdir:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


class _Eval:
    def __reduce__(self):
        return (eval, ("1",))


@pytest.mark.parametrize("payload", ["mkdir", "eval", "nested"])
def test_a_hostile_torch_save_is_refused_as_such_and_its_payload_does_not_run(tmp_path, payload):
    """It was called damaged, with torch's advice to load it with weights_only=False: the one
    step that would run it."""
    ran = tmp_path / "payload-ran"
    value = {"mkdir": _Mkdir(str(ran)), "eval": _Eval(), "nested": {"a": [_Mkdir(str(ran))]}}
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": "pyro_vae.checkpoint", "model": value[payload]}, path)
    with pytest.raises(CheckpointError) as e:
        read_checkpoint(str(path))
    message = str(e.value)
    assert "loading it could run code" in message and "weights_only" not in message
    assert "damaged" not in message and not ran.exists()


@pytest.mark.parametrize("spec", ["garbage", "checkpoint.pt:two", ":", "a:b:c"])
def test_the_testing_hook_ignores_what_is_not_its_own(tmp_path, monkeypatch, spec):
    """A garbage value of the kill-and-resume tests' variable gave a traceback on every write."""
    monkeypatch.setenv("PYRO_VAE_TEST_PAUSE_IN_WRITE", spec)
    path = str(tmp_path / "checkpoint.pt")
    _atomic_write(path, lambda f: f.write(b"written"))
    assert open(path, "rb").read() == b"written"


def test_a_full_disk_names_the_file_being_written(tmp_path):
    """The disk filling up inside a write named "a file" in the one-line error."""
    from pyro_vae.resources import translate

    path = str(tmp_path / "samples.png")
    with pytest.raises(OSError) as e:
        _atomic_write(path, _fail_halfway)
    assert e.value.filename == path
    assert str(translate(e.value)).startswith(f"{path}: No space left on device; the disk is full")
