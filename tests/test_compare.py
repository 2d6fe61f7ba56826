import json
import os

import pytest
import torch
from torch import nn

from pyro_vae.compare import STRATEGIES, compare, markdown, write_comparison
from pyro_vae.data import Data
from pyro_vae.errors import ConfigError
from pyro_vae.guides import AmortizedGuide
from tests.linear_gaussian import LinearGaussian, plain_functions


class ShiftedEncoder(nn.Module):
    """The exact posterior mean, shifted, with a too-wide scale: an imperfect amortized guide."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.shift = nn.Parameter(torch.tensor([0.3, -0.2]))

    def forward(self, x, c=None):
        loc, cov = self.model.exact_posterior(x)
        return loc + self.shift, (1.5 * cov.diag().sqrt()).expand_as(loc)


@pytest.fixture(scope="module")
def comparison():
    model = LinearGaussian(x_dim=5, z_dim=2, sigma=0.5)
    torch.manual_seed(0)
    train, test = model(size=60).detach(), model(size=60).detach()
    labels = torch.zeros(60, dtype=torch.long)
    data = Data("linear-gaussian", "none", train, labels, test, labels)
    result = compare(
        model,
        AmortizedGuide(ShiftedEncoder(model)),
        data,
        num_images=60,
        e_steps=200,
        refine_steps=0,
        elbo_samples=200,
        log_px_samples=2000,
        mcmc_images=2,
        mcmc_samples=150,
        mcmc_warmup=100,
        grid_points=120,
        grid_lim=6.0,
    )
    return model, test, result


def test_gaps_are_non_negative_and_measured_against_the_truth(comparison):
    model, test, result = comparison
    gaps = result["gaps"]
    assert gaps["log_px"] == "exact (grid quadrature)" and gaps["images"] == 60
    # q* cannot beat log p(x), and the E-step's optimum cannot lose to a shifted encoder.
    assert gaps["approximation_gap"] > -3 * gaps["approximation_gap_stderr"] - 1e-3
    assert gaps["amortization_gap"] > 3 * gaps["amortization_gap_stderr"]
    assert result["grid"]["lim"] == 6.0
    assert abs(result["grid"]["test_log_px"] - model.exact_log_px(test).mean().item()) < 1e-3
    # The posterior is correlated, so the best diagonal Gaussian leaves the gap KL(q*||p), in
    # closed form 0.5 * (sum log diag(P) + log det C) for posterior covariance C and precision P.
    _, cov = model.exact_posterior(test)
    exact_gap = 0.5 * (torch.linalg.inv(cov).diag().log().sum() + torch.logdet(cov)).item()
    assert exact_gap > 0.003
    assert gaps["approximation_gap"] == pytest.approx(
        exact_gap, abs=3 * gaps["approximation_gap_stderr"] + 2e-3
    )


def test_every_strategy_has_a_row_and_semi_amortized_k0_is_amortized(comparison):
    _, _, result = comparison
    rows = {r["strategy"]: r for r in result["rows"]}
    assert list(rows) == [s for s in STRATEGIES if s != "mcmc"]
    assert rows["semi-amortized"]["test_elbo"] == pytest.approx(rows["amortized"]["test_elbo"])
    assert rows["delta"]["test_log_px"] is None
    assert rows["local"]["parameters"] == 2 * 60 * 2 and rows["delta"]["parameters"] == 60 * 2
    for row in rows.values():
        assert row["test_seconds_per_image"] > 0
    # Importance sampling with q* as proposal agrees with the grid.
    mean, stderr = result["grid"]["is_minus_grid_local"]
    assert abs(mean) < 0.02 + 3 * stderr


def test_nuts_is_the_reference_the_variational_guides_are_held_against(comparison):
    _, _, result = comparison
    mcmc = result["mcmc"]
    assert mcmc["images"] == 2 and len(mcmc["mean"]) == 2
    assert mcmc["grid_vs_mcmc"]["mean_error_in_sds"] < 0.4
    assert abs(mcmc["grid_vs_mcmc"]["std_ratio"] - 1) < 0.3
    local, amortized = mcmc["strategies"]["local"], mcmc["strategies"]["amortized"]
    assert local["mean_error_in_sds"] < amortized["mean_error_in_sds"]
    assert mcmc["strategies"]["delta"]["std_ratio"] == 0


def test_written_report(comparison, tmp_path):
    _, _, result = comparison
    write_comparison(result, str(tmp_path))
    names = set(os.listdir(tmp_path))
    assert {"comparison.json", "comparison.md", "strategies.png", "e-step.png"} <= names
    assert "posteriors.png" in names
    saved = json.load(open(tmp_path / "comparison.json"))
    assert saved["gaps"]["amortization_gap"] == pytest.approx(result["gaps"]["amortization_gap"])
    assert not any(k.startswith("_") for k in saved)
    text = markdown(result)
    assert "| local |" in text and "amortization: L[q*] − L[q_amortized]" in text
    assert text.count("delta's ELBO column") == 1  # each note once
    assert "Against NUTS" not in text  # NUTS is a row of the one table, not a section of its own
    table = [line for line in text.splitlines() if line.startswith("| ")]
    nuts = [line for line in table if line.startswith("| mcmc (NUTS) |")]
    assert len(nuts) == 1 and nuts[0].count("|") == table[0].count("|")
    assert "samples, not a density, so it has no ELBO" in text


def test_report_explains_delta_only_when_delta_was_compared(comparison):
    _, _, result = comparison
    without = dict(result, rows=[r for r in result["rows"] if r["strategy"] != "delta"])
    assert "delta's ELBO column" not in markdown(without)


def test_plain_pyro_functions_are_compared_against_their_exact_log_px():
    """A program with its own site and plate names, no optional methods, pyro.param parameters:
    every strategy runs, and the grid's log p(x) is the closed form."""
    truth, model, guide = plain_functions()
    torch.manual_seed(0)
    train, test = truth(size=30).detach(), truth(size=30).detach()
    labels = torch.zeros(30, dtype=torch.long)
    data = Data("linear-gaussian", "none", train, labels, test, labels)
    result = compare(
        model,
        guide,
        data,
        strategies=("amortized", "local", "semi-amortized", "delta", "mcmc"),
        num_images=30,
        e_steps=150,
        refine_steps=5,
        elbo_samples=100,
        log_px_samples=500,
        mcmc_images=2,
        mcmc_samples=60,
        mcmc_warmup=60,
        grid_points=100,
        grid_lim=6.0,
    )
    exact = truth.exact_log_px(test).mean().item()
    assert abs(result["grid"]["test_log_px"] - exact) < 1e-2
    rows = {r["strategy"]: r for r in result["rows"]}
    assert set(rows) == {"amortized", "local", "semi-amortized", "delta"}
    # the local E-step comes close to the exact log p(x) as an importance-sampling proposal
    assert abs(rows["local"]["test_log_px"] - exact) < 0.05
    assert rows["local"]["test_elbo"] <= exact + 1e-3
    assert result["mcmc"]["moved"]


