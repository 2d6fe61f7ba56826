"""Guide families (pyro_vae.families): each q is a normalized density, fullcov reaches the exact
posterior of a linear-Gaussian model where diag stops at its closed-form gap, guides of every
family resume exactly and work on a plain Pyro model file."""

import io
import json
import math
import os

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

from pyro_vae import evaluate
from pyro_vae.compare import compare, family_table, markdown, write_comparison
from pyro_vae.config import Config, build
from pyro_vae.data import Data, load_dataset
from pyro_vae.errors import ConfigError
from pyro_vae.families import FAMILIES, families_help, make_family
from pyro_vae.guides import AmortizedGuide, FamilyGuide, LocalGuide
from pyro_vae.inference import REFINE_LR, e_step
from pyro_vae.train import fit
from tests.conftest import assert_close
from tests.linear_gaussian import LinearGaussian
from tests.test_cli import assert_clean_error, cli, pyro_vae
from tests.test_cli_resume import kill_when_paused

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYRO_STYLE = os.path.join(ROOT, "examples", "pyro_style_vae.py") + ":VAE"


@pytest.fixture(scope="module")
def mnist_small():
    return load_dataset("mnist-small", binarize="dynamic")


def _tiny(data, n=250):
    return Data(
        "tiny", "dynamic", data.train_x[:n], data.train_y[:n], data.test_x[:32], data.test_y[:32]
    )


