"""Faults and hostile inputs: every failure is one line, nothing the user had changes, and the run
directory can be run again (or resumed, once it holds a checkpoint).

The harness:

- :class:`Faults` injects ``OSError``\\ s (a read-only folder, a full disk, no permission) into
  every write below a folder, from the K-th write on, in this process: as root, where ``chmod``
  stops nothing, the error paths are still taken. :func:`test_a_fault_at_every_write_of_a_run`
  fails each write of a whole run in turn;
- memory limits (``resource.setrlimit`` in a child process) and sizes no machine holds;
- two writers of one run directory at once;
- generated command lines and config files (hypothesis; more examples under ``-m slow``).

Each case asserts :func:`assert_the_promise`.
"""

import builtins
import errno
import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyro_vae import registry
from pyro_vae.cli import main
from tests.test_cli import ROOT, assert_clean_error, cli
from tests.test_modelfile import GOOD

# The digit 9 alone: 400 training and 100 test images, so a whole run takes well under a second.
SMALL = ["--exclude-classes", "0,1,2,3,4,5,6,7,8"]
TINY = ["--z-dim", "2", "--hidden-dims", "8", "--epochs", "1", "--batch-size", "100"]
TINY += ["--log-px-samples", "5", "--quiet", *SMALL]


def snapshot(folder):
    """Every file below ``folder`` with its bytes' hash and its mode."""
    files = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = (
                    hashlib.sha256(f.read()).hexdigest(),
                    os.stat(path).st_mode,
                )
    return files


def assert_the_promise(result, message, before=None, folder=None):
    """A failure: exit != 0, one ``pyro-vae: error:`` line holding ``message``, no traceback; and,
    given a ``snapshot`` taken ``before``, every file that was in ``folder`` is byte-identical."""
    assert_clean_error(result, message)
    if before is not None:
        after = snapshot(folder) if os.path.isdir(folder) else {}
        assert {k: after.get(k) for k in before} == before


class Faults:
    """Make writes below ``root`` fail with ``OSError(code)`` from the ``at``-th write on (a disk
    that fills up stays full); with ``code=None``, only count them. A write is opening a file for
    writing, creating a folder, or renaming into ``root``."""

    def __init__(self, monkeypatch, root, code=None, at=1):
        self.root, self.code, self.at = os.path.abspath(root), code, at
        self.writes = []
        real_open, real_os_open = builtins.open, os.open
        real_mkdir, real_replace = os.mkdir, os.replace

        def write(path):
            path = os.path.abspath(os.fsdecode(path))
            if not (path + os.sep).startswith(self.root + os.sep):
                return
            self.writes.append(path)
            if self.code is not None and len(self.writes) >= self.at:
                raise OSError(self.code, os.strerror(self.code), path)

        def fake_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+"):
                write(file)
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                write(path)
            return real_os_open(path, flags, *args, **kwargs)

        def fake_mkdir(path, *args, **kwargs):
            write(path)
            return real_mkdir(path, *args, **kwargs)

        def fake_replace(src, dst, *args, **kwargs):
            write(dst)
            return real_replace(src, dst, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)
        monkeypatch.setattr(os, "replace", fake_replace)


def rerunnable(folder, before):
    """After a failed first run: the folder is as it was (gone, if the run made it)."""
    if before is None:
        return not os.path.exists(folder)
    return snapshot(folder) == before


# --- the file system -------------------------------------------------------------------------


def _faults_at_writes(tmp_path, monkeypatch, capsys, every):
    """A full disk at writes of ``train`` in turn (``every``: each one; else the first two, the
    first checkpoint, one in the middle and the last): one line; before the first checkpoint the
    folder is gone again and the same command runs; after it, ``--resume`` finishes the run."""
    out = str(tmp_path / "run")
    with monkeypatch.context() as m:
        counted = Faults(m, tmp_path)
        assert cli(capsys, "train", *TINY, "--out", out).returncode == 0
    writes = len(counted.writes)
    assert writes >= 8  # the folder, config.json, checkpoint.pt, history, metrics, figures
    expected = sorted(os.listdir(out))
    checkpoint = 1 + next(i for i, w in enumerate(counted.writes) if "checkpoint.pt" in w)
    picks = range(1, writes + 1) if every else sorted({1, 2, checkpoint, writes // 2 + 2, writes})
    for at in picks:
        out = str(tmp_path / f"run{at}")
        with monkeypatch.context() as m:
            Faults(m, tmp_path, errno.ENOSPC, at)
            result = cli(capsys, "train", *TINY, "--out", out)
        assert_the_promise(result, "No space left on device")
        if os.path.exists(os.path.join(out, "checkpoint.pt")):
            assert f"--resume {out}" in result.stderr
            again = cli(capsys, "train", "--resume", out, "--quiet")
        else:
            assert not os.path.exists(out), (at, os.listdir(out))
            again = cli(capsys, "train", *TINY, "--out", out)
        assert again.returncode == 0, (at, again.stderr)
        assert sorted(os.listdir(out)) == expected


def test_a_fault_at_writes_of_a_run(tmp_path, monkeypatch, capsys):
    _faults_at_writes(tmp_path, monkeypatch, capsys, every=False)


@pytest.mark.slow
def test_a_fault_at_every_write_of_a_run(tmp_path, monkeypatch, capsys):
    _faults_at_writes(tmp_path, monkeypatch, capsys, every=True)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EDQUOT])
def test_an_output_folder_that_cannot_be_written(code, tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "parent" / "run")
    with monkeypatch.context() as m:
        Faults(m, tmp_path, code)
        result = cli(capsys, "train", *TINY, "--out", out)
    assert_the_promise(result, os.strerror(code))
    assert not os.path.exists(tmp_path / "parent")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("faults") / "run")
    assert main(["train", *TINY, "--out", out]) == 0
    return out