def test_unknown_strategy_is_refused():
    with pytest.raises(ConfigError, match="unknown strategies gibbs"):
        compare(None, None, None, strategies=["gibbs"])


def test_q_star_starts_from_the_encoder_so_too_few_steps_from_the_prior_do_not_flip_the_gap():
    """With 2 E-steps the local guide is still near the prior, worse than the encoder; q* starts
    from the encoder's q and improves on it, so the amortization gap stays positive."""
    model = LinearGaussian(x_dim=5, z_dim=2, sigma=0.5)
    torch.manual_seed(1)
    train, test = model(size=40).detach(), model(size=40).detach()
    labels = torch.zeros(40, dtype=torch.long)
    result = compare(
        model,
        AmortizedGuide(ShiftedEncoder(model)),
        Data("linear-gaussian", "none", train, labels, test, labels),
        strategies=("amortized", "local"),
        num_images=40,
        e_steps=2,
        elbo_samples=200,
        log_px_samples=500,
        grid_points=60,
    )
    rows = {r["strategy"]: r for r in result["rows"]}
    gaps = result["gaps"]
    assert rows["local"]["test_elbo"] < rows["amortized"]["test_elbo"]
    assert gaps["q_star_test_elbo"][0] > rows["amortized"]["test_elbo"]
    assert gaps["amortization_gap"] > 3 * gaps["amortization_gap_stderr"]
    assert "E-steps started from the encoder's q" in markdown(result)


def test_the_exact_grid_widens_until_it_holds_every_posterior():
    from pyro_vae.compare import EDGE_MASS, holding_grid

    model = LinearGaussian(x_dim=5, z_dim=2, sigma=0.5)
    with torch.no_grad():
        x = model.x_dist(torch.tensor([[2.5, -2.5], [0.0, 0.0]])).mean
    grid, lim, points = holding_grid(model, x, lim=2.0, points=40)
    assert lim == 4.5 and points == 90  # 2 -> 3 -> 4.5, at the same spacing
    assert grid.edge_mass.max() <= EDGE_MASS
    assert grid.log_px == pytest.approx(model.exact_log_px(x), abs=1e-3)