def _shaken(module, seed=0, size=0.1):
    """``module`` with every parameter moved off its initial value (families start as diag)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(size * torch.randn(p.shape, generator=g))
    return module


def _quadrature(fn, lim=8.0, points=400):
    """The integral of ``exp(fn.log_prob)`` over ``[-lim, lim]^2``, per batch element."""
    h = 2 * lim / points
    axis = torch.linspace(-lim + h / 2, lim - h / 2, points)
    z = torch.cartesian_prod(axis, axis)  # (P*P, 2)
    batch = fn.batch_shape
    # the flow's context has the batch shape, so the points are expanded to it
    lp = fn.log_prob(z.reshape(-1, *([1] * len(batch)), 2).expand(-1, *batch, 2))
    return (torch.logsumexp(lp, 0) + 2 * math.log(h)).exp()


def test_the_registry_names_every_family_once_with_a_description():
    assert list(FAMILIES) == ["diag", "fullcov", "flow"]
    for name, family in FAMILIES.items():
        assert family.name == name and family.description in families_help()
    with pytest.raises(ConfigError, match="unknown guide family 'iaf'; choose one of diag"):
        make_family("iaf", 2)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_per_image_is_a_normalized_density_in_2d(family):
    q = _shaken(LocalGuide(3, 2, family=family, flow_layers=2), seed=1)
    fn = q.site_dists(torch.zeros(3, 2))["z"]
    assert_close(_quadrature(fn), torch.ones(3), atol=2e-3, msg=family)


@pytest.mark.parametrize("family", ["fullcov", "flow"])
def test_every_family_amortized_is_a_normalized_density_in_2d(family):
    pyro.set_rng_seed(0)
    model, guide = build(Config(z_dim=2, hidden_dims=(16,), guide_family=family), (1, 28, 28))
    assert isinstance(guide, FamilyGuide)
    _shaken(guide.families, seed=2)
    x = torch.bernoulli(torch.full((3, 1, 28, 28), 0.5))
    fn = guide.z_dist(x)
    assert_close(_quadrature(fn), torch.ones(3), atol=2e-3, msg=family)


@pytest.mark.parametrize("family", ["fullcov", "flow"])
def test_a_family_starts_as_the_diagonal_gaussian_and_its_e_step_starts_at_its_q(family):
    pyro.set_rng_seed(0)
    model, diag = build(Config(z_dim=3, hidden_dims=(16,)), (1, 28, 28))
    wrapped = FamilyGuide(diag, family)
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.5))
    z = torch.randn(4, 3)
    assert_close(wrapped.z_dist(x).log_prob(z), diag.z_dist(x).log_prob(z), atol=1e-5)
    _shaken(wrapped.families, seed=3)
    local = LocalGuide.from_guide(wrapped, x, family=family)
    assert_close(
        local.site_dists(x)["z"].log_prob(z), wrapped.z_dist(x).log_prob(z), atol=1e-5, msg=family
    )


@pytest.mark.parametrize("source, family", [("fullcov", "flow"), ("fullcov", "diag")])
def test_a_per_image_family_starts_at_the_q_of_an_encoder_whose_family_it_contains(source, family):
    pyro.set_rng_seed(0)
    model, diag = build(Config(z_dim=3, hidden_dims=(16,)), (1, 28, 28))
    wrapped = _shaken(FamilyGuide(diag, source), seed=3)
    x = torch.bernoulli(torch.full((4, 1, 28, 28), 0.5))
    z = torch.randn(4, 3)
    local = LocalGuide.from_guide(wrapped, x, family=family)
    ours, theirs = local.site_dists(x)["z"].log_prob(z), wrapped.z_dist(x).log_prob(z)
    if family == "flow":  # the per-image flow holds every full-covariance q
        assert_close(ours, theirs, atol=1e-5)
    else:  # the diagonal family does not: it starts at the marginal means and sds
        assert (ours - theirs).abs().max() > 1e-3
        q = wrapped.z_dist(x)
        assert_close(local.z_dist(x).base_dist.scale, q.stddev, atol=1e-5)


def _correlated_linear_gaussian():
    """A linear-Gaussian model whose posterior correlation is about -0.89."""
    model = LinearGaussian(x_dim=3, z_dim=2, sigma=0.5)
    model.W = torch.tensor([[1.0, 1.0], [1.0, 0.8], [0.5, 0.6]])
    x = model.x_dist(model.z_dist().sample((20,))).sample()
    return model, x


def test_fullcov_q_star_reaches_the_exact_posterior_where_diag_keeps_its_closed_form_gap():
    """The best diagonal Gaussian under KL(q || p) of a 2-D Gaussian posterior with correlation rho
    has precisions equal to the posterior's diagonal precisions, so its gap is
    -log(1 - rho^2) / 2, whatever the image; a full covariance has gap 0."""
    model, x = _correlated_linear_gaussian()
    exact = model.exact_log_px(x)
    loc, cov = model.exact_posterior(x)
    rho = cov[0, 1] / cov.diag().prod().sqrt()
    assert rho.abs() > 0.8
    gaps = {}
    for family in ("diag", "fullcov"):
        q = LocalGuide(len(x), 2, family=family)
        e_step(model, q, x, steps=1000, lr=0.1)
        pyro.set_rng_seed(0)
        gap = exact - evaluate.elbo(model, q, x, num_samples=5000)
        gaps[family] = (gap.mean().item(), (gap.std() / len(x) ** 0.5).item())
        if family == "fullcov":
            fn = q.site_dists(x)["z"]
            # q* is the exact posterior: KL(q* || p(z|x)) in closed form, per image
            kl = torch.distributions.kl_divergence(fn, dist.MultivariateNormal(loc, cov))
            assert kl.mean() < 0.02 and kl.max() < 0.05, kl
            # importance sampling with fullcov's q* as the proposal gives the exact log p(x)
            pyro.set_rng_seed(0)
            assert_close(evaluate.log_px(model, q, x, num_samples=2000), exact, atol=0.01)
    theory = -0.5 * math.log(1 - rho.item() ** 2)
    mean, stderr = gaps["diag"]
    assert abs(mean - theory) < 0.03 + 3 * stderr, (gaps, theory)
    mean, stderr = gaps["fullcov"]
    assert abs(mean) < 0.02 + 3 * stderr, gaps


def test_a_flow_q_star_closes_most_of_the_diagonal_gap_on_a_correlated_posterior():
    model, x = _correlated_linear_gaussian()
    exact = model.exact_log_px(x)
    q = LocalGuide(len(x), 2, family="flow")
    e_step(model, q, x, steps=1000, lr=0.1)
    pyro.set_rng_seed(0)
    gap = (exact - evaluate.elbo(model, q, x, num_samples=5000)).mean().item()
    assert -0.02 < gap < 0.1  # the diagonal family's gap here is 0.77


def test_a_per_image_fullcov_e_step_at_the_default_rate_holds_on_a_50d_posterior_of_small_scales():
    """Posterior scales of 0.05 to 0.09 over 50 numbers (1,225 correlations), E-steps from the
    exact posterior's marginal moments at the default rate: fullcov's q* must improve on its
    start and end well inside the diagonal q*'s gap. (With L the free numbers themselves, not
    scaled by D ** -0.5, this E-step's ELBO became -inf within three steps.)"""
    torch.manual_seed(0)
    model = LinearGaussian(x_dim=100, z_dim=50, sigma=0.5)
    x = model.x_dist(model.z_dist().sample((10,))).sample()
    exact = model.exact_log_px(x)
    loc, cov = model.exact_posterior(x)
    assert cov.diag().sqrt().max() < 0.1
    gaps = {}
    for family in ("diag", "fullcov"):
        q = LocalGuide(len(x), 50, loc=loc, scale=cov.diag().sqrt().expand_as(loc), family=family)
        pyro.set_rng_seed(0)
        start = (exact - evaluate.elbo(model, q, x, num_samples=500)).mean().item()
        e_step(model, q, x, steps=300, lr=REFINE_LR, seed=0)
        pyro.set_rng_seed(0)
        gaps[family] = (exact - evaluate.elbo(model, q, x, num_samples=500)).mean().item()
        assert gaps[family] < start, (family, start, gaps)
    assert gaps["fullcov"] < 0.5 * gaps["diag"], gaps


