import os
import textwrap

import pytest
import torch

from pyro_vae.config import Config, build
from pyro_vae.errors import ModelFileError
from pyro_vae.modelfile import check_protocol

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "gmm_prior_vae.py")

# A correct file with one thing broken per case: (replace this, with that, expected message).
GOOD = """
import pyro, pyro.distributions as dist, torch
from pyro.nn import PyroModule
from pyro_vae import AmortizedGuide, MLPDecoder, MLPEncoder, data_plate

class Model(PyroModule):
    def __init__(self, x_shape, z_dim, hidden_dims):
        super().__init__()
        self.z_dim, self.decoder = z_dim, MLPDecoder(x_shape, z_dim, hidden_dims)

    def forward(self, x=None, y=None, idx=None, size=None):
        with data_plate(x, idx, size):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(3), obs=x)

class Guide(PyroModule):
    def __init__(self, x_shape, z_dim, hidden_dims):
        super().__init__()
        self.encoder = MLPEncoder(x_shape, z_dim, hidden_dims)

    def forward(self, x, y=None, idx=None, size=None):
        with data_plate(x, idx, size):
            pyro.sample("z", dist.Normal(*self.encoder(x)).to_event(1))

class MyVAE:
    def __init__(self, x_shape, z_dim, hidden_dims):
        self.model = Model(x_shape, z_dim, hidden_dims)
        self.guide = Guide(x_shape, z_dim, hidden_dims)
"""

BROKEN = {
    "missing-x": ('pyro.sample("x"', 'pyro.sample("image"', "no sample site 'x'"),
    "not-observed": (", obs=x)", ")", "'x' is not observed"),
    "event-shape": (".to_event(3), obs=x", ", obs=x", "use .to_event(3)"),
    "guide-misses-a-latent": (
        '            pyro.sample("x"',
        '            pyro.sample("w", dist.Normal(0., 1.))\n            pyro.sample("x"',
        "does not sample the model's latent site(s) w",
    ),
    "no-data-plate": (
        "        with data_plate(x, idx, size):\n            z =",
        "        with pyro.plate('data', x.shape[0] if x is not None else size):\n            z =",
        "ignores idx and size",
    ),
    "no-class": ("class MyVAE:", "class OtherVAE:", "defines no 'MyVAE'"),
    "syntax": ("class MyVAE:", "class MyVAE", "failed to load: SyntaxError"),
    "not-modules": (
        "self.guide = Guide(x_shape, z_dim, hidden_dims)",
        "self.guide = None",
        ".guide must be a torch.nn.Module",
    ),
}


def test_a_correct_file_and_the_example_pass(tmp_path):
    (tmp_path / "good.py").write_text(GOOD)
    x = torch.bernoulli(torch.full((3, 1, 6, 5), 0.5))
    for spec in (f"{tmp_path}/good.py:MyVAE", f"{EXAMPLE}:GMMPriorVAE"):
        model, guide = build(Config(model=spec, z_dim=2, hidden_dims=(8,)), (1, 6, 5))
        model_trace, _ = check_protocol(model, guide, x)
        assert model_trace.nodes["x"]["fn"].event_shape == (1, 6, 5)


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_file_is_explained(case, tmp_path):
    old, new, message = BROKEN[case]
    assert old in GOOD
    (tmp_path / "bad.py").write_text(GOOD.replace(old, new))
    x = torch.bernoulli(torch.full((3, 1, 6, 5), 0.5))
    with pytest.raises(ModelFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        model, guide = build(
            Config(model=f"{tmp_path}/bad.py:MyVAE", z_dim=2, hidden_dims=(8,)), (1, 6, 5)
        )
        check_protocol(model, guide, x)


def test_built_in_options_are_refused_for_a_model_file(tmp_path):
    (tmp_path / "good.py").write_text(textwrap.dedent(GOOD))
    with pytest.raises(ModelFileError, match="likelihood configure the built-in models"):
        build(Config(model=f"{tmp_path}/good.py:MyVAE", likelihood="gaussian"), (1, 6, 5))
    with pytest.raises(ModelFileError, match="does not exist"):
        build(Config(model=f"{tmp_path}/nope.py:MyVAE"), (1, 6, 5))
