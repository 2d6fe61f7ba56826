import json
import os
import textwrap

import pytest
import torch

from pyro_vae.config import Config, build
from pyro_vae.errors import ConfigError, ModelFileError
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
    "not-observed": (", obs=x)", ")", "no sample site of the model observed the images"),
    "event-shape": (".to_event(3), obs=x", ", obs=x", "use .to_event(...)"),
    "guide-misses-a-latent": (
        '            pyro.sample("x"',
        '            pyro.sample("w", dist.Normal(0., 1.))\n            pyro.sample("x"',
        "the guide does not sample the model's latent site(s) w",
    ),
    "no-class": ("class MyVAE:", "class OtherVAE:", "defines no 'MyVAE'"),
    "syntax": ("class MyVAE:", "class MyVAE", "failed to load: SyntaxError"),
    "exit-at-import": (
        "class MyVAE:",
        "import sys\nsys.exit(3)\nclass MyVAE:",
        "called sys.exit(3)",
    ),
    "constructor-fails": (
        "self.model = Model(x_shape, z_dim, hidden_dims)",
        "self.model = Model(x_shape, z_dim, hidden_dims); 1 / 0",
        "MyVAE(x_shape, z_dim, hidden_dims) failed: division by zero",
    ),
}

# What the old protocol refused and the door now takes as it is.
ACCEPTED = {
    "any site names": ('pyro.sample("x"', 'pyro.sample("image"'),
    "a plate of its own": (
        "        with data_plate(x, idx, size):\n            z =",
        "        with pyro.plate('images', x.shape[0]):\n            z =",
    ),
    "no guide": ("self.guide = Guide(x_shape, z_dim, hidden_dims)", "self.guide = None"),
}


@pytest.mark.parametrize("case", ACCEPTED)
def test_what_the_door_takes_as_it_is(case, tmp_path):
    old, new = ACCEPTED[case]
    assert old in GOOD
    (tmp_path / "ok.py").write_text(GOOD.replace(old, new))
    model, guide = build(
        Config(model=f"{tmp_path}/ok.py:MyVAE", z_dim=2, hidden_dims=(8,)), (1, 6, 5)
    )
    x = torch.bernoulli(torch.full((4, 1, 6, 5), 0.5))  # a per-image guide holds 4 images
    model_trace, _ = check_protocol(model, guide, x)
    assert model_trace.nodes[model.structure.image]["fn"].event_shape == (1, 6, 5)


def test_a_correct_file_and_the_example_pass(tmp_path):
    (tmp_path / "good.py").write_text(GOOD)
    x = torch.bernoulli(torch.full((3, 1, 6, 5), 0.5))
    for spec in (f"{tmp_path}/good.py:MyVAE", f"{EXAMPLE}:GMMPriorVAE"):
        model, guide = build(Config(model=spec, z_dim=2, hidden_dims=(8,)), (1, 6, 5))
        model_trace, _ = check_protocol(model, guide, x)
        assert model_trace.nodes["x"]["fn"].event_shape == (1, 6, 5)
        assert model.structure.plate.subsampled


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
    with pytest.raises(ModelFileError, match="likelihood configures the built-in models"):
        build(Config(model=f"{tmp_path}/good.py:MyVAE", likelihood="gaussian"), (1, 6, 5))
    with pytest.raises(ModelFileError, match="activation configures the built-in models"):
        build(Config(model=f"{tmp_path}/good.py:MyVAE", activation="relu"), (1, 6, 5))
    with pytest.raises(ModelFileError, match="does not exist"):
        build(Config(model=f"{tmp_path}/nope.py:MyVAE"), (1, 6, 5))


def test_a_file_without_a_model_says_how_to_name_one(tmp_path):
    from pyro_vae.modelfile import load_program

    path = tmp_path / "nothing.py"
    path.write_text("x = 1\n")
    with pytest.raises(ModelFileError) as error:
        load_program(str(path), (1, 28, 28), 2, (8,))
    assert str(error.value).endswith(f"{path}:NAME (a class or factory) or {path}:MODEL,GUIDE")


PROGRAMS = os.path.join(os.path.dirname(__file__), "programs")


