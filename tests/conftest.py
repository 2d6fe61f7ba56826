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