def _round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("model_name", ["vae", PYRO_STYLE])
@pytest.mark.parametrize("family", ["fullcov", "flow"])
def test_every_family_resumes_from_any_checkpoint_bit_for_bit(mnist_small, family, model_name):
    small = _tiny(mnist_small)
    config = Config(z_dim=4, hidden_dims=(32,), guide_family=family, model=model_name)
    pyro.set_rng_seed(7)
    model, guide = build(config, small.x_shape)
    states = []
    history = fit(
        model,
        guide,
        small,
        epochs=2,
        batch_size=64,
        quiet=True,
        seed=7,
        checkpoint=lambda s: states.append(_round_trip(s)),
        checkpoint_every=3,
    )
    expected = {**model.state_dict(), **guide.state_dict()}
    assert any(k.startswith("families.") for k in guide.state_dict())
    for state in states[:2]:
        pyro.set_rng_seed(123)
        model2, guide2 = build(config, small.x_shape)
        history2 = fit(
            model2, guide2, small, epochs=2, batch_size=64, quiet=True, seed=99, resume_from=state
        )
        resumed = {**model2.state_dict(), **guide2.state_dict()}
        for name, value in expected.items():
            assert torch.equal(resumed[name], value), (state["epoch"], state["step"], name)
        assert history2.train_elbo == history.train_elbo


MODEL_ONLY = """
import pyro, pyro.distributions as dist, torch
from torch import nn

decoder = nn.Linear(2, 784)

def model(x):
    pyro.module("decoder", decoder)
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=x.reshape(-1, 784))
"""


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_model_file_without_a_guide_gets_a_per_image_guide_of_the_family(
    family, mnist_small, tmp_path
):
    path = tmp_path / "model_only.py"
    path.write_text(MODEL_ONLY)
    small = _tiny(mnist_small, 64)
    config = Config(guide_family=family, model=str(path))
    model, guide = build(config, small.x_shape, train_size=64)
    assert isinstance(guide, LocalGuide) and guide.family == family
    history = fit(model, guide, small, epochs=2, batch_size=32, lr=0.03, quiet=True)
    assert all(math.isfinite(v) for v in history.train_elbo + history.test_elbo[-1:])


def test_config_refuses_an_unknown_family_and_bad_flow_layers():
    with pytest.raises(ConfigError, match="unknown guide_family 'iaf'"):
        Config(guide_family="iaf")
    with pytest.raises(ConfigError, match="flow_layers must be a positive integer"):
        Config(guide_family="flow", flow_layers=0)