@pytest.mark.parametrize(
    "command",
    [
        ["train", "--resume", "RUN", "--quiet"],
        ["sample", "RUN", "--n", "4"],
        ["train", *TINY, "--out", "RUN", "--overwrite"],
        ["gradvar", "RUN", "--draws", "2", "--particles", "1", "--estimators", "reparam"],
        ["anomaly", "RUN", "--ood", "mnist-small", "--n", "4", "-k", "2"],
    ],
    ids=["resume", "sample", "overwrite", "gradvar", "anomaly"],
)
def test_a_read_only_run_folder(command, run_dir, monkeypatch, capsys):
    command = [run_dir if a == "RUN" else a for a in command]
    before = snapshot(run_dir)
    with monkeypatch.context() as m:
        Faults(m, run_dir, errno.EROFS)
        result = cli(capsys, *command)
    assert_the_promise(result, "Read-only file system", before, run_dir)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize(
    "where, message",
    [
        ("FILE/run", "a part of that path is a file"),
        ("FILE", "exists and is not a directory"),
    ],
)
def test_an_output_path_below_a_regular_file(where, message, tmp_path, capsys):
    (tmp_path / "FILE").write_text("mine")
    out = str(tmp_path / where)
    before = snapshot(tmp_path)
    result = cli(capsys, "train", *TINY, "--out", out)
    assert_the_promise(result, message, before, str(tmp_path))


def test_sample_into_a_missing_folder(run_dir, tmp_path, capsys):
    result = cli(capsys, "sample", run_dir, "--n", "4", "--out", str(tmp_path / "no" / "s.png"))
    assert_the_promise(result, "its folder does not exist")


# --- memory ----------------------------------------------------------------------------------

LIMITED = """
import resource, sys
from pyro_vae import registry
from pyro_vae.cli import main
# What this process holds already, plus the limit: torch's import alone maps gigabytes.
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize"))
limit = vm * 1024 + int(sys.argv[1]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
sys.exit(main(sys.argv[2:]))
"""


def limited(megabytes, *args):
    """``pyro-vae ARGS`` in a child process allowed ``megabytes`` more address space."""
    return subprocess.run(
        [sys.executable, "-c", LIMITED, str(megabytes), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=600,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        # refused at the door: the networks' parameters cannot fit under the limit
        (["--z-dim", "10000000"], "z_dim 10000000 asks for"),
        # the allocator fails during the first step: conv activations the door does not estimate
        (
            [
                "--net",
                "conv",
                "--hidden-dims",
                "256,256",
                "--image-size",
                "64",
                "--batch-size",
                "400",
            ],
            "out of memory (an allocation of",
        ),
    ],
    ids=["door", "allocator"],
)
def test_running_out_of_memory_is_one_line_and_rerunnable(args, message, tmp_path):
    out = str(tmp_path / "run")
    result = limited(1500, "train", *TINY, *args, "--out", out)
    assert_the_promise(result, message)
    assert not os.path.exists(out)  # the same command, with more memory, can run again


@pytest.mark.parametrize(
    "args, setting",
    [
        (["--z-dim", "2000000000"], "z_dim 2000000000"),
        (["--hidden-dims", "8,2000000000"], "hidden_dims (8, 2000000000)"),
        (["--num-particles", "2000000000"], "num_particles 2000000000"),
        (["--image-size", "1000000"], "image_size 1000000"),
        (["--model", "hierarchical", "--elbo", "trace", "--z1-dim", "2000000000"], "z1_dim"),
        (["--net", "conv", "--hidden-dims", "8,100000000"], "hidden_dims (8, 100000000)"),
        # found by the fuzzer: a layer whose size overflows torch's own count
        (["--hidden-dims", "1518500299,1518500299"], "asks for too many parameters"),
    ],
)
def test_sizes_no_machine_holds_are_refused_by_name(args, setting, tmp_path, capsys):
    out = str(tmp_path / "run")
    result = cli(capsys, "train", *TINY, *args, "--out", out)
    assert_the_promise(result, setting)
    assert not os.path.exists(out)


# --- a failure before the first checkpoint leaves nothing behind -------------------------------

# The model-file tests' correct file, with a guide that samples a site the model lacks.
BROKEN_MODEL = GOOD.replace(
    'pyro.sample("z", dist.Normal(*self.encoder(x)).to_event(1))',
    'pyro.sample("BROKEN", dist.Normal(*self.encoder(x)).to_event(1))',
)


def test_a_model_file_that_fails_its_check_leaves_the_folder_rerunnable(tmp_path, capsys):
    path = tmp_path / "mine.py"
    path.write_text(BROKEN_MODEL)
    out = str(tmp_path / "run")
    command = ["train", *TINY, "--model", f"{path}:MyVAE", "--out", out]
    result = cli(capsys, *command)
    assert_the_promise(result, "does not sample the model's latent site")
    assert not os.path.exists(out)
    path.write_text(BROKEN_MODEL.replace('"BROKEN"', '"z"'))
    result = cli(capsys, *command)
    assert result.returncode == 0, result.stderr


# --- one writer per run ----------------------------------------------------------------------


