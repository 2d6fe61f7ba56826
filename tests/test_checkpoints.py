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
