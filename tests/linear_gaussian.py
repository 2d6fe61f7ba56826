"""A linear-Gaussian latent variable model with a closed-form log p(x) and posterior.

It follows the pyro_vae model/guide protocol, so the library's evaluation code runs on it
unchanged::

    z ~ Normal(0, I)                    # z_dim
    x ~ Normal(W z + b, sigma^2 I)      # x_dim

    p(x)   = Normal(b, W W^T + sigma^2 I)
    p(z|x) = Normal(S W^T (x - b) / sigma^2, S),   S = (I + W^T W / sigma^2)^-1
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from pyro_vae.models import data_plate


class LinearGaussian(PyroModule):
    def __init__(self, x_dim=5, z_dim=2, sigma=0.5, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(x_dim, z_dim, generator=g)
        self.b = torch.randn(x_dim, generator=g)
        self.sigma = sigma
        self.z_dim = z_dim

    def z_dist(self):
        return dist.Normal(torch.zeros(self.z_dim), 1.0).to_event(1)

    def x_dist(self, z):
        return dist.Normal(z @ self.W.T + self.b, self.sigma).to_event(1)

    def forward(self, x=None, y=None, idx=None, size=None):
        with data_plate(x, idx, size):
            z = pyro.sample("z", self.z_dist())
            return pyro.sample("x", self.x_dist(z), obs=x)

    def exact_log_px(self, x):
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(len(self.b))
        return dist.MultivariateNormal(self.b, cov).log_prob(x)

    def exact_posterior(self, x):
        prec = torch.eye(self.z_dim) + self.W.T @ self.W / self.sigma**2
        cov = torch.linalg.inv(prec)
        loc = (x - self.b) @ self.W @ cov / self.sigma**2
        return loc, cov


class GaussianGuide(PyroModule):
    """q(z|x) = Normal(loc(x), scale_tril) for a fixed affine map ``loc = x A + c``."""

    def __init__(self, loc_fn, scale_tril):
        super().__init__()
        self.loc_fn = loc_fn
        self.scale_tril = scale_tril

    def forward(self, x, y=None, idx=None, size=None):
        with data_plate(x, idx, size):
            return pyro.sample(
                "z", dist.MultivariateNormal(self.loc_fn(x), scale_tril=self.scale_tril)
            )


def plain_functions(x_dim=5, z_dim=2, sigma=0.5, seed=0):
    """The same model as plain Pyro functions, written the way Pyro's documentation writes them:
    its own site and plate names, no ``idx``/``size``, and a guide whose parameters are
    ``pyro.param`` statements (an affine map of x). Returns ``(LinearGaussian, model, guide)``,
    the first for its closed forms."""
    truth = LinearGaussian(x_dim, z_dim, sigma, seed)

    def model(x):
        with pyro.plate("points", x.shape[0]):
            h = pyro.sample("h", dist.Normal(torch.zeros(z_dim), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(h @ truth.W.T + truth.b, sigma).to_event(1), obs=x)

    def guide(x):
        a = pyro.param("A", torch.zeros(x_dim, z_dim))
        c = pyro.param("c", torch.zeros(z_dim))
        s = pyro.param("s", torch.ones(z_dim), constraint=dist.constraints.positive)
        with pyro.plate("points", x.shape[0]):
            pyro.sample("h", dist.Normal(x @ a + c, s).to_event(1))

    return truth, model, guide