def paused(args, pause):
    """Start ``pyro-vae ARGS`` with the testing hook that pauses it inside a write; return the
    process once it says it is paused there."""
    env = {**os.environ, "PYTHONPATH": ROOT, "PYRO_VAE_TEST_PAUSE_IN_WRITE": pause}
    child = subprocess.Popen(
        [sys.executable, "-m", "pyro_vae.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    said = []
    while not said or "paused in write" not in said[-1]:
        said.append(child.stderr.readline())
        if not said[-1]:
            child.kill()
            raise AssertionError(f"the run ended without pausing: {''.join(said)}")
    return child


def test_a_second_writer_is_refused_and_a_dead_ones_lock_is_not(tmp_path, capsys):
    out = str(tmp_path / "run")
    two_epochs = [a if a != "1" else "2" for a in TINY]  # --epochs 2
    first = paused(["train", *two_epochs, "--out", out], "checkpoint.pt:2")
    try:
        before = snapshot(out)  # with the first writer's half-written temporary file
        assert [name for name in before if name.endswith(".tmp")]
        for command in (
            ["train", "--resume", out, "--quiet"],
            ["train", *two_epochs, "--out", out, "--overwrite"],
        ):
            result = cli(capsys, *command)
            assert_the_promise(result, f"is being written by process {first.pid}", before, out)
            assert out in result.stderr
        # evaluate reads the checkpoint and says whose it is
        result = cli(capsys, "evaluate", out, "-k", "2", "--quiet")
        assert result.returncode == 0, result.stderr
        assert f"is still training (process {first.pid}" in result.stdout
        assert "after epoch 1 of 2" in result.stdout
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
        first.stderr.close()
    result = cli(capsys, "evaluate", out, "-k", "2", "--json", "--quiet")
    assert "stopped after epoch 1 of 2" in json.loads(result.stdout)["unfinished"]
    # The killed writer's lock is stale: --resume takes it over and finishes the run.
    result = cli(capsys, "train", "--resume", out, "--quiet")
    assert result.returncode == 0, result.stderr
    assert os.path.exists(os.path.join(out, "metrics.json"))
    assert not [name for name in os.listdir(out) if name.endswith((".tmp", ".lock"))]


def test_a_lock_from_another_machine_is_respected(run_dir, capsys):
    from pyro_vae.lock import LOCK

    lock = os.path.join(run_dir, LOCK)
    with open(lock, "w") as f:
        json.dump({"pid": 1, "host": "elsewhere.example", "since": 0, "command": "train"}, f)
    try:
        before = snapshot(run_dir)
        result = cli(capsys, "train", "--resume", run_dir, "--quiet")
        assert_the_promise(result, f"if that process is gone, delete {lock}", before, run_dir)
    finally:
        os.unlink(lock)


@pytest.mark.parametrize(
    "lock",
    [
        {"pid": 1099511627776, "host": "HERE", "since": 0},  # overflowed os.kill
        {"pid": -1, "host": "HERE", "since": 0},  # named every process: refused for ever
        {"pid": 0, "host": "HERE", "since": 0},
        {"pid": "12", "host": "HERE", "since": 0},
        {"pid": True, "host": "HERE"},
        ["not", "a", "lock"],
        "",
    ],
)
def test_a_stray_or_tampered_lock_is_taken_over(run_dir, capsys, lock):
    """A lock this library did not write is read like any other untrusted input: not a live
    writer, so resuming takes it over (it ended in tracebacks, or refused the run for ever)."""
    import socket

    from pyro_vae.lock import LOCK

    path = os.path.join(run_dir, LOCK)
    with open(path, "w") as f:
        if isinstance(lock, dict):
            lock = {**lock, "host": socket.gethostname()}
        f.write(json.dumps(lock) if lock != "" else "")
    result = cli(capsys, "evaluate", run_dir, "-k", "2", "--quiet")
    assert result.returncode == 0 and "still training" not in result.stdout, result.stderr
    result = cli(capsys, "train", "--resume", run_dir, "--quiet")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert not os.path.exists(path)


def test_a_lock_with_a_text_since_still_names_its_writer(run_dir, capsys):
    from pyro_vae.lock import LOCK

    lock = os.path.join(run_dir, LOCK)
    with open(lock, "w") as f:
        json.dump({"pid": 1, "host": "elsewhere.example", "since": "yesterday"}, f)
    try:
        before = snapshot(run_dir)
        result = cli(capsys, "train", "--resume", run_dir, "--quiet")
        assert_the_promise(result, "since an unknown time", before, run_dir)
    finally:
        os.unlink(lock)


def test_a_lock_that_cannot_be_written_is_not_left_empty(tmp_path, monkeypatch):
    from pyro_vae import lock as lock_module

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(lock_module.json, "dump", full)
    out = tmp_path / "run"
    with pytest.raises(OSError):
        with lock_module.writing(str(out)):
            pass
    assert not out.exists()  # the folder it made, and no 0-byte lock in it
    out.mkdir()
    with pytest.raises(OSError):
        with lock_module.writing(str(out)):
            pass
    assert list(out.iterdir()) == []


# --- generated command lines and config files ------------------------------------------------

# What each option is given: a few hostile strings, and integers that are either small (the run
# takes a moment) or far beyond any machine (the door refuses them at once); never the sizes in
# between, which would be valid runs of minutes.
HOSTILE = ["0", "-1", "", " ", "nan", "inf", "-inf", "1e3", "0x10", "2,3", "abc", "1.5", "१"]
HUGE = st.one_of(st.integers(10**9, 2**31 - 1), st.integers(2**31, 2**80)).map(str)


def ints(small):
    return st.one_of(st.sampled_from(HOSTILE), st.integers(-3, small).map(str), HUGE)


FLOATS = st.one_of(
    st.sampled_from(HOSTILE + ["1e308", "1e-320", "5e-324"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
OPTIONS = {
    "--z-dim": ints(6),
    "--hidden-dims": st.one_of(
        st.sampled_from(HOSTILE + ["8,", ",", "8,,8", "8,-8"]),
        st.lists(st.integers(1, 16), min_size=1, max_size=3).map(lambda v: ",".join(map(str, v))),
        st.lists(HUGE, min_size=1, max_size=2).map(",".join),
    ),
    "--batch-size": ints(500),
    "--num-particles": ints(3),
    "--image-size": ints(40),
    "--z1-dim": ints(4),
    "--seed": st.one_of(st.sampled_from(HOSTILE), st.integers(-(2**70), 2**70).map(str)),
    "--kl-warmup": ints(10**9),
    "--epochs": st.sampled_from(HOSTILE + ["1"]),
    "--log-px-samples": st.sampled_from(HOSTILE + ["1", "3"]),
    "--lr": FLOATS,
    "--beta": FLOATS,
    "--sigma": FLOATS,
    "--clip-grad": FLOATS,
    "--likelihood": st.sampled_from(["bernoulli", "gaussian", "continuous-bernoulli", "x", ""]),
    "--binarize": st.sampled_from(["none", "static", "dynamic", "yes"]),
    "--net": st.sampled_from(["mlp", "conv", "rnn"]),
    "--elbo": st.sampled_from(["trace", "meanfield", "iwae", "renyi"]),
    "--model": st.sampled_from(["vae", "hierarchical", "nope.py:X", "x.py", ":", "vae.py:1"]),
    "--condition": st.sampled_from(
        ["none", "label", "quadrants:1", "quadrants:3", "quadrants:0", "quadrants:", "x"]
    ),
    "--exclude-classes": st.sampled_from(
        ["0,1,2,3,4,5,6,7,8", "1,2,3,4,5,6,7,8,9", "0,1,2,3,4,5,6,7,8,9", "10", "-1", "a", ""]
    ),
    "--dataset": st.sampled_from(
        ["mnist-small", "folder:", "folder:/nonexistent", "folder:/dev/null", "cifar"]
    ),
}
FLAGS = ["--learned-prior", "--overwrite"]


@st.composite
def command_lines(draw):
    names = draw(st.lists(st.sampled_from(sorted(OPTIONS)), unique=True, max_size=6))
    argv = []
    for name in names:
        value = draw(OPTIONS[name])
        # "--opt=value" keeps values that start with "-" values, as a user would have to write them
        argv.append(f"{name}={value}")
    return argv + draw(st.lists(st.sampled_from(FLAGS), unique=True, max_size=2))


def assert_run_or_clean_refusal(result, out):
    """The promise for a generated case: a finished run, or one line, no traceback, and no
    folder left behind (so the corrected command can run)."""
    if result.returncode == 0:
        assert os.path.exists(os.path.join(out, "metrics.json"))
        return
    assert result.returncode in (1, 2), result
    assert_clean_error(result, "")
    assert not os.path.exists(out), os.listdir(out)


CASES = {"command lines": 0, "config files": 0}


def fuzz_settings(n, derandomize=True):
    """The default suite tries the same ``n`` cases every time; ``-m slow`` new ones each run."""
    return settings(
        max_examples=n,
        derandomize=derandomize,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def _generated_command_lines(argv, tmp_path, capsys):
    CASES["command lines"] += 1
    out = str(tmp_path / f"case{CASES['command lines']}")
    result = cli(capsys, "train", *TINY, *argv, "--out", out)
    assert_run_or_clean_refusal(result, out)


@fuzz_settings(25)
@given(argv=command_lines())
def test_generated_command_lines(argv, tmp_path, capsys):
    _generated_command_lines(argv, tmp_path, capsys)


@pytest.mark.slow
@fuzz_settings(400, derandomize=False)
@given(argv=command_lines())
def test_generated_command_lines_at_length(argv, tmp_path, capsys):
    _generated_command_lines(argv, tmp_path, capsys)


JSON_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-3, 2**66), max_size=3),
)


@st.composite
def config_files(draw):
    """A saved config.json with some settings replaced by generated JSON values."""
    from pyro_vae.config import Config

    config = Config().as_dict()
    for name in draw(st.lists(st.sampled_from(sorted(config)), unique=True, max_size=4)):
        config[name] = draw(JSON_VALUES)
    return config


def _generated_config_files(config, tmp_path, capsys):
    CASES["config files"] += 1
    path = tmp_path / f"config{CASES['config files']}.json"
    # JSON as Python writes it (NaN and Infinity included: a hand-edited file may hold them)
    path.write_text(json.dumps(config))
    out = str(tmp_path / f"run{CASES['config files']}")
    # The run's own length is kept tiny on the command line; everything else comes from the file.
    result = cli(capsys, "train", "--config", str(path), *TINY[:2], *TINY[4:], "--out", out)
    assert_run_or_clean_refusal(result, out)


@fuzz_settings(25)
@given(config=config_files())
def test_generated_config_files(config, tmp_path, capsys):
    _generated_config_files(config, tmp_path, capsys)


@pytest.mark.slow
@fuzz_settings(400, derandomize=False)
@given(config=config_files())
def test_generated_config_files_at_length(config, tmp_path, capsys):
    _generated_config_files(config, tmp_path, capsys)


# --- values that pass the checks and then crash ----------------------------------------------


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**64), "99999999999"])
def test_seeds_the_generators_do_not_take(seed, tmp_path, capsys):
    out = str(tmp_path / "run")
    result = cli(capsys, "train", *TINY, f"--seed={seed}", "--out", out)
    assert result.returncode == 2
    assert_the_promise(result, "expected a seed from 0 to 4294967295")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"seed": int(seed)}))
    result = cli(capsys, "train", "--config", str(config), *TINY, "--out", out)
    assert_the_promise(result, "seed must be an integer from 0 to 4294967295")
    assert not os.path.exists(out)


