"""The table of models: every entry is made as a model file is, and the config asks it."""

import inspect
import textwrap

import pytest
import torch

from pyro_vae import registry
from pyro_vae.config import Config, build
from pyro_vae.errors import ConfigError, ModelFileError
from pyro_vae.program import Program

X_SHAPE = (1, 6, 5)
K = 3


def settings(entry):
    """The fewest settings a run of ``entry`` needs."""
    return {"model": entry.name, "z_dim": 2, "hidden_dims": (8,)} | (
        {"labels": 6} if entry.needs_labels else {}
    )


@pytest.mark.parametrize("name", registry.MODELS)
def test_an_entry_is_made_with_a_model_files_factory_signature(name):
    """make(x_shape, z_dim, hidden_dims, num_classes, **options): the program's sizes come from
    these arguments alone, and the door learns the rest by running it."""
    entry = registry.MODELS[name]
    params = list(inspect.signature(entry.make).parameters)
    assert params[:4] == ["x_shape", "z_dim", "hidden_dims", "num_classes"]
    model, guide = entry.make(X_SHAPE, 2, (8,), K)
    x = torch.bernoulli(torch.full((4, *X_SHAPE), 0.5))
    y = torch.full((4,), -1) if entry.class_latent else None
    structure = Program(model, guide, x, y).structure
    assert structure.code.numel == 2
    assert structure.x_shape == X_SHAPE
    assert entry.description and "\n" not in entry.description


@pytest.mark.parametrize("name", registry.MODELS)
def test_the_config_builds_each_entry_through_the_door(name):
    entry = registry.MODELS[name]
    model, guide = build(Config.recipe(**settings(entry)), X_SHAPE, num_classes=K, train_size=12)
    assert model.structure.code.numel == 2
    assert (model.structure.y.site is not None) == entry.class_latent


@pytest.mark.parametrize("setting, value", [("condition", "label"), ("z1_dim", 3), ("sigma", 0.1)])
def test_a_setting_an_entry_does_not_read_is_refused_naming_the_entries_that_do(setting, value):
    for entry in registry.MODELS.values():
        changes = {setting: value} | ({"likelihood": "gaussian"} if setting == "sigma" else {})
        if setting in entry.reads:
            Config.recipe(**settings(entry), **changes)
            continue
        readers = [e.name for e in registry.MODELS.values() if setting in e.reads]
        with pytest.raises(ConfigError, match=f"{setting} is a setting of --model {readers[0]}"):
            Config.recipe(**settings(entry), **changes)


def test_a_model_file_is_one_more_entry(tmp_path):
    (tmp_path / "m.py").write_text(
        textwrap.dedent(
            """
            import pyro, pyro.distributions as dist, torch

            def make(x_shape, z_dim):
                def model(x, y=None):
                    with pyro.plate("data", x.shape[0]):
                        z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], z_dim), 1).to_event(1))
                        probs = torch.sigmoid(z.sum(-1, keepdim=True)).expand(-1, x[0].numel())
                        pyro.sample("x", dist.Bernoulli(probs).to_event(1), obs=x.reshape(len(x), -1))
                return model, None
            """
        )
    )
    spec = f"{tmp_path}/m.py:make"
    entry = registry.entry(spec)
    assert entry.user_code and not {"likelihood", "net", "activation", "z1_dim"} & set(entry.reads)
    model, guide, owner = entry.make(X_SHAPE, 3, (8,), K)
    assert guide is None and owner is None
    with pytest.raises(ModelFileError, match="likelihood configures the built-in models"):
        Config(model=spec, likelihood="gaussian")
    # --beta and --kl-warmup weigh any program's latent sites: the door's scale, and the
    # per-image guide's of a model without a guide
    model, guide = build(Config(model=spec, z_dim=3, beta=2.0, kl_warmup=2), X_SHAPE)
    assert model.z_scale == guide.z_scale == 2.0
    assert registry.absolute("m.py:make").endswith("/m.py:make")
    assert registry.absolute("vae") == "vae"


def test_unknown_names_and_the_help_come_from_the_table():
    with pytest.raises(ConfigError, match="unknown model 'nope'; choose vae, hierarchical, m2"):
        registry.entry("nope")
    help_text = registry.help_text()
    for entry in registry.MODELS.values():
        assert f"{entry.name} ({entry.description})" in help_text


def test_labels_and_a_condition_together_are_refused_in_one_line(capsys):
    """Both would pass a model file's second argument: refused before anything is built."""
    from pyro_vae.cli import main

    spec = "tests/programs/ss_vae.py:make"
    for condition in ("label", "quadrants:1"):
        with pytest.raises(ConfigError, match="would both pass the program's second argument"):
            Config(model=spec, labels=20, condition=condition)
        assert main(["train", "--model", spec, "--labels", "20", "--condition", condition]) == 1
        err = capsys.readouterr().err
        assert err.startswith("pyro-vae: error: --labels and --condition") and err.count("\n") == 1