class ExactMeanEncoder(nn.Module):
    """The exact posterior mean with the posterior's marginal sds: a diagonal amortized guide."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.shift = nn.Parameter(torch.zeros(2))

    def forward(self, x, c=None):
        loc, cov = self.model.exact_posterior(x)
        return loc + self.shift, cov.diag().sqrt().expand_as(loc)


@pytest.fixture(scope="module")
def family_comparison(tmp_path_factory):
    pyro.set_rng_seed(0)
    model, _ = _correlated_linear_gaussian()
    train, test = model(size=40).detach(), model(size=40).detach()
    labels = torch.zeros(40, dtype=torch.long)
    data = Data("linear-gaussian", "none", train, labels, test, labels)
    result = compare(
        model,
        AmortizedGuide(ExactMeanEncoder(model)),
        data,
        strategies=("amortized", "local"),
        num_images=40,
        e_steps=400,
        elbo_samples=500,
        log_px_samples=500,
        grid_points=200,
        grid_lim=6.0,
    )
    out = tmp_path_factory.mktemp("compare")
    write_comparison(result, str(out))
    return model, test, result, out


def test_compare_splits_the_approximation_gap_by_family_against_the_exact_grid(family_comparison):
    model, test, result, out = family_comparison
    fam = result["families"]
    assert fam["log_px_source"] == "exact (grid quadrature)"
    assert_close(fam["log_px"][0], model.exact_log_px(test).mean(), atol=1e-3)
    rows = {r["family"]: r for r in fam["rows"]}
    assert list(rows) == ["diag", "fullcov", "flow"] and rows["diag"]["encoder"]
    loc, cov = model.exact_posterior(test)
    rho = (cov[0, 1] / cov.diag().prod().sqrt()).item()
    diag, se = rows["diag"]["approximation_gap"]
    assert abs(diag - (-0.5 * math.log(1 - rho**2))) < 0.03 + 3 * se
    full, se_full = rows["fullcov"]["approximation_gap"]
    assert abs(full) < 0.02 + 3 * se_full
    flow, se_flow = rows["flow"]["approximation_gap"]
    assert flow + se_flow < diag - se  # non-overlapping standard errors
    closed, _ = rows["fullcov"]["recovered_from_diag"]
    assert_close(closed, diag - full, atol=1e-4)
    # the encoder's q* is diag's, so the usual gaps are diag's
    assert_close(result["gaps"]["approximation_gap"], diag, atol=1e-6)
    text = markdown(result)
    assert "## Gaps by guide family" in text and "q*_flow" in text and "fullcov closes" in text
    assert os.path.getsize(os.path.join(out, "posteriors.png")) > 0
    saved = json.load(open(os.path.join(out, "comparison.json")))
    assert [r["family"] for r in saved["families"]["rows"]] == ["diag", "fullcov", "flow"]


def test_family_table_has_cremer_et_al_s_layout(family_comparison):
    _, _, result, _ = family_comparison
    lines = family_table({"diag": result, "flow": result})
    assert lines[0].startswith(
        "| trained with | log p(x) | L[q*_flow] | L[q*_fullcov] | L[q*_diag] | L[q] |"
    )
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["diag", "flow"]


def test_compare_refuses_an_unknown_family():
    with pytest.raises(ConfigError, match="unknown guide family 'iaf'"):
        compare(*_tiny_compare_args(), families=["iaf"])


def _tiny_compare_args():
    model, _ = _correlated_linear_gaussian()
    x = model(size=4).detach()
    labels = torch.zeros(4, dtype=torch.long)
    data = Data("linear-gaussian", "none", x, labels, x, labels)
    return model, AmortizedGuide(ExactMeanEncoder(model)), data


# -- the command line: every family trains, resumes, evaluates and compares on a user's file ---

FILE_SETTINGS = ["--model", PYRO_STYLE, "--z-dim", "2", "--hidden-dims", "16", "--epochs", "1"]
FILE_SETTINGS += ["--batch-size", "500", "--log-px-samples", "10", "--quiet"]
COMPARE_SETTINGS = ["--num-images", "8", "--e-steps", "10", "--elbo-samples", "4"]
COMPARE_SETTINGS += ["--log-px-samples", "10", "--strategies", "amortized,local"]
COMPARE_SETTINGS += ["--grid-points", "40"]


def test_every_family_trains_and_compares_on_a_model_file_from_the_command_line(capsys, tmp_path):
    out = str(tmp_path / "families")
    result = cli(
        capsys,
        "compare",
        *FILE_SETTINGS,
        *COMPARE_SETTINGS,
        "--train-families",
        "diag,fullcov,flow",
        "--time-limit",
        "600",
        "--out",
        out,
    )
    assert result.returncode == 0, result.stderr
    table = open(os.path.join(out, "families.md")).read()
    assert "each family trained within 600 s" in table  # the same budget for every family
    for family in FAMILIES:
        assert f"| {family} |" in table
        run = os.path.join(out, f"run-{family}")
        config = json.load(open(os.path.join(run, "config.json")))
        assert (config["guide_family"], config["time_limit"]) == (family, 600)
        assert os.path.exists(os.path.join(out, f"compare-{family}", "posteriors.png"))
        assert cli(capsys, "evaluate", run, "--num-samples", "10", "--quiet").returncode == 0
    result = cli(capsys, "evaluate", run, "--num-samples", "10", "--on-train", "50", "--quiet")
    assert result.returncode == 0 and "first 50 training images, 50 images" in result.stdout
    saved = json.load(open(os.path.join(out, "families.json")))
    assert set(saved["gaps"]) == set(FAMILIES)


@pytest.mark.parametrize("family", [pytest.param("fullcov", marks=pytest.mark.slow), "flow"])
def test_a_run_of_each_family_killed_and_resumed_is_the_run_never_interrupted(tmp_path, family):
    settings = [*FILE_SETTINGS, "--epochs", "2", "--guide-family", family, "--seed", "3"]
    options = ["--checkpoint-every", "3"]
    reference, run = str(tmp_path / "reference"), str(tmp_path / "run")
    result = pyro_vae("train", *settings, *options, "--out", reference)
    assert result.returncode == 0, result.stderr
    # killed while writing its second checkpoint: the first, at epoch 1 step 3, stays
    kill_when_paused(["train", *settings, *options, "--out", run], "checkpoint.pt:2")
    result = pyro_vae("train", "--resume", run, "--quiet")
    assert result.returncode == 0, result.stderr
    ours = torch.load(os.path.join(run, "checkpoint.pt"), weights_only=True)
    theirs = torch.load(os.path.join(reference, "checkpoint.pt"), weights_only=True)
    assert any(name.startswith("families.") for name in theirs["guide"])
    for part in ("model", "guide"):
        assert ours[part].keys() == theirs[part].keys()
        for name, value in theirs[part].items():
            assert torch.equal(ours[part][name], value), (part, name)
    metrics = [json.load(open(os.path.join(r, "metrics.json"))) for r in (run, reference)]
    assert metrics[0]["test_log_px"] == metrics[1]["test_log_px"]


def test_bad_family_options_are_one_line_errors(capsys, tmp_path):
    result = cli(capsys, "train", "--guide-family", "iaf", "--out", str(tmp_path / "r"))
    assert result.returncode != 0 and "invalid choice: 'iaf'" in result.stderr
    result = cli(capsys, "compare", "--train-families", "diag,iaf")
    assert result.returncode != 0 and "expected comma-separated names" in result.stderr
    result = cli(capsys, "compare", "--train-families", "diag", "--run", str(tmp_path))
    assert_clean_error(result, "--train-families trains one model per family itself")
    assert not os.path.exists(tmp_path / "r")


def test_the_per_image_flow_holds_the_per_image_full_covariance_gaussian():
    """Per image, the flow's Gaussian has a free lower triangle too: with the flow at the
    identity (its start) it is exactly the fullcov q with the same numbers."""
    full = _shaken(LocalGuide(3, 2, family="fullcov"), seed=4)
    flow = LocalGuide(3, 2, family="flow")
    with torch.no_grad():
        flow.locs["0"].copy_(full.locs["0"])
        flow.log_scales["0"].copy_(full.log_scales["0"])
        flow.extras["0"][:, :1] = full.extras["0"]
    z = torch.randn(5, 3, 2)
    x = torch.zeros(3, 2)
    expected = full.site_dists(x)["z"].log_prob(z)
    assert_close(flow.site_dists(x)["z"].log_prob(z), expected, atol=1e-5)


def test_the_guide_page_lists_every_family_as_the_registry_describes_it():
    with open(os.path.join(ROOT, "docs", "guide", "compare.md")) as f:
        page = f.read()
    for family in FAMILIES.values():
        assert f"| `{family.name}` | {family.description} |" in page


@pytest.mark.parametrize("per_image", [False, True])
def test_full_covariance_over_one_number_is_the_diagonal_gaussian(per_image):
    """A site of one number has no correlations: fullcov is then the diagonal family (the
    hierarchical model's top layer z1 of one number, compared per image, crashed on it)."""
    family = make_family("fullcov", 1, per_image=per_image)
    loc, log_scale = torch.tensor([[0.3], [-1.0]]), torch.tensor([[0.2], [-0.5]])
    q = family.dist(loc, log_scale, None)
    value = torch.tensor([[1.0], [0.5]])
    assert_close(q.log_prob(value), dist.Normal(loc, log_scale.exp()).to_event(1).log_prob(value))