def test_seeds_in_the_python_api(run_dir):
    from pyro_vae import ConfigError, load_run

    with pytest.raises(ConfigError, match="seed must be an integer from 0"):
        load_run(run_dir).sample(2, seed=-1)


# --- small data ------------------------------------------------------------------------------


def image_folder(root, counts, size=8, mode="L", dtype="uint8", scale=255):
    """A folder of random images, ``counts[name]`` in each subfolder ``name`` ("" for the top)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, n in counts.items():
        os.makedirs(os.path.join(root, name), exist_ok=True)
        for i in range(n):
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            pixels = (rng.random(shape) * scale).astype(dtype)
            Image.fromarray(pixels).save(os.path.join(root, name, f"{i}.png"))
    return str(root)


FOLDER_RUN = ["--z-dim", "2", "--hidden-dims", "8", "--epochs", "1", "--batch-size", "2"]
FOLDER_RUN += ["--log-px-samples", "3", "--image-size", "8", "--likelihood", "gaussian", "--quiet"]


def test_a_test_split_of_one_image(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", {"": 4})  # a tenth, at least one: one test image
    out = str(tmp_path / "run")
    result = cli(capsys, "train", "--dataset", f"folder:{folder}", *FOLDER_RUN, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "(one image: no standard error)" in result.stdout and "nan" not in result.stdout
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["test_log_px_stderr"] is None
    result = cli(capsys, "evaluate", out, "-k", "3", "--json", "--quiet")

    def not_json(constant):
        raise AssertionError(f"{constant} is not JSON")

    metrics = json.loads(result.stdout, parse_constant=not_json)
    assert metrics["test_images"] == 1 and metrics["test_log_px_stderr"] is None


def test_an_exclusion_that_empties_the_test_split(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", {"a": 1, "b": 4})
    out = str(tmp_path / "run")
    # Which class the one test image has depends on the fixed split: exclude each in turn.
    results = [
        cli(
            capsys,
            "train",
            "--dataset",
            f"folder:{folder}",
            *FOLDER_RUN,
            "--out",
            out + label,
            "--exclude-classes",
            label,
            "--batch-size",
            "1",
        )
        for label in ("0", "1")
    ]
    refused = [r for r in results if r.returncode != 0]
    assert len(refused) == 1
    assert_the_promise(refused[0], "leaves its test split empty")


# --- files the user had ----------------------------------------------------------------------


def test_inspect_replaces_no_file_of_the_users(tmp_path, capsys):
    import shutil

    (tmp_path / "model.png").write_bytes(b"my picture")
    (tmp_path / "other").write_bytes(b"my notes")  # where graphviz would put its DOT source
    before = snapshot(tmp_path)
    small = ["--z-dim", "2", "--hidden-dims", "8"]
    result = cli(capsys, "inspect", "vae", *small, "--diagram", str(tmp_path / "model.png"))
    assert_the_promise(result, "exists; pass --overwrite", before, str(tmp_path))
    if shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not installed")
    result = cli(capsys, "inspect", "vae", *small, "--diagram", str(tmp_path / "other.png"))
    assert result.returncode == 0, result.stderr
    after = snapshot(tmp_path)
    assert {k: after[k] for k in before} == before
    assert set(after) == set(before) | {"other.png"}


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask_and_rewritten_ones_keep_their_mode(umask, tmp_path, capsys):
    out = str(tmp_path / "run")
    old = os.umask(umask)
    try:
        assert cli(capsys, "train", *TINY, "--out", out).returncode == 0
        for name in os.listdir(out):
            assert os.stat(os.path.join(out, name)).st_mode & 0o777 == 0o666 & ~umask, name
        os.chmod(os.path.join(out, "metrics.json"), 0o640)
        os.chmod(os.path.join(out, "history.json"), 0o604)
        assert cli(capsys, "train", "--resume", out, "--quiet").returncode == 0
    finally:
        os.umask(old)
    assert os.stat(os.path.join(out, "metrics.json")).st_mode & 0o777 == 0o640
    assert os.stat(os.path.join(out, "history.json")).st_mode & 0o777 == 0o604


# --- messages that mislead -------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b"hello, I am a text file\n", "it is a text file, not a file torch.save wrote"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "it is a PNG image"),
        (b"\x93NUMPY\x01\x00", "it is a NumPy array"),
        (b"", "it is empty"),
        (bytes([0x80, 0x05, 0x95]) + b"\x00" * 8, "it is damaged or not a torch file"),
    ],
    ids=["text", "png", "npy", "empty", "damaged pickle"],
)
def test_a_file_that_is_no_checkpoint_is_not_called_malicious(content, message, tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(content)
    for command in (["evaluate", str(tmp_path)], ["sample", str(tmp_path / "checkpoint.pt")]):
        result = cli(capsys, *command)
        assert_the_promise(result, message)
        assert "could run code" not in result.stderr
    images = tmp_path / "images.pt"
    images.write_bytes(content)
    from pyro_vae import DataError, load_images

    with pytest.raises(DataError, match=message):
        load_images(str(images))


# --- image folders ---------------------------------------------------------------------------


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    import numpy as np
    from PIL import Image

    from pyro_vae import load_dataset

    for i, level in enumerate((0, 16384, 32768, 65535)):
        pixels = np.full((8, 8), level, np.uint16)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")  # a 16-bit grayscale PNG
    assert Image.open(tmp_path / "2.png").mode.startswith("I")
    data = load_dataset(f"folder:{tmp_path}", "none", image_size=8)
    levels = sorted(torch_unique(data.train_x) + torch_unique(data.test_x))
    assert levels == pytest.approx([0, 64 / 255, 128 / 255, 1], abs=1e-6)


def torch_unique(x):
    return [round(v, 6) for v in x.unique().tolist()]


def huge_png(path, width, height):
    """A PNG whose header claims ``width`` x ``height`` pixels (no pixel data follows)."""
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_one_line(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", {"": 3})
    huge_png(tmp_path / "images" / "huge.png", 100_000, 100_000)
    out = str(tmp_path / "run")
    result = cli(capsys, "train", "--dataset", f"folder:{folder}", *FOLDER_RUN, "--out", out)
    assert_the_promise(result, "Pillow's limit against decompression bombs")
    assert "huge.png" in result.stderr and not os.path.exists(out)


LOAD_FOLDER = """
import resource, sys
from pyro_vae.data import load_dataset
import torchvision.transforms.functional  # the resizing code, loaded before the limit is set
vm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmSize"))
limit = vm * 1024 + int(sys.argv[2]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
data = load_dataset("folder:" + sys.argv[1], "none", image_size=16)
print(tuple(data.train_x.shape), tuple(data.test_x.shape))
"""


def test_a_folder_of_large_photos_takes_memory_for_the_small_images_only(tmp_path):
    """24 photos of 3000x3000 RGB are 648 MB decoded; with 400 MB to spare they load, since each
    is resized before the next is decoded."""
    import numpy as np
    from PIL import Image

    rows = np.linspace(0, 255, 3000, dtype=np.uint8)
    photo = np.repeat(np.stack([rows, rows[::-1], rows], -1)[None], 3000, axis=0)
    Image.fromarray(photo).save(tmp_path / "0.png", compress_level=1)
    for i in range(1, 24):
        os.link(tmp_path / "0.png", tmp_path / f"{i}.png")
    result = subprocess.run(
        [sys.executable, "-c", LOAD_FOLDER, str(tmp_path), "400"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["(22,", "3,", "16,", "16)", "(2,", "3,", "16,", "16)"]


# --- every command on every kind of run: it works, or says in one line that it cannot ----------


def _file(path):
    return ["--model", os.path.join(ROOT, *path.split("/"))]


# Every entry of the table of models (pyro_vae.registry.MODELS), with what its run needs; the
# conditional VAEs; and model files in each of the idioms Pyro's examples and tutorials write
# programs in (our own programs, in their styles).
VARIANTS = {
    name: ["--model", name] + (["--labels", "20"] if entry.needs_labels else [])
    for name, entry in registry.MODELS.items()
}
VARIANTS |= {
    "conv": ["--net", "conv", "--hidden-dims", "8,8"],
    "label": ["--condition", "label"],
    "quadrants": ["--condition", "quadrants:1"],
    "gaussian": ["--likelihood", "gaussian"],
    # methods of an nn.Module with pyro.module, as Pyro's VAE tutorial writes them
    "module methods": _file("examples/pyro_style_vae.py:VAE"),
    # PyroModule model and guide
    "model file": _file("examples/gmm_prior_vae.py:GMMPriorVAE"),
    # plain functions with pyro.param, in a size-less plate
    "plain functions": _file("tests/programs/sizeless_plate.py"),
    # Pyro's SS-VAE convention, ys=None: a one-hot class site, and an integer one, with labels
    "one-hot class site": _file("tests/programs/ss_vae.py:make") + ["--labels", "20"],
    "integer class site": _file("tests/programs/ss_vae.py:make_indices") + ["--labels", "20"],
    # a likelihood that reads the images (ProdLDA's Multinomial total count)
    "data-dependent likelihood": _file("tests/programs/pixel_topics.py:make"),
    # a discrete class the program reshapes, so it cannot be enumerated (training crashed)
    "reshaped class": _file("tests/programs/reshaped_class.py:make") + ["--discrete", "score"],
    # a discrete count of no finite support
    "count": _file("tests/programs/poisson_count.py:make"),
    # Pyro's CVAE convention: xs with the hidden quadrants set to -1, ys with the observed ones
    "masked quadrants": _file("tests/programs/cvae_quadrants.py:CVAE")
    + ["--condition", "quadrants:1"],
}
COMMANDS = {
    "evaluate --images": ["evaluate", "RUN", "-k", "2", "--images", "IMAGES"],
    "evaluate --images --label": [
        "evaluate",
        "RUN",
        "-k",
        "2",
        "--images",
        "IMAGES",
        "--label",
        "9",
    ],
    "sample": ["sample", "RUN", "--n", "4", "--out", "OUT/s.png"],
    "compare": ["compare", "--run", "RUN", "--out", "OUT/cmp", "--num-images", "10"]
    + ["--e-steps", "2", "--refine-steps", "1", "--mcmc-images", "1", "--mcmc-samples", "2"]
    + ["--mcmc-warmup", "2", "--elbo-samples", "2", "--log-px-samples", "2", "--quiet"],
    "gradvar": ["gradvar", "RUN", "--draws", "2", "--particles", "1", "--out", "OUT/gv", "--quiet"],
    "anomaly": [
        "anomaly",
        "RUN",
        "--ood",
        "mnist-small",
        "--n",
        "10",
        "-k",
        "2",
        "--out",
        "OUT/an",
    ],
    "inspect": ["inspect", "RUN", "--diagram", "none"],
}
# The pairs that crashed, or told a command-line user to "pass y", before: in the default suite.
# Every other pair runs under -m slow.
BROKE = {
    ("hierarchical", "compare"),
    ("label", "evaluate --images"),
    ("label", "evaluate --images --label"),
    ("label", "compare"),
    ("label", "gradvar"),
    ("label", "anomaly"),
    ("quadrants", "compare"),
    ("quadrants", "gradvar"),
    ("quadrants", "anomaly"),
    ("model file", "compare"),
    ("model file", "anomaly"),
    ("m2", "compare"),
    ("m2", "gradvar"),
    ("m2", "anomaly"),
    ("gmvae", "compare"),
    ("gmvae", "gradvar"),
    ("gmvae", "anomaly"),
    ("reshaped class", "evaluate --images"),
    ("reshaped class", "compare"),
    ("reshaped class", "gradvar"),
    ("reshaped class", "anomaly"),
    ("count", "compare"),
    ("count", "gradvar"),
    ("masked quadrants", "evaluate --images"),
    ("masked quadrants", "compare"),
}


@pytest.fixture(scope="module")
def variant_runs(tmp_path_factory):
    import numpy as np

    root = tmp_path_factory.mktemp("variants")
    images = str(root / "images.npy")
    np.save(images, (np.random.default_rng(0).random((3, 28, 28)) > 0.5).astype(np.float32))
    runs = {}

    def run(variant):
        if variant not in runs:
            out = str(root / variant.replace(" ", "-"))
            args = [a for a in TINY if a not in ("--hidden-dims", "8")] + VARIANTS[variant]
            if "--hidden-dims" not in VARIANTS[variant]:
                args += ["--hidden-dims", "8"]
            assert main(["train", *args, "--out", out]) == 0
            runs[variant] = out
        return runs[variant], images

    return run


@pytest.mark.parametrize(
    "variant, command",
    [
        pytest.param(v, c, marks=() if (v, c) in BROKE else pytest.mark.slow)
        for v in VARIANTS
        for c in COMMANDS
    ],
)
def test_every_command_on_every_kind_of_run(variant, command, variant_runs, tmp_path, capsys):
    run, images = variant_runs(variant)
    capsys.readouterr()  # what training the run printed
    replace = {"RUN": run, "IMAGES": images}
    argv = [replace.get(a, a.replace("OUT", str(tmp_path))) for a in COMMANDS[command]]
    result = cli(capsys, *argv)
    refusal = refusals(variant, command)
    if refusal is None:
        assert result.returncode == 0, result.stderr
    else:
        assert_the_promise(result, refusal)
        assert "pass y" not in result.stderr  # the Python API's argument, not a flag


def refusals(variant, command):
    """What a command says on a kind of run it does not handle, or ``None`` where it works."""
    if command == "evaluate --images --label" and variant != "label":
        return "--label needs a label-conditioned run"
    if command == "evaluate --images" and variant == "label":
        return "is conditioned on a label: pass --label N"
    completion = variant in ("quadrants", "masked quadrants")
    if command == "sample" and completion:
        return "an image-completion run completes images"
    conditional = variant == "label" or completion
    if command in ("compare", "gradvar", "anomaly") and conditional:
        return f"pyro-vae {command} cannot work on the run"
    return None


# --- the Python API: package errors only -----------------------------------------------------

HOSTILE_VALUES = st.one_of(
    st.sampled_from(
        [None, "abc", "", 1.5, -1, 0, True, 10**20, 2**31, float("nan"), float("inf"), (2, 3)]
        + [[1, "a"], {"a": 1}, object(), b"\x00", [], [[0.5]]]
    ),
    # small, or beyond what any count takes: a valid count of billions is a run of hours
    st.integers(-(2**70), 10),
    st.integers(2**31, 2**70),
    st.floats(),
    st.lists(st.floats(), max_size=4),
    st.builds(
        lambda shape, fill: __import__("torch").full(shape, fill),
        st.lists(st.integers(0, 4), max_size=4).map(tuple),
        st.one_of(st.floats(width=32), st.integers(-2, 2)),
    ),
)


def api_calls(run, labelled):
    import torch

    import pyro_vae

    x = torch.zeros(2, 1, 28, 28)
    return {
        "Run.elbo(x)": lambda v: run.elbo(v),
        "Run.elbo(num_samples)": lambda v: run.elbo(x, num_samples=v),
        "Run.log_px(x)": lambda v: run.log_px(v, num_samples=2),
        "Run.log_px(num_samples)": lambda v: run.log_px(x[:1], num_samples=v),
        "Run.encode(x)": lambda v: run.encode(v),
        "Run.decode(z)": lambda v: run.decode(v),
        "Run.sample(n)": lambda v: run.sample(v),
        "Run.sample(seed)": lambda v: run.sample(2, seed=v),
        "Run.sample(y)": lambda v: labelled.sample(2, y=v),
        "Run.elbo(y)": lambda v: labelled.elbo(x, y=v),
        "load_run(path)": lambda v: pyro_vae.load_run(v),
        "resume_run(path)": lambda v: pyro_vae.resume_run(v),
        "train_run(config)": lambda v: pyro_vae.train_run(v, "/nonexistent/never"),
        "load_images(path)": lambda v: pyro_vae.load_images(v),
        "load_dataset(name)": lambda v: pyro_vae.load_dataset(v),
        "load_dataset(binarize)": lambda v: pyro_vae.load_dataset("mnist-small", v),
        "load_dataset(image_size)": lambda v: pyro_vae.load_dataset("mnist-small", image_size=v),
        "load_dataset(exclude_classes)": lambda v: pyro_vae.load_dataset(
            "mnist-small", exclude_classes=v
        ),
        "build(x_shape)": lambda v: pyro_vae.build(pyro_vae.Config(z_dim=2), v),
        "Config(hidden_dims)": lambda v: pyro_vae.Config(hidden_dims=v),
        "Config(seed)": lambda v: pyro_vae.Config(seed=v),
    }


def _api_receives_hostile_values(data, run_dir, variant_runs):
    from pyro_vae import PyroVAEError, load_run

    calls = api_calls(load_run(run_dir), load_run(variant_runs("label")[0]))
    name = data.draw(st.sampled_from(sorted(calls)), label="call")
    value = data.draw(HOSTILE_VALUES, label="value")
    CASES["API calls"] = CASES.get("API calls", 0) + 1
    try:
        calls[name](value)
    except PyroVAEError as e:
        assert str(e) and "\n" not in str(e).strip(), (name, str(e))


@fuzz_settings(60)
@given(data=st.data())
def test_the_api_raises_only_package_errors(data, run_dir, variant_runs):
    _api_receives_hostile_values(data, run_dir, variant_runs)


@pytest.mark.slow
@fuzz_settings(1000, derandomize=False)
@given(data=st.data())
def test_the_api_raises_only_package_errors_at_length(data, run_dir, variant_runs):
    _api_receives_hostile_values(data, run_dir, variant_runs)


# --- what is read from disk is checked for its values, not only its format --------------------


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("x_shape", [-1, 28, 28], "x_shape must be three positive integers"),
        ("x_shape", [1, 28], "x_shape must be three positive integers"),
        ("num_classes", 10**12, "num_classes must be from 1 to"),
        ("epoch", -3, "epoch must be a whole number"),
    ],
)
def test_a_checkpoint_with_bad_values_is_refused(key, value, message, run_dir, tmp_path, capsys):
    import shutil

    import torch

    from pyro_vae.checkpoints import DIGEST, save_checkpoint

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state[key] = value
    # Edited by hand, the file no longer matches its checksum; written so (a fresh digest, as by
    # a writer with a bug), its values are what is refused.
    for written, said in ((False, "do not match the checksum"), (True, message)):
        with open(run / "checkpoint.pt", "wb") as f:
            if written:
                save_checkpoint({k: v for k, v in state.items() if k != DIGEST}, f)
            else:
                torch.save(state, f)
        before = snapshot(str(run))
        for command in (["evaluate", str(run), "-k", "2"], ["train", "--resume", str(run)]):
            assert_the_promise(cli(capsys, *command), said, before, str(run))


@pytest.mark.parametrize(
    "text",
    ["[" * 100_000 + "]" * 100_000, '{"z_dim": ' + "9" * 5000 + "}", "\udcff"],
    ids=["deeply nested", "a 5000-digit number", "not UTF-8"],
)
def test_a_config_file_that_json_cannot_read(text, tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    result = cli(capsys, "train", "--config", str(path), *TINY, "--out", str(tmp_path / "run"))
    assert_the_promise(result, "cannot read")
    assert not os.path.exists(tmp_path / "run")


EVALUATION_FAILURE = """
import pyro, pyro.distributions as dist, torch
from torch import nn

dec, enc = nn.Linear(2, 784), nn.Linear(784, 4)

def model(x):
    pyro.module("dec", dec)
    logits_scale = 1.0
    if x.shape[0] >= 300:  # the evaluation's 400 training images, never a step's 100
        {failure}
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(x.new_zeros(x.shape[0], 2), 1).to_event(1))
        logits = dec(z) * logits_scale
        pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x.flatten(1))

