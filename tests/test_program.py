"""The program door: every way Pyro code is written gets in, its structure is discovered by
running it, and what cannot work is refused in one line that names the fix."""

import copy
import math
import os
import textwrap

import pyro
import pytest
import torch

from pyro_vae import evaluate
from pyro_vae.config import Config, build
from pyro_vae.data import Data
from pyro_vae.errors import DataError, ModelFileError, ProgramError
from pyro_vae.guides import LocalGuide
from pyro_vae.program import DataPlate, DataScale, Program, as_program
from pyro_vae.train import fit
from tests.conftest import assert_close
from tests.linear_gaussian import plain_functions
from tests.test_modelfile import GOOD

X_SHAPE = (1, 6, 5)

# Pyro's VAE tutorial style: an nn.Module whose model(x) and guide(x) methods register the
# networks with pyro.module, name the sites as the author likes, flatten the pixels and open a
# plate without subsampling.
TUTORIAL_STYLE = """
import pyro, pyro.distributions as dist, torch
from torch import nn

class VAE(nn.Module):
    def __init__(self, z_dim=3, hidden_dim=16, pixels=30):
        super().__init__()
        self.z_dim, self.pixels = z_dim, pixels
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden_dim), nn.Softplus(),
                                     nn.Linear(hidden_dim, pixels), nn.Sigmoid())
        self.encoder = nn.Sequential(nn.Linear(pixels, hidden_dim), nn.Softplus(),
                                     nn.Linear(hidden_dim, 2 * z_dim))

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("latent", dist.Normal(x.new_zeros(x.shape[0], self.z_dim), 1.0)
                            .to_event(1))
            probs = self.decoder(z)
            pyro.sample("obs", dist.Bernoulli(probs, validate_args=False).to_event(1),
                        obs=x.reshape(-1, self.pixels))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(x.reshape(-1, self.pixels)).chunk(2, -1)
            pyro.sample("latent", dist.Normal(loc, log_scale.exp()).to_event(1))
"""

# Module-level functions with pyro.param parameters and two latent sites.
FUNCTIONS = """
import pyro, pyro.distributions as dist, torch
from torch.distributions import constraints

def model(x):
    w = pyro.param("w", lambda: 0.1 * torch.randn(4, 30))
    with pyro.plate("images", x.shape[0]):
        a = pyro.sample("a", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        b = pyro.sample("b", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        logits = torch.cat([a, b], -1) @ w
        pyro.sample("pixels", dist.Bernoulli(logits=logits).to_event(1), obs=x)

def guide(x):
    m = pyro.param("m", lambda: torch.zeros(30, 4))
    s = pyro.param("s", torch.ones(4), constraint=constraints.positive)
    with pyro.plate("images", x.shape[0]):
        h = x @ m
        pyro.sample("a", dist.Normal(h[..., :2], s[:2]).to_event(1))
        pyro.sample("b", dist.Normal(h[..., 2:], s[2:]).to_event(1))

make = None
"""

# PyroModules with pyro_vae's optional extras (idx and size, data_plate): the model-file tests'
# correct file with sites of other names, and a factory beside its class.
PYRO_MODULES = (
    GOOD.replace('"z"', '"code"').replace('"x"', '"image"')
    + """
def make(x_shape, z_dim):
    return Model(x_shape, z_dim, (8,)), Guide(x_shape, z_dim, (8,))
"""
)

STYLES = {
    "nn.Module methods with pyro.module": (TUTORIAL_STYLE, "VAE", "latent", "image", False),
    "function pair with pyro.param": (FUNCTIONS, "", "b", "flat", False),
    "named function pair": (FUNCTIONS, "model,guide", "b", "flat", False),
    "PyroModules in a class": (PYRO_MODULES, "MyVAE", "code", "image", True),
    "factory": (PYRO_MODULES, "make", "code", "image", True),
}


def tiny_data(n_train=48, n_test=16):
    """Binary images from a 2-D latent factor model, so there is something to learn."""
    g = torch.Generator().manual_seed(0)
    w = 3 * torch.randn(2, 30, generator=g)
    z = torch.randn(n_train + n_test, 2, generator=g)
    x = torch.bernoulli(torch.sigmoid(z @ w), generator=g).reshape(-1, *X_SHAPE)
    train, test = x[:n_train], x[n_train:]
    labels = torch.zeros(n_train, dtype=torch.long)
    return Data("tiny", "static", train, labels, test, labels[:n_test])


def spec(tmp_path, text, names):
    path = tmp_path / "user_model.py"
    path.write_text(textwrap.dedent(text))
    return f"{path}:{names}" if names else str(path)


def build_style(tmp_path, style, data=None, seed=0):
    text, names, code, _, _ = STYLES[style]
    pyro.set_rng_seed(seed)
    config = Config(model=spec(tmp_path, text, names), z_dim=3, hidden_dims=(16,))
    x = (data or tiny_data()).test_x[:4]
    return build(config, X_SHAPE, x=x, train_size=48)


@pytest.mark.parametrize("style", STYLES)
def test_every_style_gets_in_and_its_structure_is_discovered(style, tmp_path):
    _, _, code, layout, subsampled = STYLES[style]
    model, guide = build_style(tmp_path, style)
    s = model.structure
    assert s.code.name == code
    assert s.layout == layout
    assert s.plate.subsampled is subsampled
    assert s.image in ("obs", "pixels", "image")
    assert not s.conditional and s.has_guide
    if style.startswith("function"):
        assert s.latent_names == ("a", "b")
        assert sorted(k for k in model.state_dict()) == [
            "pyro.param:m",
            "pyro.param:s",
            "pyro.param:w",
        ]
    # the halves split the parameters by what each one's log-density uses
    model_ids = {id(p) for p in model.parameters()}
    guide_ids = {id(p) for p in guide.parameters()}
    assert model_ids and guide_ids and not model_ids & guide_ids


