"""Discrete latent sites: enumeration against brute force, the estimators' gradients, the door.

The reference model is a 3-class mixture of linear-Gaussian models, whose marginal is known::

    y ~ OneHotCategorical(pi)            # the class, 3 values
    z ~ Normal(0, I)                     # z_dim 2
    x ~ Normal(W z + B[y], sigma^2 I)    # x_dim 2

    p(x | y) = Normal(B[y], W W^T + sigma^2 I),   log p(x) = log sum_y pi_y p(x | y)
    p(z | x, y) = Normal(S W^T (x - B[y]) / sigma^2, S),   S = (I + W^T W / sigma^2)^-1

With the exact p(z | x, y) as the guide's q(z | x, y), ``log p(x, y, z) - log q(z | x, y)`` is
``log p(x, y)`` whatever z is drawn, so the ELBO and log p(x) are known exactly.
"""

import os

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule, PyroParam

from pyro_vae import Program, data_plate, evaluate, fit
from pyro_vae.cli import main
from pyro_vae.data import Data
from pyro_vae.discrete import STRATEGIES, default_strategy, objective
from pyro_vae.errors import ConfigError, ModelFileError
from tests.conftest import assert_close
from tests.test_semi import SMALL

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K, X_DIM, Z_DIM, SIGMA = 3, 2, 2, 0.5


