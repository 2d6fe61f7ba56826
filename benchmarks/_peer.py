"""The peer the benchmarks measure pyro_vae against: Pyro's own VAE example (``examples/vae/vae.py``
in the Pyro repository, the model of https://pyro.ai/examples/vae.html), written here from its
published structure, and the same networks trained by a hand-written PyTorch loss.

The example's recipe: an MLP encoder ``x -> softplus(fc1) -> (fc21, exp(fc22))`` and decoder
``z -> softplus(fc1) -> sigmoid(fc21)`` (784-400-50), a ``"latent"`` site ~ Normal(0, I) in the
plate ``"data"``, an ``"obs"`` site ~ Bernoulli(probs) (its own validation off), ``pyro.module``
registering the networks in Pyro's global param store, ``SVI`` with ``pyro.optim.Adam(lr=1e-3)``
(one torch Adam per parameter) and ``Trace_ELBO`` or ``JitTrace_ELBO``, minibatches of 256, the
loss of a minibatch not scaled to the data set.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.optim import Adam
from torch import nn
from torch.nn import functional as F

ELBOS = {"Trace_ELBO": Trace_ELBO, "JitTrace_ELBO": JitTrace_ELBO}
BATCH_SIZE, LR = 256, 1e-3


class Encoder(nn.Module):
    def __init__(self, x_dim=784, z_dim=50, hidden_dim=400):
        super().__init__()
        self.fc1 = nn.Linear(x_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.x_dim = x_dim

    def forward(self, x):
        h = F.softplus(self.fc1(x.reshape(-1, self.x_dim)))
        return self.fc21(h), torch.exp(self.fc22(h))


class Decoder(nn.Module):
    def __init__(self, x_dim=784, z_dim=50, hidden_dim=400):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, x_dim)

    def forward(self, z):
        return torch.sigmoid(self.fc21(F.softplus(self.fc1(z))))


class PeerVAE(nn.Module):
    """The example's model and guide, as methods of one module holding both networks::

    latent ~ Normal(0, I)                 # 50 dims
    obs    ~ Bernoulli(decoder(latent))   # 784 pixels
    """

    def __init__(self, x_dim=784, z_dim=50, hidden_dim=400):
        super().__init__()
        self.encoder = Encoder(x_dim, z_dim, hidden_dim)
        self.decoder = Decoder(x_dim, z_dim, hidden_dim)
        self.x_dim, self.z_dim = x_dim, z_dim

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            zeros = x.new_zeros(x.shape[0], self.z_dim)
            z = pyro.sample("latent", dist.Normal(zeros, zeros + 1).to_event(1))
            probs = self.decoder(z)
            pyro.sample(
                "obs",
                dist.Bernoulli(probs, validate_args=False).to_event(1),
                obs=x.reshape(-1, self.x_dim),
            )

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.encoder(x)
            pyro.sample("latent", dist.Normal(loc, scale).to_event(1))


def peer_svi(vae, elbo="Trace_ELBO", lr=LR):
    """The example's training step: ``svi.step(x)`` returns the minibatch's loss (a float). Its
    parameters live in Pyro's global param store, which this clears first."""
    pyro.clear_param_store()
    return SVI(vae.model, vae.guide, Adam({"lr": lr}), loss=ELBOS[elbo]())


def hand_written_loss(vae, x):
    """The example's objective in plain PyTorch: the Bernoulli log-likelihood of one
    reparameterized sample and the Monte Carlo KL term ``log q(z|x) - log p(z)`` at that sample,
    as ``Trace_ELBO`` estimates it."""
    flat = x.reshape(-1, vae.x_dim)
    loc, scale = vae.encoder(flat)
    eps = torch.randn_like(loc)
    z = loc + scale * eps
    nll = F.binary_cross_entropy(vae.decoder(z), flat, reduction="sum")
    # log q(z|x) - log p(z): the 2*pi terms cancel
    log_q = (-0.5 * eps.pow(2) - scale.log()).sum()
    log_p = (-0.5 * z.pow(2)).sum()
    return nll + log_q - log_p


def hand_written_step(vae, x, lr=LR):
    """The same networks and objective with one torch Adam over all their parameters."""
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)

    def step():
        loss = hand_written_loss(vae, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step