@pytest.mark.parametrize(
    "spec",
    ["unused_ys.py:VAE", "sizeless_plate.py", "ss_vae.py:make"],
    ids=["ys=None unused", "size-less plate", "M2 with ys=None"],
)
def test_pyro_style_files_train_from_the_command_line(spec, tmp_path, capsys):
    """mnist-small has labels; a run that observes none passes ys=None to the file's program."""
    from pyro_vae.cli import main

    out = tmp_path / "run"
    args = ["train", "--model", os.path.join(PROGRAMS, spec), "--z-dim", "4"]
    args += ["--hidden-dims", "32", "--epochs", "1", "--batch-size", "200"]
    args += ["--log-px-samples", "5", "--quiet", "--out", str(out)]
    assert main(args) in (0, None), capsys.readouterr().err
    metrics = json.load(open(out / "metrics.json"))
    assert -800 < metrics["test_log_px"] < 0


def test_a_factory_gets_the_number_of_classes(tmp_path):
    """Pyro's SS-VAE class takes its sizes by its own names; a three-line factory adapts it."""
    spec = os.path.join(PROGRAMS, "ss_vae.py:make")
    model, _ = build(Config(model=spec, z_dim=2, hidden_dims=(8,)), (1, 6, 5), num_classes=4)
    assert model.structure.y.num_classes == 4 and model.structure.site("y").shape == (4,)


def test_a_constructor_keeps_its_own_sizes_unless_the_command_line_gives_them(tmp_path, capsys):
    """pyro-vae train --model FILE:VAE without --z-dim: VAE(z_dim=3)'s own 3, not the CLI's 50;
    with --z-dim 5, 5; a constructor without a default gets pyro_vae's (50 and 400)."""
    from pyro_vae.cli import main

    (tmp_path / "own.py").write_text(
        textwrap.dedent(GOOD).replace(
            "class MyVAE:\n    def __init__(self, x_shape, z_dim, hidden_dims):",
            "class MyVAE:\n    def __init__(self, x_shape, z_dim=3, hidden_dims=(16,)):",
        )
    )
    for given, z_dim in (([], 3), (["--z-dim", "5"], 5)):
        out = tmp_path / f"run{z_dim}"
        args = ["train", "--model", f"{tmp_path}/own.py:MyVAE", *given, "--epochs", "1"]
        args += ["--batch-size", "200", "--log-px-samples", "2", "--quiet", "--out", str(out)]
        assert main(args) in (0, None), capsys.readouterr().err
        config = json.load(open(out / "config.json"))
        assert config["z_dim"] == (None if not given else 5)
        from pyro_vae.runs import load_run

        assert load_run(str(out)).structure.code.numel == z_dim
    (tmp_path / "needs.py").write_text(textwrap.dedent(GOOD))
    model, _ = build(Config.recipe(model=f"{tmp_path}/needs.py:MyVAE"), (1, 6, 5))
    assert model.structure.code.numel == 50
    with pytest.raises(ConfigError, match="z_dim None .the program.s own. is for a model file"):
        Config(z_dim=None)


def test_a_constructor_that_seeds_torch_itself_still_gets_the_runs_seed(tmp_path, capsys):
    """A class that calls torch.manual_seed(1) as it is built (as a third-party library's does):
    --seed still chooses the initial weights (the same seed, the same ones), and a line says
    why."""
    import pyro

    (tmp_path / "seeded.py").write_text(
        textwrap.dedent(GOOD).replace(
            "        self.model = Model(x_shape, z_dim, hidden_dims)",
            "        torch.manual_seed(1)\n        self.model = Model(x_shape, z_dim, hidden_dims)",
        )
    )
    weights = []
    for seed in (0, 1, 0):
        pyro.set_rng_seed(seed)
        config = Config(model=f"{tmp_path}/seeded.py:MyVAE", z_dim=2, hidden_dims=(8,))
        model, _ = build(config, (1, 6, 5))
        weights.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert not torch.equal(weights[0], weights[1]) and torch.equal(weights[0], weights[2])
    err = capsys.readouterr().err
    assert "MyVAE(...) seeds torch's random generator itself (torch.manual_seed(1))" in err