class Mixture(PyroModule):
    def __init__(self, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(X_DIM, Z_DIM, generator=g)
        self.B = PyroParam(3.0 * torch.randn(K, X_DIM, generator=g))
        self.pi = torch.tensor([0.5, 0.3, 0.2])

    def forward(self, x=None, y=None, idx=None, size=None):
        with data_plate(x, idx, size):
            c = pyro.sample("y", dist.OneHotCategorical(self.pi))
            z = pyro.sample("z", dist.Normal(torch.zeros(Z_DIM), 1.0).to_event(1))
            return pyro.sample(
                "x", dist.Normal(z @ self.W.T + c @ self.B, SIGMA).to_event(1), obs=x
            )

    def posterior(self, x, c, B=None):
        """p(z | x, y) for one-hot ``c`` (any batch shape broadcasting with x's)."""
        B = self.B if B is None else B
        prec = torch.eye(Z_DIM) + self.W.T @ self.W / SIGMA**2
        cov = torch.linalg.inv(prec)
        loc = (x - c @ B) @ self.W @ cov / SIGMA**2
        return loc, torch.linalg.cholesky(cov)

    def log_joint_y(self, x):
        """log p(x, y) for each class, ``(K, N)``."""
        cov = self.W @ self.W.T + SIGMA**2 * torch.eye(X_DIM)
        per_class = dist.MultivariateNormal(self.B.detach()[:, None], cov).log_prob(x)
        return per_class + self.pi.log()[:, None]


class MixtureGuide(PyroModule):
    """q(y | x) = softmax(x A + a); q(z | x, y) = p(z | x, y) at the model's initial B."""

    def __init__(self, truth):
        super().__init__()
        self.A = PyroParam(0.3 * torch.randn(X_DIM, K, generator=torch.Generator().manual_seed(1)))
        self.a = PyroParam(torch.zeros(K))
        object.__setattr__(self, "truth", truth)
        self.B0 = truth.B.detach().clone()

    def logits(self, x):
        return x @ self.A + self.a

    def forward(self, x, y=None, idx=None, size=None):
        with data_plate(x, idx, size):
            c = pyro.sample("y", dist.OneHotCategorical(logits=self.logits(x)))
            loc, tril = self.truth.posterior(x, c, self.B0)
            pyro.sample("z", dist.MultivariateNormal(loc, scale_tril=tril))


def mixture(n=6):
    truth = Mixture()
    guide = MixtureGuide(truth)
    with torch.no_grad():
        y = dist.Categorical(truth.pi).sample((n,))
        z = torch.randn(n, Z_DIM)
        x = z @ truth.W.T + truth.B[y] + SIGMA * torch.randn(n, X_DIM)
    program = Program(truth, guide, x)
    return truth, guide, program, x


def hand_elbo(truth, guide, x):
    """sum_y q(y|x) [log p(x, y) - log q(y|x)] per point, done by hand."""
    log_q = guide.logits(x).detach().log_softmax(-1).T  # (K, N)
    return (log_q.exp() * (truth.log_joint_y(x) - log_q)).sum(0)


def test_the_door_takes_discrete_sites():
    _, _, program, _ = mixture()
    structure = program.structure
    y = structure.site("y")
    assert y.discrete and y.cardinality == K and y.shape == (K,)
    assert not structure.site("z").discrete
    assert structure.code.name == "z"  # the figures show the continuous code
    assert default_strategy(structure) == "enumerate"


def test_enumerated_elbo_is_the_sum_over_classes():
    truth, guide, program, x = mixture()
    expected = hand_elbo(truth, guide, x)
    loss_fn = objective(program.structure, "enumerate")(program.model, program.guide)
    assert_close(-loss_fn(x), expected.sum(), atol=1e-4, rtol=1e-5)
    per_image = evaluate.elbo(program.model, program.guide, x, num_samples=3)
    assert_close(per_image, expected, atol=1e-4, rtol=1e-5)


def test_log_px_sums_the_classes_out_exactly():
    truth, _, program, x = mixture()
    exact = truth.log_joint_y(x).logsumexp(0)
    for k in (1, 7):
        assert_close(evaluate.log_px(program.model, program.guide, x, num_samples=k), exact, 1e-4)


def test_log_px_with_an_approximate_q_z_approaches_the_exact_value():
    truth, guide, program, x = mixture()
    guide.B0 = guide.B0 + 0.5  # q(z | x, y) off the posterior: an importance sampler only
    exact = truth.log_joint_y(x).logsumexp(0)
    few = evaluate.log_px(program.model, program.guide, x, num_samples=1).mean()
    many = evaluate.log_px(program.model, program.guide, x, num_samples=5000).mean()
    assert few < many < exact.mean() + 0.02
    assert exact.mean() - many < 0.05


def gradient_draws(program, x, name, num_draws, temperature=None):
    strategy = objective(program.structure, name)
    if temperature is not None:
        strategy.temperature = temperature
    loss_fn = strategy(program.model, program.guide)
    params = {n: p for n, p in loss_fn.named_parameters() if "baseline" not in n}
    draws = []
    for _ in range(num_draws):
        loss_fn.zero_grad()
        loss_fn(x).backward()
        draws.append(torch.cat([p.grad.reshape(-1) for p in params.values()]))
    return torch.stack(draws)


@pytest.mark.parametrize("name", ["score", "score-baseline"])
def test_score_function_gradients_agree_with_enumeration(name):
    _, _, program, x = mixture()
    enum = gradient_draws(program, x, "enumerate", 50)
    score = gradient_draws(program, x, name, 400)
    diff = score.mean(0) - enum.mean(0)
    se = (score.var(0) / len(score) + enum.var(0) / len(enum)).sqrt()
    assert (diff.abs() <= 4 * se + 1e-4).all(), (diff, se)
    # the estimators differ in variance only: the score function's is the larger one
    assert score.var(0).sum() > enum.var(0).sum()


def test_relaxed_gradient_of_the_decoder_agrees_at_a_low_temperature():
    """The relaxed objective is another one; at a low temperature the relaxed class is almost
    one-hot, and the decoder's gradient (here the class offsets B) matches the discrete one's."""
    truth, _, program, x = mixture()
    n_b = truth.B.numel()
    names = [
        n
        for n, _ in objective(program.structure, "enumerate")(
            program.model, program.guide
        ).named_parameters()
    ]
    first = names.index(next(n for n in names if n.startswith("model")))
    enum = gradient_draws(program, x, "enumerate", 100)[:, first : first + n_b]
    relaxed = gradient_draws(program, x, "relaxed", 500, temperature=0.05)[:, first : first + n_b]
    diff = relaxed.mean(0) - enum.mean(0)
    se = (relaxed.var(0) / len(relaxed) + enum.var(0) / len(enum)).sqrt()
    assert (diff.abs() <= 4 * se + 1e-3).all(), (diff, se)


def test_every_strategy_fits_the_mixture_and_is_scored_by_the_same_number():
    truth, _, _, _ = mixture()
    torch.manual_seed(0)
    n = 200
    y = dist.Categorical(truth.pi).sample((n,))
    x = torch.randn(n, Z_DIM) @ truth.W.T + truth.B.detach()[y] + SIGMA * torch.randn(n, X_DIM)
    data = Data("mixture", "none", x, y, x[:50], y[:50])
    exact = truth.log_joint_y(x[:50]).logsumexp(0).mean()
    for name in STRATEGIES:
        pyro.set_rng_seed(0)
        model = Mixture()
        guide = MixtureGuide(model)
        with torch.no_grad():
            guide.A.zero_()
        history = fit(
            model, guide, data, epochs=30, batch_size=50, lr=0.05, quiet=True, discrete=name
        )
        # the held-out ELBO of q(y|x) trained by each estimator, scored by enumeration
        assert history.test_elbo[-1] > history.test_elbo[0] - 1e-3, name
        assert history.test_elbo[-1] <= exact + 0.05, name


def test_discrete_strategy_on_a_model_without_discrete_sites_is_refused():
    from tests.linear_gaussian import GaussianGuide, LinearGaussian

    truth = LinearGaussian()
    x = torch.randn(4, 5)
    program = Program(truth, GaussianGuide(lambda x: torch.zeros(x.shape[0], 2), torch.eye(2)), x)
    with pytest.raises(ConfigError, match="has none"):
        objective(program.structure, "enumerate")
    with pytest.raises(ConfigError, match="unknown discrete"):
        objective(program.structure, "gumbel")


def test_relaxed_refuses_a_categorical_index_site():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(torch.ones(3) / 3))
            loc = c.float()[..., None] + torch.zeros_like(x)
            pyro.sample("x", dist.Normal(loc, 1.0).to_event(1), obs=x)

    def guide(x):
        logits = pyro.param("logits", torch.zeros(3))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Categorical(logits=logits))

    x = torch.randn(5, 2)
    program = Program(model, guide, x)
    assert program.structure.site("c").cardinality == 3
    assert_close(
        evaluate.log_px(program.model, program.guide, x, num_samples=2),
        dist.Normal(torch.arange(3.0)[:, None, None], 1.0).log_prob(x).sum(-1).logsumexp(0)
        - torch.tensor(3.0).log(),
        1e-4,
    )
    loss_fn = objective(program.structure, "relaxed")(program.model, program.guide)
    with pytest.raises(ConfigError, match="OneHotCategorical"):
        loss_fn(x)


def test_a_discrete_model_without_a_guide_is_refused():
    truth = Mixture()
    with pytest.raises(ModelFileError, match="discrete"):
        Program(truth, None, torch.randn(4, X_DIM))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_model_file_with_a_discrete_latent_trains_with_each_choice(name, tmp_path, capsys):
    out = tmp_path / name
    main(
        [
            "train",
            "--model",
            os.path.join(ROOT, "examples", "cluster_vae.py:ClusterVAE"),
            "--discrete",
            name,
            *SMALL,
            "--log-px-samples",
            "4",
            "--elbo",
            "trace",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    metrics = __import__("json").loads((out / "metrics.json").read_text())
    assert metrics["test_log_px"] < 0 and metrics["test_elbo"] <= metrics["test_log_px"] + 1
    config = __import__("json").loads((out / "config.json").read_text())
    assert config["discrete"] == name


def test_the_guide_page_lists_every_strategy():
    with open(os.path.join(ROOT, "docs", "guide", "discrete.md")) as f:
        page = f.read()
    for name in STRATEGIES:
        assert f"| `{name}` |" in page, name
