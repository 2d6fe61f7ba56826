import json
import math
from dataclasses import fields

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_vae.config import RECIPES, Config
from pyro_vae.errors import ConfigError


def test_defaults_are_valid_and_round_trip():
    c = Config()
    assert Config.from_dict(c.as_dict()) == c


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": "imagenet"}, "unknown dataset 'imagenet'"),
        ({"binarize": "yes"}, "unknown binarize 'yes'"),
        ({"elbo": "renyi"}, "unknown elbo 'renyi'"),
        ({"z_dim": 0}, "z_dim must be a positive integer"),
        ({"epochs": -1}, "epochs must be a positive integer"),
        ({"batch_size": 2.5}, "batch_size must be a positive integer"),
        ({"log_px_samples": 0}, "log_px_samples must be a positive integer"),
        ({"hidden_dims": ()}, "hidden_dims must be one or more positive integers"),
        ({"hidden_dims": (64, 0)}, "hidden_dims must be one or more positive integers"),
        ({"lr": 0.0}, "lr must be a positive number"),
        ({"lr": float("nan")}, "lr must be a positive number"),
        ({"lr_decay": 1.5}, r"lr_decay must be a number in \(0, 1\]"),
        ({"lr_decay": 0}, r"lr_decay must be a number in \(0, 1\]"),
        ({"activation": "tanh"}, "unknown activation 'tanh'"),
        ({"net": "conv", "activation": "relu"}, "the conv networks use LeakyReLU"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Config(**kwargs)


def test_unknown_keys_in_a_saved_config():
    with pytest.raises(ConfigError, match="unknown config keys: colour"):
        Config.from_dict({**Config().as_dict(), "colour": "blue"})


@given(st.one_of(st.integers(-5, 5), st.floats(allow_nan=True), st.booleans(), st.none()))
def test_sizes_accept_exactly_the_positive_integers(value):
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    if ok:
        assert Config(z_dim=value).z_dim == value
    else:
        with pytest.raises(ConfigError):
            Config(z_dim=value)


@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3)))
def test_learning_rate_accepts_exactly_the_positive_finite_numbers(value):
    if math.isfinite(value) and value > 0:
        assert Config(lr=value).lr == value
    else:
        with pytest.raises(ConfigError):
            Config(lr=value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 600) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=5,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([f.name for f in fields(Config)] + ["colour"]), JSON))
def test_any_json_config_is_accepted_valid_or_refused_with_a_config_error(changes):
    """Whatever a config.json holds, the answer is a valid Config or a ConfigError, nothing else."""
    try:
        config = Config.from_dict({**Config().as_dict(), **changes})
    except ConfigError as e:
        assert len(str(e).splitlines()) == 1
        return
    assert Config.from_dict(json.loads(json.dumps(config.as_dict()))) == config
    config.validate()


@pytest.mark.parametrize(
    "changes",
    [{"model": "hierarchical", "elbo": "trace"}, {"condition": "label", "learned_prior": True}],
)
def test_the_activation_reaches_every_network_of_the_model_and_guide(changes):
    from pyro_vae.config import build_vae
    from pyro_vae.nets import ACTIVATIONS

    model, guide = build_vae(Config(activation="relu", **changes), (1, 6, 5))
    hidden = [
        m
        for m in (*model.modules(), *guide.modules())
        if isinstance(m, tuple(ACTIVATIONS.values()))
    ]
    assert len(hidden) >= 3  # encoder, decoder and the prior's network at least
    assert all(type(m) is torch.nn.ReLU for m in hidden)