def guide(x):
    pyro.module("enc", enc)
    with pyro.plate("data", x.shape[0]):
        loc, s = enc(x.flatten(1)).chunk(2, -1)
        pyro.sample("z", dist.Normal(loc, s.exp()).to_event(1))
"""


@pytest.mark.parametrize(
    "failure, said",
    [
        ("raise RuntimeError('the evaluation batch broke me')", "the evaluation batch broke me"),
        ("logits_scale = float('nan')", "ValueError"),
    ],
    ids=["raises", "NaN"],
)
def test_a_model_that_fails_outside_a_training_step_is_one_line(tmp_path, capsys, failure, said):
    """The recorded step replays the program without its Python, so a failure on the test images
    first shows in evaluation: it was a 100-line Pyro traceback."""
    path = tmp_path / "evaluation_failure.py"
    path.write_text(EVALUATION_FAILURE.replace("{failure}", failure))
    out = str(tmp_path / "run")
    result = cli(capsys, "train", "--model", str(path), *TINY, "--out", out)
    assert_the_promise(result, "the model or guide failed while evaluating the trained run")
    assert said in result.stderr and f"pyro-vae train --resume {out} evaluates it" in result.stderr
    before = snapshot(out)  # training finished: its checkpoint stays
    assert_the_promise(cli(capsys, "train", "--resume", out, "--quiet"), said, before, out)


def _image_folder(folder, n=3):
    from PIL import Image

    folder.mkdir()
    rng = __import__("numpy").random.default_rng(0)
    for i in range(n):
        Image.fromarray((rng.random((28, 28)) > 0.5).astype("uint8") * 255).save(
            folder / f"{i}.png"
        )


FOLDER_TINY = ["--z-dim", "2", "--hidden-dims", "8", "--epochs", "1", "--batch-size", "2"]
FOLDER_TINY += ["--log-px-samples", "2", "--quiet"]


def test_a_fifo_in_a_data_folder_is_passed_over(tmp_path):
    """A FIFO named like an image blocked the read for ever."""
    _image_folder(tmp_path / "images")
    os.mkfifo(tmp_path / "images" / "pipe.png")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pyro_vae.cli",
            "train",
            "--dataset",
            f"folder:{tmp_path / 'images'}",
            *FOLDER_TINY,
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "training images 2" in result.stdout or os.path.exists(tmp_path / "run" / "metrics.json")


def test_a_run_inside_its_own_folder_data_set_is_refused(tmp_path, capsys):
    """Its figures would have joined the data set."""
    _image_folder(tmp_path / "images")
    before = snapshot(str(tmp_path / "images"))
    for out in (tmp_path / "images" / "run", tmp_path / "images"):
        result = cli(
            capsys,
            "train",
            "--dataset",
            f"folder:{tmp_path / 'images'}",
            *FOLDER_TINY,
            "--out",
            str(out),
            "--overwrite",
        )
        assert_the_promise(result, "inside the data set's folder", before, str(tmp_path / "images"))


CHDIR_MODEL = GOOD.replace(
    "import pyro", "import os, tempfile\nos.chdir(tempfile.gettempdir())\nimport pyro", 1
)


def test_a_model_file_that_changes_the_working_directory_does_not_move_the_run(
    tmp_path, capsys, monkeypatch
):
    """Relative paths resolved elsewhere, the error blamed the disk and a stale lock stayed."""
    assert "os.chdir" in CHDIR_MODEL
    monkeypatch.chdir(tmp_path)
    (tmp_path / "moving.py").write_text(CHDIR_MODEL)
    result = cli(capsys, "train", "--model", "moving.py:MyVAE", *TINY, "--out", "run")
    assert result.returncode == 0, result.stderr
    assert os.getcwd() == str(tmp_path)
    assert os.path.exists(tmp_path / "run" / "metrics.json")
    assert not os.path.exists(tmp_path / "run" / ".pyro-vae.lock")


def test_a_model_file_that_changes_the_default_dtype_is_told_so(tmp_path, capsys):
    """It got a dtype error from deep inside torch that did not say why."""
    import torch

    path = tmp_path / "double.py"
    path.write_text(
        GOOD.replace(
            "import pyro", "import torch\ntorch.set_default_dtype(torch.float64)\nimport pyro", 1
        )
    )
    result = cli(capsys, "train", "--model", f"{path}:MyVAE", *TINY, "--out", str(tmp_path / "run"))
    assert_the_promise(result, "changed torch's default dtype to float64")
    assert torch.get_default_dtype() == torch.float32