@pytest.mark.parametrize("style", STYLES)
def test_every_style_trains_and_resumes_bit_for_bit(style, tmp_path):
    data = tiny_data()
    states = []

    def run(resume_from=None, checkpoint=None):
        model, guide = build_style(tmp_path, style, data)
        fit(
            model,
            guide,
            data,
            epochs=3,
            batch_size=16,
            lr=1e-2,
            quiet=True,
            seed=3,
            resume_from=resume_from,
            checkpoint=checkpoint,
            test_samples=0,
        )
        return model, guide

    model, guide = run(checkpoint=lambda s: states.append(copy.deepcopy(s)))
    before = evaluate.elbo(model, guide, data.test_x, num_samples=4)
    resumed, resumed_guide = run(resume_from=states[0])  # after epoch 1
    for (k, a), (_, b) in zip(model.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    for (k, a), (_, b) in zip(guide.state_dict().items(), resumed_guide.state_dict().items()):
        assert torch.equal(a, b), k
    # and it learned something: the ELBO rose above the untrained one
    fresh, fresh_guide = build_style(tmp_path, style, data)
    untrained = evaluate.elbo(fresh, fresh_guide, data.test_x, num_samples=4)
    assert before.mean() > untrained.mean()


def test_the_two_programs_keep_their_own_pyro_params(tmp_path):
    a, _ = build_style(tmp_path, "function pair with pyro.param", seed=0)
    b, _ = build_style(tmp_path, "function pair with pyro.param", seed=1)
    assert not torch.equal(a.state_dict()["pyro.param:w"], b.state_dict()["pyro.param:w"])
    assert "w" not in pyro.get_param_store()  # nothing leaked into the global store


def test_a_plate_without_subsampling_is_scaled_to_the_data_set():
    truth, model, guide = plain_functions()
    x = truth(size=8).detach()
    program = Program(model, guide, x)
    assert not program.structure.plate.subsampled
    from pyro import poutine

    trace = poutine.trace(program.model).get_trace(x[:4], None, torch.arange(4), 40)
    assert trace.nodes["obs"]["scale"] == 10.0
    assert trace.nodes["h"]["scale"] == 10.0


@pytest.mark.parametrize("sized", [True, False])
def test_a_guide_built_for_a_program_scales_its_plate_as_the_model_does(sized):
    """The scale sits outside the plate, where it finds the plate's frame on each site."""
    from pyro import poutine

    def guide():
        with DataPlate("data", -1, subsampled=False, sized=sized)(4, torch.arange(4), 40):
            pyro.sample("z", pyro.distributions.Normal(torch.zeros(4), 1.0))

    assert poutine.trace(guide).get_trace().nodes["z"]["scale"] == 10.0


def test_data_scale_touches_only_sites_in_its_plate():
    def model():
        g = pyro.sample("g", pyro.distributions.Normal(0.0, 1.0))
        with pyro.plate("data", 3):
            pyro.sample("l", pyro.distributions.Normal(g, 1.0))

    from pyro import poutine

    with DataScale("data", 5.0):
        trace = poutine.trace(model).get_trace()
    assert trace.nodes["g"]["scale"] == 1.0 and trace.nodes["l"]["scale"] == 5.0


def test_plain_functions_are_evaluated_against_their_exact_log_px():
    truth, model, guide = plain_functions()
    torch.manual_seed(0)
    x = truth(size=20).detach()
    program = Program(model, guide, x)
    q = LocalGuide(20, structure=program.structure)
    from pyro_vae.inference import e_step

    e_step(program.model, q, x, steps=300)
    exact = truth.exact_log_px(x)
    pyro.set_rng_seed(0)
    elbo = evaluate.elbo(program.model, q, x, num_samples=200)
    log_px = evaluate.log_px(program.model, q, x, num_samples=2000)
    assert (elbo <= exact + 0.05).all()
    assert_close(log_px.mean(), exact.mean(), atol=0.03)


def test_a_model_without_a_guide_trains_by_variational_em(tmp_path):
    text = FUNCTIONS.replace("def guide(x):", "def unused_guide(x):")
    data = tiny_data()
    config = Config(model=spec(tmp_path, text, ""), z_dim=3, hidden_dims=(16,))
    model, guide = build(config, X_SHAPE, x=data.test_x[:4], train_size=48)
    assert isinstance(guide, LocalGuide) and not model.structure.has_guide
    assert [s.name for s in guide.sites] == ["a", "b"] and guide.size == 48
    before = evaluate.elbo(model, guide, data.train_x, num_samples=4).mean()
    # 20 epochs of 3 steps: with the guide's sites scaled to the data set as the model's are
    # (the ELBO itself, not a tempered one), 5 epochs of Adam's first steps did not yet rise
    fit(model, guide, data, epochs=20, batch_size=16, lr=0.05, quiet=True, test_samples=0)
    assert evaluate.elbo(model, guide, data.train_x, num_samples=4).mean() > before + 1


BROKEN = {
    "no observed images": (
        ", obs=x)",
        ")",
        "no sample site of the model observed the images; pass obs=x to the image site",
    ),
    "guide misses a latent": (
        '        pyro.sample("b", dist.Normal(h[..., 2:], s[2:]).to_event(1))\n',
        "",
        "the guide does not sample the model's latent site(s) b",
    ),
    "guide adds a site": (
        '        pyro.sample("b", dist.Normal(h[..., 2:], s[2:]).to_event(1))\n',
        '        pyro.sample("b", dist.Normal(h[..., 2:], s[2:]).to_event(1))\n'
        '        pyro.sample("extra", dist.Normal(0., 1.))\n',
        "the guide samples site(s) extra that the model does not have",
    ),
    "shape mismatch": (
        'pyro.sample("a", dist.Normal(h[..., :2], s[:2]).to_event(1))',
        'pyro.sample("a", dist.Normal(h[..., :2], s[:2]))',
        "the guide failed: Shape mismatch inside plate",
    ),
    "no plate": (
        '    with pyro.plate("images", x.shape[0]):\n        a =',
        "    if True:\n        a =",
        "not inside a plate over the images",
    ),
    "stateful": (
        "def model(x):\n",
        "CALLS = []\ndef model(x):\n    CALLS.append(1)\n    w0 = float(len(CALLS))\n",
        "keeps state between calls",
    ),
    "unseen parameters": (
        "def model(x):\n",
        "HIDDEN = torch.nn.Linear(4, 30)\ndef model(x):\n",
        "cannot find",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_what_cannot_work_is_refused_with_the_fix(case, tmp_path):
    old, new, message = BROKEN[case]
    assert old in FUNCTIONS
    text = FUNCTIONS.replace(old, new)
    if case == "stateful":
        text = text.replace(
            "logits = torch.cat([a, b], -1) @ w", "logits = torch.cat([a, b], -1) @ w * w0"
        )
    if case == "unseen parameters":
        text = text.replace(
            "logits = torch.cat([a, b], -1) @ w", "logits = HIDDEN(torch.cat([a, b], -1))"
        )
    config = Config(model=spec(tmp_path, text, ""), z_dim=3, hidden_dims=(16,))
    with pytest.raises(ModelFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build(config, X_SHAPE)


def test_a_discrete_latent_passes_the_door_and_is_trained_by_the_score_function(tmp_path):
    """Two binary switches as one event have no enumerable support as a site (Independent):
    the door records them as discrete, of unknown cardinality, and they default to ``score``."""
    from pyro_vae.discrete import default_strategy

    text = FUNCTIONS.replace(
        '        b = pyro.sample("b", dist.Normal(torch.zeros(2), 1.0).to_event(1))\n',
        '        b = pyro.sample("b", dist.Bernoulli(0.5 * torch.ones(2)).to_event(1))\n',
    ).replace(
        'pyro.sample("b", dist.Normal(h[..., 2:], s[2:]).to_event(1))',
        'pyro.sample("b", dist.Bernoulli(torch.sigmoid(h[..., 2:])).to_event(1))',
    )
    config = Config(model=spec(tmp_path, text, ""), z_dim=3, hidden_dims=(16,))
    model, _ = build(config, X_SHAPE)
    site = model.structure.site("b")
    assert site.discrete and site.cardinality is None and model.structure.code.name != "b"
    assert default_strategy(model.structure) == "score"


def test_a_constructor_that_cannot_be_called_is_explained(tmp_path):
    text = PYRO_MODULES.replace(
        "def __init__(self, x_shape, z_dim, hidden_dims):\n        self.model",
        "def __init__(self, x_shape, z_dim, hidden_dims, width):\n        self.model",
    )
    config = Config(model=spec(tmp_path, text, "MyVAE"), z_dim=3, hidden_dims=(16,))
    with pytest.raises(ModelFileError, match="MyVAE.*needs width, which pyro_vae cannot give"):
        build(config, X_SHAPE)


def test_an_error_inside_the_program_at_run_time_is_one_line_with_where(tmp_path):
    """A model that breaks only on the last, smaller batch: the error names the epoch, the step
    and the first line of what the model raised, without Pyro's trace dump."""
    text = FUNCTIONS.replace(
        "def model(x):\n",
        "def model(x):\n    if x.shape[0] == 8:\n        raise ValueError('cannot take 8 images')\n",
    )
    config = Config(model=spec(tmp_path, text, ""), z_dim=3, hidden_dims=(16,))
    data = tiny_data(n_train=40)
    model, guide = build(config, X_SHAPE, x=data.test_x[:4], train_size=40)
    with pytest.raises(ProgramError) as error:
        fit(model, guide, data, epochs=2, batch_size=16, quiet=True, test_samples=0)
    message = str(error.value)
    assert "at epoch 1, step 3 (a batch of 8 images): ValueError: cannot take 8 images" in message
    assert "\n" not in message and "Trace Shapes" not in message


def test_a_bare_model_trains_with_a_per_image_guide_passed_to_fit():
    """fit(model, LocalGuide(N, z_dim), data) with a model that has not been through the door:
    the door runs the per-image guide on the first training images' rows."""
    truth, model, _ = plain_functions()
    torch.manual_seed(0)
    x = truth(size=60).detach()
    labels = torch.zeros(60, dtype=torch.long)
    data = Data("linear-gaussian", "none", x, labels, x[:10], labels[:10])
    program = Program(model, None, x[:4], train_size=60)
    guide = LocalGuide(60, structure=program.structure)
    history = fit(model, guide, data, epochs=20, batch_size=20, lr=0.05, quiet=True)
    assert history.train_elbo[-1] > history.train_elbo[0]


# -- Pyro's own idioms: a second argument ys=None, plates without a size ---------------------

PROGRAMS = os.path.join(os.path.dirname(__file__), "programs")


# (file:names, what the door learns y is: kind, one-hot, classes, site; the data plate's name)
IDIOMS = {
    "M2 with a one-hot class ys, size-less plate": ("ss_vae.py:make", ("labels", True, 10, "y")),
    "M2 with an integer class ys, size-less plate": (
        "ss_vae.py:make_indices",
        ("labels", False, 10, "y"),
    ),
    "plain functions, size-less plate, no ys": ("sizeless_plate.py", ("none", False, None, None)),
    "unconditional VAE whose ys is unused": ("unused_ys.py:VAE", ("none", False, None, None)),
}


def idiom_config(idiom):
    return Config(model=os.path.join(PROGRAMS, IDIOMS[idiom][0]), z_dim=3, hidden_dims=(16,))


@pytest.mark.parametrize("idiom", IDIOMS)
def test_pyro_idioms_get_in_and_ys_is_learned_from_the_program(idiom):
    """Nothing is observed, so nothing is passed as ys: the class site is a latent (sampled by
    the guide, as Pyro's convention has it for ys=None), and the structure says what ys is."""
    data = tiny_data()
    x, labels = data.test_x[:4], data.test_y[:4]
    # the data's labels are offered, as train and inspect offer them: a run that observes
    # nothing does not pass them
    model, guide = build(idiom_config(idiom), X_SHAPE, x=x, y=labels, train_size=48)
    s = model.structure
    kind, one_hot, num_classes, site = IDIOMS[idiom][1]
    assert (s.y.kind, s.y.one_hot, s.y.num_classes, s.y.site) == (kind, one_hot, num_classes, site)
    assert not s.y.observed and not s.conditional
    assert s.plate.name == "data" and not s.plate.subsampled
    if kind == "labels":
        assert s.latent_names == ("z", "y") and s.site("y").cardinality == 10
        assert s.y.model_reads and s.y.guide_reads
    else:
        assert not s.y.model_reads and not s.y.guide_reads


@pytest.mark.parametrize("idiom", IDIOMS)
def test_pyro_idioms_pass_as_program_with_the_data_labels_offered(idiom):
    """:func:`pyro_vae.fit`'s door on the user's own objects: the labels are offered, and a
    program that runs with ys=None is called with ys=None."""
    from pyro_vae.modelfile import load_program

    data = tiny_data()
    model, guide, _ = load_program(idiom_config(idiom).model, X_SHAPE, 3, (16,), 10)
    model, guide = as_program(model, guide, data.test_x[:4], data.test_y[:4], train_size=48)
    assert not model.structure.y.observed
    assert model.structure.y.kind == IDIOMS[idiom][1][0]


@pytest.mark.parametrize("idiom", IDIOMS)
def test_pyro_idioms_train_with_ys_none(idiom):
    """The data's labels are zeros, as indices: passed to a one-hot site, validation would
    refuse them; training never passes them."""
    data = tiny_data()
    model, guide = build(idiom_config(idiom), X_SHAPE, x=data.test_x[:4], train_size=48)
    history = fit(model, guide, data, epochs=2, batch_size=16, lr=1e-2, quiet=True, test_samples=0)
    assert all(math.isfinite(v) for v in history.train_elbo)
    assert evaluate.elbo(model, guide, data.test_x, num_samples=2).isfinite().all()


def test_a_program_is_called_with_ys_none_unless_the_run_observes_it(tmp_path):
    """Every call -- discovery, training, evaluation, generation -- passes ys=None."""
    text = (
        open(os.path.join(PROGRAMS, "unused_ys.py"))
        .read()
        .replace(
            "    def model(self, xs, ys=None):\n",
            "    def model(self, xs, ys=None):\n        assert ys is None, ys\n",
        )
        .replace(
            "    def guide(self, xs, ys=None):\n",
            "    def guide(self, xs, ys=None):\n        assert ys is None, ys\n",
        )
    )
    data = tiny_data()
    config = Config(model=spec(tmp_path, text, "VAE"), z_dim=3, hidden_dims=(16,))
    model, guide = build(config, X_SHAPE, x=data.test_x[:4], y=data.test_y[:4], train_size=48)
    fit(model, guide, data, epochs=1, batch_size=16, quiet=True, test_samples=0)
    evaluate.elbo(model, guide, data.test_x, data.test_y, num_samples=2)
    from pyro_vae.program import generate

    assert generate(model, 3, data.test_y[:3]).shape == (3, *X_SHAPE)


@pytest.mark.parametrize(
    "settings, kind, observed, conditional",
    [
        (dict(), "none", False, False),
        (dict(condition="label"), "labels", True, True),
        (dict(condition="quadrants:1"), "image", True, True),
        (dict(model="m2", labels=10), "labels", True, False),
    ],
)
def test_the_built_in_models_observe_what_their_run_observes(settings, kind, observed, conditional):
    """A label-conditioned model and image completion are passed their condition; M2 its labels
    (-1: none); the plain VAE nothing."""
    model, _ = build(Config(z_dim=3, hidden_dims=(16,), **settings), (1, 6, 6))
    s = model.structure
    assert (s.y.kind, s.y.observed, s.conditional) == (kind, observed, conditional)
    if settings.get("model") == "m2":
        assert (s.y.site, s.y.num_classes, s.y.one_hot) == ("y", 10, False) and s.y.guide_reads


def test_example_batch_invents_no_labels():
    from pyro_vae.config import example_batch

    x = torch.ones(3, *X_SHAPE)
    for config in (Config(), Config(model="file.py:VAE")):
        assert example_batch(config, X_SHAPE)[1] is None
        assert example_batch(config, X_SHAPE, x=x, y=torch.zeros(3))[1] is None
    assert example_batch(Config(condition="label"), X_SHAPE, x=x)[1].shape == (3,)
    assert example_batch(Config(model="m2", labels=10), X_SHAPE, x=x)[1].tolist() == [-1, -1, -1]


# the per-image guide opens the plate as the model does: Pyro does not warn of a plate in the
# guide that the model lacks
@pytest.mark.filterwarnings("error::UserWarning")
def test_a_size_less_plate_is_scaled_to_the_data_set_in_the_model_and_in_a_per_image_guide(
    tmp_path,
):
    from pyro import poutine

    text = open(os.path.join(PROGRAMS, "sizeless_plate.py")).read()
    data = tiny_data()
    config = Config(model=spec(tmp_path, text, ""), z_dim=3, hidden_dims=(16,))
    model, _ = build(config, X_SHAPE, x=data.test_x[:4], train_size=48)
    assert model.structure.plate == DataPlate("data", -1, subsampled=False, sized=False)
    trace = poutine.trace(model).get_trace(data.train_x[:4], None, torch.arange(4), 40)
    assert trace.nodes["x"]["scale"] == 10.0 and trace.nodes["z"]["scale"] == 10.0
    # without its guide: a per-image guide opens the plate as the model does and scales it too
    text = text.replace("def guide(x):", "def unused_guide(x):")
    config = Config(model=spec(tmp_path, text, ""), z_dim=3, hidden_dims=(16,))
    model, guide = build(config, X_SHAPE, x=data.test_x[:4], train_size=48)
    assert isinstance(guide, LocalGuide)
    trace = poutine.trace(guide).get_trace(data.train_x[:4], None, torch.arange(4), 40)
    assert trace.nodes["z"]["scale"] == 10.0
    before = evaluate.elbo(model, guide, data.train_x, num_samples=4).mean()
    fit(model, guide, data, epochs=20, batch_size=16, lr=0.05, quiet=True, test_samples=0)
    assert evaluate.elbo(model, guide, data.train_x, num_samples=4).mean() > before + 0.5


SIZE_LESS_REFUSED = {
    "a global latent outside the plate": (
        '    with pyro.plate("data"):\n        z =',
        '    g = pyro.sample("g", dist.Normal(0.0, 1.0))\n    with pyro.plate("data"):\n        z =',
        "latent site 'g' has batch shape () in plate(s) []",
    ),
    "a latent of one value for every image": (
        '    with pyro.plate("data"):\n        z =',
        '    with pyro.plate("data"):\n        g = pyro.sample("g", dist.Normal(0.0, 1.0))\n        z =',
        "latent site 'g' has batch shape () in plate(s) ['data']",
    ),
}


@pytest.mark.parametrize("case", SIZE_LESS_REFUSED)
def test_what_a_size_less_plate_cannot_hold_is_refused_by_name(case, tmp_path):
    old, new, message = SIZE_LESS_REFUSED[case]
    text = open(os.path.join(PROGRAMS, "sizeless_plate.py")).read()
    assert old in text
    text = text.replace(old, new)
    # the guide samples g as well, so the model's own site is what is refused
    text = text.replace(
        '    with pyro.plate("data"):\n        pyro.sample("z", dist.Normal(pixels @ m, s)',
        '    pyro.sample("g", dist.Normal(0.0, 1.0))\n'
        '    with pyro.plate("data"):\n        pyro.sample("z", dist.Normal(pixels @ m, s)',
    )
    config = Config(model=spec(tmp_path, text, ""), z_dim=3, hidden_dims=(16,))
    with pytest.raises(ModelFileError) as error:
        build(config, X_SHAPE)
    assert message in str(error.value) and "global latents" in str(error.value)
    sized = "a plate without a size takes its size from the sites in it" in str(error.value)
    assert sized == (case == "a latent of one value for every image")


# Pyro's style, an encoder on flattened pixels: the door's image layout fails in the guide at
# once; the flat one gets through the guide and fails in the model. ``ys`` is the user's.
TWO_ARGUMENTS = """
import pyro, pyro.distributions as dist, torch
from torch import nn

class VAE(nn.Module):
    def __init__(self, z_dim=3, pixels=30):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Linear(pixels, 2 * z_dim)
        self.decoder = nn.Linear(z_dim, pixels)

    def model(self, xs, ys=None):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data"):
            z = pyro.sample("z", dist.Normal(torch.zeros(xs.shape[0], self.z_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=xs)

    def guide(self, xs, ys=None):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data"):
            loc, log_scale = self.encoder(xs).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))
"""

MISLEADING = {
    "the flat attempt got further": (
        "self.decoder = nn.Linear(z_dim, pixels)",
        "self.decoder = nn.Linear(z_dim + 1, pixels)",
        [
            "the model failed after site(s) z when called as model(xs=(4, 30) flattened, "
            "ys=None): mat1 and mat2 shapes cannot be multiplied",
            "make the model run on the images flattened to (30,) and ys=None, as the guide did",
            "(tried too: as guide(xs=(4, 1, 6, 5), ys=None) it failed in the guide, earlier)",
        ],
    ),
    "the guide needs ys": (
        "loc, log_scale = self.encoder(xs).chunk(2, -1)",
        "loc, log_scale = self.encoder(xs + ys.sum()).chunk(2, -1)",
        [
            "the guide failed when called as guide(xs=(4, 1, 6, 5), ys=None)",
            "pyro_vae calls a program with ys=None unless the run observes something there "
            "(Pyro's convention: None means not observed); let the guide run with ys=None",
        ],
    ),
    "the model requires ys": (
        "def model(self, xs, ys=None):",
        "def model(self, xs, ys):",
        [
            "the model failed when called as model(xs=(4, 30) flattened, ys=None): ",
            "missing 1 required positional argument: 'ys'",
            "let the model run with ys=None",
        ],
    ),
}


@pytest.mark.parametrize("case", MISLEADING)
def test_a_failed_first_run_reports_the_attempt_that_got_furthest_and_what_it_passed(
    case, tmp_path
):
    old, new, parts = MISLEADING[case]
    assert old in TWO_ARGUMENTS
    config = Config(model=spec(tmp_path, TWO_ARGUMENTS.replace(old, new), "VAE"), z_dim=3)
    with pytest.raises(ModelFileError) as error:
        build(config, X_SHAPE)
    message = str(error.value)
    assert "\n" not in message
    for part in parts:
        assert part in message
    assert "(4, 1, 6, 5) (and on it flattened)" not in message


def test_the_two_argument_program_passes_once_its_bug_is_fixed(tmp_path):
    config = Config(model=spec(tmp_path, TWO_ARGUMENTS, "VAE"), z_dim=3)
    model, _ = build(config, X_SHAPE)
    assert model.structure.layout == "flat" and model.structure.y.kind == "none"


def test_setting_an_attribute_of_a_built_model_changes_the_model():
    """Tutorial 1 swaps the prior of a built VAE for a flat one (``model.prior = FlatPrior()``);
    the assignment landed on the door's wrapper and the model trained with its old prior."""
    import pyro.distributions as dist
    from pyro.infer import Trace_ELBO
    from pyro.nn import PyroModule, PyroParam
    from torch.distributions import constraints

    from pyro_vae.guides import DeltaGuide

    class ShiftedPrior(PyroModule):
        def __init__(self, z_dim):
            super().__init__()
            self.loc = PyroParam(torch.zeros(z_dim))
            self.calls = 0

        def forward(self, c=None):
            self.calls += 1
            return dist.Normal(self.loc, 1.0).to_event(1)

    data = tiny_data()
    model, guide = build(Config(z_dim=2, hidden_dims=(8,)), data.x_shape)
    prior = ShiftedPrior(2)
    model.prior = prior
    assert model.target.prior is prior and "prior" not in model._modules
    assert any(p is prior.loc for p in model.parameters())  # trained with the model
    before = prior.loc.detach().clone()
    fit(model, DeltaGuide(guide), data, Trace_ELBO(), epochs=2, batch_size=4, quiet=True)
    assert prior.calls > 0 and not torch.equal(prior.loc.detach(), before)
    model.z_scale = 0.5  # beta: the program's scale of every latent site, in both halves
    assert model.z_scale == guide.z_scale == model.program.latent_scale == 0.5
    assert model.target.z_scale == 1.0  # not also the built-in model's own: scaled once
    model.z_scale = 1.0

    class FlatPrior(PyroModule):
        def forward(self, c=None):
            return dist.ImproperUniform(constraints.real, (), (2,))

    model.prior = FlatPrior()
    x = data.train_x[:3]
    q = pyro.poutine.trace(DeltaGuide(guide)).get_trace(x)
    trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=q)).get_trace(x)
    assert isinstance(trace.nodes["z"]["fn"], dist.ImproperUniform)


@pytest.mark.parametrize(
    "spec, one_hot", [("ss_vae.py:make", True), ("ss_vae.py:make_indices", False)]
)
def test_a_run_with_labels_passes_them_in_the_class_sites_form(spec, one_hot):
    """With --labels the structure says y is partly observed: labelled images get their labels
    as the class site takes them (one-hot or indices), unlabelled ones ys=None; the run is not
    conditional (log p(x) sums the class out) and inspect says so."""
    from pyro_vae.program import describe

    config = Config(model=os.path.join(PROGRAMS, spec), labels=10, z_dim=3, hidden_dims=(16,))
    model, _ = build(config, X_SHAPE, train_size=48)
    y = model.structure.y
    assert y.partial and y.observed and y.one_hot == one_hot and y.site == "y"
    assert not model.structure.conditional
    labels = torch.tensor([3, 0])
    passed = y.passed(labels)
    expected = torch.nn.functional.one_hot(labels, 10).float() if one_hot else labels
    assert torch.equal(passed, expected) and y.passed(torch.tensor([-1, -1])) is None
    assert any(
        "passes the labelled images' labels, and y=None" in line
        for line in describe(model.structure)
    )


# -- a likelihood that reads x: a topic model of pixels, ProdLDA-style ------------------------


def topics_config(z_dim=3):
    return Config(
        model=os.path.join(PROGRAMS, "pixel_topics.py:make"), z_dim=z_dim, hidden_dims=(16,)
    )


def test_a_likelihood_that_reads_the_images_is_found_and_named():
    """The Multinomial's total_count comes from x: the door says so, and what log p(x) is."""
    from pyro_vae.program import describe, measures

    data = tiny_data()
    model, _ = build(topics_config(), X_SHAPE, x=data.test_x[:4], train_size=48)
    s = model.structure
    assert (s.image_dist, s.reads_x, s.discrete_images) == ("Multinomial", True, True)
    assert "Multinomial given their total" in measures(s)
    assert "reads the images beyond observing them" in describe(s)[0]
    vae, _ = build(Config(z_dim=3, hidden_dims=(16,)), X_SHAPE, x=data.test_x[:4])
    assert (vae.structure.image_dist, vae.structure.reads_x) == ("Bernoulli", False)
    assert measures(vae.structure) == "log p(x) of binary images"


def test_a_likelihood_that_reads_the_images_generates_from_real_ones():
    """Generation ran the model on zeros, so the Multinomial's total_count was 0 and every
    image blank. Given images it runs on each of them (each mean sums to that image's count,
    not the largest of the images passed with it); without them it is refused in one line; a
    model that does not read x ignores them."""
    from pyro_vae import program
    from pyro_vae.errors import DataError

    data = tiny_data()
    model, guide = build(topics_config(), X_SHAPE, x=data.test_x[:4], train_size=48)
    x = data.test_x[:5]
    counts = x.reshape(5, -1).sum(-1)
    assert counts.unique().numel() > 1
    for what in (
        lambda images: program.generate(model, 5, x=images),
        lambda images: program.decode(model, torch.randn(5, 3), x=images),
        lambda images: program.decode(model, program.site_values(guide, x), x=images),
    ):
        images = what(x)
        assert images.shape == (5, *X_SHAPE)
        assert_close(images.reshape(5, -1).sum(-1), counts)
        with pytest.raises(DataError, match="not defined for this program without images") as e:
            what(None)
        assert "\n" not in str(e.value)
    vae, _ = build(Config(z_dim=3, hidden_dims=(16,)), X_SHAPE, x=data.test_x[:4])
    z = torch.randn(5, 3)
    assert torch.equal(program.decode(vae, z, x=x), program.decode(vae, z))


def test_a_topic_model_of_pixels_trains_draws_and_names_its_score(tmp_path, capsys):
    """Through the command line on mnist-small: non-blank samples and reconstructions, a score
    named for the Multinomial; samples drawn given test images, as its samples.png."""
    import json

    from pyro_vae.data import load_dataset
    from pyro_vae.runs import load_run
    from tests.test_cli import TINY, assert_clean_error, cli

    out = str(tmp_path / "run")
    spec_ = os.path.join(PROGRAMS, "pixel_topics.py:make")
    result = cli(capsys, "train", *TINY, "--model", spec_, "--dataset", "mnist-small", "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert "Multinomial given their total" in metrics["measures"]
    assert metrics["measures"] in result.stdout
    assert {"samples.png", "reconstructions.png"} <= set(metrics["figures"])
    run = load_run(out)
    x = load_dataset("mnist-small", "static").test_x[:6]
    reconstructed = run.reconstruct(x)
    assert reconstructed.shape == x.shape
    assert_close(reconstructed.reshape(6, -1).sum(-1), x.reshape(6, -1).sum(-1))
    assert run.decode(torch.randn(6, 4), x=x).sum() > 0
    # pyro-vae sample draws given the first test images' counts, as the run's samples.png
    result = cli(capsys, "sample", out, "--n", "4", "--out", str(tmp_path / "s.png"))
    assert result.returncode == 0 and (tmp_path / "s.png").is_file(), result.stderr
    with pytest.raises(DataError, match="a sample from the prior is not defined"):
        run.sample(4)  # the Python API without images says why
    assert run.sample(4, x=x[:4]).reshape(4, -1).sum(-1).gt(0).all()
    result = cli(capsys, "sample", out, "--n", "20000", "--out", str(tmp_path / "t.png"))
    assert_clean_error(result, "ask for --n 1000 or fewer")
    result = cli(capsys, "evaluate", out, "-k", "5")
    assert result.returncode == 0 and "Multinomial given their total" in result.stdout


# -- conditions for any program: --condition quadrants:N and label ------------------------------

#: Image completion in each form the door takes it (pyro_vae.program.IMAGE_FORMS).
COMPLETIONS = {
    "Pyro's CVAE form": ("cvae_quadrants.py:CVAE", "split"),
    "pyro_vae's form": ("completion.py:make", "whole"),
}


@pytest.mark.parametrize("spec, form", COMPLETIONS.values(), ids=COMPLETIONS)
def test_a_completion_program_trains_scores_and_draws_in_either_form(spec, form, tmp_path, capsys):
    """--condition quadrants:1 for a model file: trained one epoch on mnist-small, scored by
    log p(hidden | observed) beside the baseline, its inpainting drawn, completions sampled."""
    import json

    from pyro_vae.data import load_dataset
    from pyro_vae.runs import load_run
    from tests.test_cli import TINY, cli

    out = str(tmp_path / "run")
    spec = os.path.join(PROGRAMS, spec)
    result = cli(
        capsys, "train", *TINY, "--model", spec, "--condition", "quadrants:1", "--out", out
    )
    assert result.returncode == 0, result.stderr
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["measures"] == "log p(hidden quadrants | observed quadrants), binary pixels"
    # 588 hidden pixels: a coin per pixel scores 588 log 1/2 = -407.6
    for key in ("test_elbo", "test_log_px", "baseline_test_log_px"):
        assert -500 < metrics[key] < 0, key
    assert metrics["test_log_px"] > metrics["test_elbo"] - 1
    assert "inpainting.png" in metrics["figures"]
    assert os.path.getsize(os.path.join(out, "inpainting.png")) > 1000
    run = load_run(out)
    assert run.conditioned_on == "image" and run.structure.y.form == form
    x = load_dataset("mnist-small", "static").test_x[:5]
    hidden = run.structure.hidden
    first, second = run.sample(5, seed=0, y=x), run.sample(5, seed=1, y=x)
    assert first.shape == x.shape and not torch.equal(first[:, hidden], second[:, hidden])
    assert ((first >= 0) & (first <= 1)).all()
    assert torch.isfinite(run.log_px(x, num_samples=3)).all()


def _split(x, given):
    """Pyro's CVAE example's inputs, made by hand: xs with the hidden pixels -1, ys with the
    observed ones -1."""
    xs, ys = x.clone(), x.clone()
    xs[:, ~given] = -1
    ys[:, given] = -1
    return xs, ys


def _cvae(name, condition):
    """A small program of tests/programs/cvae_quadrants.py through the door, for 28 x 28 images."""
    config = Config(
        model=os.path.join(PROGRAMS, f"cvae_quadrants.py:{name}"),
        z_dim=3,
        hidden_dims=(16,),
        condition=condition,
    )
    return build(config, (1, 28, 28))


def test_a_program_in_pyro_s_cvae_form_is_called_as_pyro_calls_it():
    """The run's ELBO of each image is the program's own, Pyro's Trace_ELBO on the xs and ys
    its example makes, draw for draw."""
    from pyro.infer import Trace_ELBO

    model, guide = _cvae("CVAE", "quadrants:2")
    assert model.structure.gathered and model.structure.image == "y"
    x = torch.bernoulli(torch.full((6, 1, 28, 28), 0.3))
    xs, ys = _split(x, model.structure.y.given)
    cvae = model.target
    with model.program.scope:
        pyro.set_rng_seed(0)
        own = -Trace_ELBO(num_particles=10).loss(cvae.model, cvae.guide, xs, ys) / len(x)
    pyro.set_rng_seed(0)
    assert_close(evaluate.elbo(model, guide, x, x, num_samples=10).mean(), own, rtol=1e-5)


def test_a_guide_equal_to_the_prior_bounds_log_p_hidden_by_its_elbo():
    """q = p(z | observed): no KL, and the importance-sampled log p(hidden | observed) of the
    same draws lies above their ELBO (Jensen)."""
    from pyro_vae import program

    model, guide = _cvae("PriorGuide", "quadrants:1")
    x = torch.bernoulli(torch.full((6, 1, 28, 28), 0.3))
    assert_close(program.kl_to_prior(model, guide, x, x), torch.zeros(6))
    pyro.set_rng_seed(0)
    elbo = evaluate.elbo(model, guide, x, x, num_samples=50)
    pyro.set_rng_seed(0)
    log_px = evaluate.log_px(model, guide, x, x, num_samples=50)
    assert (log_px >= elbo).all() and (log_px - elbo < 10).all()


def test_pyro_vae_s_form_is_scored_at_the_hidden_pixels_alone():
    """A program that observes every pixel of x is scored at the hidden ones: its observed
    pixels change nothing, its hidden ones do."""
    from pyro_vae import program

    config = Config(
        model=os.path.join(PROGRAMS, "completion.py:make"),
        z_dim=3,
        hidden_dims=(16,),
        condition="quadrants:1",
    )
    model, _ = build(config, (1, 28, 28))
    given = model.structure.y.given
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.3))
    z = {"z": torch.randn(4, 3)}
    at = program.log_likelihood_at(model, z, x, x)
    assert_close(program.log_likelihood_at(model, z, torch.where(given, 1 - x, x), x), at)
    assert not torch.allclose(
        program.log_likelihood_at(model, z, torch.where(given, x, 1 - x), x), at
    )


@pytest.mark.parametrize(
    "spec, condition, message",
    [
        ("unused_ys.py:VAE", "quadrants:1", "this program does not read it"),
        ("sizeless_plate.py", "quadrants:1", "this program reads no second argument"),
        ("completion.py:make_peeking", "quadrants:1", "reads the hidden pixels of y"),
        ("unused_ys.py:VAE", "label", "--condition label conditions each image on its class"),
    ],
    ids=["ys unused", "no ys", "reads what it completes", "label, ys unused"],
)
def test_a_program_that_reads_no_condition_is_refused_with_the_fix(
    spec, condition, message, tmp_path, capsys
):
    from tests.test_cli import TINY, assert_clean_error, cli

    spec = os.path.join(PROGRAMS, spec)
    args = ["--model", spec, "--condition", condition, "--out", str(tmp_path / "run")]
    result = cli(capsys, "train", *TINY, *args)
    assert_clean_error(result, message)
    if condition != "label":
        assert "model(x, y)" in result.stderr and "Pyro's CVAE form" in result.stderr


def test_a_label_condition_reaches_a_program_s_class_site_and_is_given_not_scored(tmp_path, capsys):
    """--condition label for a program that observes one-hot ys at a class site: the labels
    are passed one-hot, the class site is given (log p(x | y), not log p(x, y)), and the run
    samples per class."""
    import json

    from pyro import poutine

    from pyro_vae.runs import load_run
    from tests.test_cli import TINY, cli

    out = str(tmp_path / "run")
    spec = os.path.join(PROGRAMS, "ss_vae.py:make")
    result = cli(capsys, "train", *TINY, "--model", spec, "--condition", "label", "--out", out)
    assert result.returncode == 0, result.stderr
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["measures"] == "log p(x | label)" and -800 < metrics["test_log_px"] < 0
    run = load_run(out)
    assert run.conditioned_on == "label" and run.structure.y.one_hot
    x, labels = torch.bernoulli(torch.full((3, 1, 28, 28), 0.3)), torch.tensor([0, 4, 9])
    site = poutine.trace(run.model).get_trace(x, labels).nodes[run.structure.y.site]
    assert torch.equal(site["value"].argmax(-1), labels)
    assert (site["fn"].log_prob(site["value"]) == 0).all()
    assert run.sample(3, seed=0, y=labels).shape == (3, 1, 28, 28)
