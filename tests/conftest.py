import pyro
import pytest
import torch


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
