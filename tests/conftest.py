import os

import pyro
import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread per worker, in the commands the tests start too: two workers with two
    # threads each on two cores run many times slower than one worker alone.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

# Test modules whose tests run in one worker together (``make test`` runs ``-n auto --dist
# loadgroup``): the tutorials' notebooks are executed once for the tutorial tests and the site.
SHARED_WORKER = {"test_tutorials": "notebooks", "test_docs": "notebooks"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Keep each test module on one worker, so its module-scoped fixtures are computed once."""
    for item in items:
        module = os.path.splitext(os.path.basename(item.nodeid.split("::")[0]))[0]
        item.add_marker(pytest.mark.xdist_group(SHARED_WORKER.get(module, module)))


@pytest.fixture(autouse=True)
def _fresh_pyro():
    """Every test starts with a cleared param store, a fixed seed and validation on."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


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
