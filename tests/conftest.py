import math
import os

import pyro
import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread per worker, in the commands the tests start too: two workers with two
    # threads each on two cores run many times slower than one worker alone.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# ``make test`` runs ``-n auto --dist loadfile``: each test module on one worker, so its
# module-scoped fixtures are computed once. These modules share a worker too: the tutorials'
# notebooks are executed once for the tutorial tests and the site.
SHARED_WORKER = {"test_tutorials": "notebooks", "test_docs": "notebooks"}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile``, with the modules of :data:`SHARED_WORKER` sent to one worker."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            return SHARED_WORKER.get(os.path.splitext(os.path.basename(path))[0], path)

    return Scheduling(config, log)


def pytest_collection_modifyitems(items):
    """The modules of :data:`SHARED_WORKER`, the longest share, first: a worker starts on them
    while the other takes the rest."""
    first = set(SHARED_WORKER)

    def shared(item):
        path = item.nodeid.split("::", 1)[0]
        return os.path.splitext(os.path.basename(path))[0] in first

    items.sort(key=lambda item: not shared(item))


@pytest.fixture(autouse=True)
def _fresh_pyro():
    """Every test starts with a cleared param store, a fixed seed and validation on."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


@pytest.fixture(autouse=True)
def _no_timed_progress_lines(monkeypatch):
    """Training prints a progress line every few seconds where stderr is not a terminal, as it
    is under pytest; how many depends on the machine's speed. Tests that read stderr see none,
    and tests of the lines themselves set ``progress.EVERY`` again."""
    from pyro_vae import progress

    monkeypatch.setattr(progress, "EVERY", math.inf)


@pytest.fixture(autouse=True)
def _one_semi_run_at_a_time(monkeypatch):
    """pyro-vae semi trains one run per core at once by default; the suite's workers already
    fill the cores, so its tables train their runs one after the other, and the tests of
    --jobs ask for processes themselves."""
    from pyro_vae import semi

    monkeypatch.setattr(semi, "default_jobs", lambda: 1)


def assert_close(actual, expected, atol=1e-5, rtol=1e-5, msg=""):
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    assert torch.allclose(actual, expected, atol=atol, rtol=rtol), (
        f"{msg}\nactual:   {actual}\nexpected: {expected}"
    )


class SmokeNotebooks:
    """The tutorials executed once per test run as smoke-size notebooks, in ``folder``.

    The tutorial tests execute them one by one; the docs' test renders the same notebooks into the
    site, so each tutorial runs once (``docs/tutorial_notebooks.py`` reuses a current notebook).
    """

    def __init__(self, folder):
        import importlib.util
        import os

        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path = os.path.join(root, "docs", "tutorial_notebooks.py")
        spec = importlib.util.spec_from_file_location("tutorial_notebooks", path)
        self.tool = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.tool)
        self.folder = folder

    def build(self, scripts=None):
        """Execute ``scripts`` (default: every tutorial) unless current; return the notebooks' paths."""
        return self.tool.build(self.folder, smoke=True, scripts=scripts, log=lambda line: None)


@pytest.fixture(scope="session")
def smoke_notebooks(tmp_path_factory):
    return SmokeNotebooks(str(tmp_path_factory.mktemp("notebooks")))