def test_fit_options_are_the_recipe_as_fit_takes_it():
    import inspect

    from pyro_vae import fit
    from pyro_vae.distributed import fit_distributed

    default = Config().fit_options()
    assert "step" not in default and "time_limit" not in default  # so fit_distributed takes them
    assert set(default) <= set(inspect.signature(fit_distributed).parameters)
    config = Config(epochs=3, lr=2e-3, lr_decay=0.9, clip_grad=5.0, step="compiled", time_limit=9.0)
    options = config.fit_options()
    assert set(options) <= set(inspect.signature(fit).parameters)
    assert options == {
        "epochs": 3,
        "batch_size": 128,
        "lr": 2e-3,
        "lr_decay": 0.9,
        "clip_grad": 5.0,
        "seed": 0,
        "discrete": None,
        "step": "compiled",
        "time_limit": 9.0,
    }


def test_the_completion_baseline_trains_with_the_runs_recipe(monkeypatch):
    from pyro_vae import completion, load_dataset

    seen = {}
    monkeypatch.setattr(completion, "fit", lambda *args, **kwargs: seen.update(kwargs))
    config = Config(
        condition="quadrants:1", epochs=2, lr_decay=0.5, clip_grad=1.0, step="compiled", seed=3
    )
    completion.train_baseline(config, load_dataset("mnist-small"))
    assert {k: seen[k] for k in config.fit_options()} == config.fit_options()


def test_labels_go_with_m2_or_a_model_file_and_alpha_and_share_with_labels():
    """--labels is for the built-in M2 and for a model file (whose program the door checks for
    a class site); --alpha and --labelled-share need --labels."""
    for model in ("m2", "my_model.py:SSVAE", "my_model.py"):
        config = Config(model=model, labels=100, alpha="kingma", labelled_share=0.2)
        assert config.labels == 100
    for model in ("vae", "gmvae", "hierarchical"):
        with pytest.raises(ConfigError, match="--labels N is the number of labelled images"):
            Config(model=model, labels=100)
    with pytest.raises(ConfigError, match="alpha weighs the classification term"):
        Config(model="my_model.py:SSVAE", alpha=1.0)
    with pytest.raises(ConfigError, match="labelled_share is the labelled images' share"):
        Config(model="my_model.py:SSVAE", labelled_share=0.5)


def test_sizes_no_machine_holds_are_refused_before_anything_is_built():
    """From Python, build(Config(z_dim=10**9)) was torch's allocation error; --flow-layers
    100000000 built layers for minutes."""
    from pyro_vae.config import build
    from pyro_vae.errors import ResourceError

    with pytest.raises(ResourceError, match="choose a smaller z_dim"):
        build(Config(z_dim=10**9), (1, 28, 28))
    with pytest.raises(ConfigError, match="flow_layers must be at most 1000"):
        Config(guide_family="flow", flow_layers=10**8)


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_a_recipe_fills_only_the_settings_left_unset(recipe):
    """Config.recipe (what pyro-vae train runs) takes the recipe's value for each setting not
    given, the given ones as given; Config itself keeps the textbook defaults."""
    needed = {"labels": 100} if recipe.when.get("model") == "m2" else {}
    config = Config.recipe(**recipe.when, **needed)
    for name, value in recipe.settings.items():
        assert getattr(config, name) == value
        plain = getattr(Config(), name)
        assert plain != value
        try:
            assert getattr(Config(**recipe.when, **needed), name) == plain
        except ConfigError as e:  # a model the plain default cannot train: the recipe's value
            assert f"--{name.replace('_', '-')} {value}" in str(e)
            continue
        assert getattr(Config.recipe(**recipe.when, **needed, **{name: plain}), name) == plain
    assert Config.recipe() == Config()


def test_m2_recipe_is_the_guide_table_recipe():
    """The settings docs/guide/discrete.md's mnist-small table was measured with."""
    config = Config.recipe(model="m2", labels=100)
    assert (config.alpha, config.labelled_share) == (46, 0.34)
    assert (config.z_dim, config.hidden_dims) == (16, (256,))
    assert Config.recipe(model="vae").z_dim == 50  # per model: a VAE's default stays
    assert Config.recipe(model="m2", labels=100, net="conv").hidden_dims == (400,)
    assert Config.recipe(condition="label").learned_prior
    assert not Config.recipe(condition="label", model="hierarchical", elbo="trace").learned_prior
