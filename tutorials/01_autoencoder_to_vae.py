# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Tutorial 1: from autoencoder to VAE
#
# An autoencoder squeezes an image `x` through a short code `z = enc(x)` and learns to rebuild it,
# `x ≈ dec(z)`. It compresses well, yet it is not a *generative* model: nothing tells us which codes
# are valid, so we cannot ask it for a new image. The variational autoencoder (VAE, Kingma &
# Welling 2014) fixes exactly that, by treating the code as a random variable with a prior.
#
# In this tutorial we
#
# 1. write both as Pyro programs built from the same pieces of `pyro_vae`,
# 2. derive the VAE's objective, the ELBO, twice: from Jensen's inequality and from a KL divergence,
# 3. check the derivation numerically, and
# 4. see why sampling from the prior works for the VAE and fails for the autoencoder.
#
# Figures are written to `tutorial-output/01/` (printed below as they appear).

# %%
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pyro
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

import pyro_vae
from pyro_vae import plots

smoke_test = "CI" in os.environ  # the test suite runs every tutorial with tiny sizes
Z_DIM = 4 if smoke_test else 20
HIDDEN = (32,) if smoke_test else (400,)
EPOCHS = 1 if smoke_test else 40
K = 20 if smoke_test else 1000  # importance samples for log p(x)
OUT = os.path.join("tutorial-output", "01")
os.makedirs(OUT, exist_ok=True)
pyro.set_rng_seed(0)

data = pyro_vae.load_dataset("mnist-small", binarize="dynamic")
print("train", tuple(data.train_x.shape), "test", tuple(data.test_x.shape))

# %% [markdown]
# ## The generative story
#
# A VAE is a latent-variable model. To make an image, draw a code from a fixed prior and let a
# network turn it into pixel probabilities:
#
# ```
# z ~ Normal(0, I)               # z_dim numbers
# x ~ Bernoulli(logits=dec(z))   # 784 pixels, each on or off
# ```
#
# `pyro_vae.VAE` is exactly this program. Its likelihood of an image given a code,
# `log p(x|z) = Σ_pixels [x log σ(dec(z)) + (1-x) log(1-σ(dec(z)))]`, is minus the binary cross
# entropy an autoencoder would minimise. So the model already contains the autoencoder's decoder
# and its loss. What differs is how we pick the code for a given image: that is the job of the
# **guide** q(z|x).
#
# * The VAE's guide, `pyro_vae.AmortizedGuide`, is a distribution: the encoder outputs a `loc` and a
#   `scale` per image and `z ~ Normal(loc, scale)`.
# * An autoencoder's "guide" is a point: `z = enc(x)`, a distribution with all its mass in one place
#   (a `Delta`). That is the autoencoder as the zero-noise limit of the VAE.
#
# The library wraps any guide that way: `pyro_vae.DeltaGuide(guide)` puts all of q's mass at the
# mean of `guide`'s distribution, so `DeltaGuide(encoder_guide)` is `z = enc(x)` with the encoder's
# scale ignored. Nothing else changes: the same model, the same ELBO code, the same trainer.


# %%
config = pyro_vae.Config(z_dim=Z_DIM, hidden_dims=HIDDEN, epochs=EPOCHS)
vae_model, vae_guide = pyro_vae.build(config, data.x_shape)
ae_model, ae_encoder_guide = pyro_vae.build(config, data.x_shape)
ae_guide = pyro_vae.DeltaGuide(ae_encoder_guide)

# %% [markdown]
# ## The ELBO, twice
#
# We want to fit the decoder by maximum likelihood, `log p(x) = log ∫ p(x|z) p(z) dz`, but the
# integral over all codes is intractable for a neural decoder. Bring in any distribution q(z|x)
# over codes and write the integral as an expectation under q:
#
# $$\log p(x) = \log \mathbb{E}_{q(z|x)}\left[\frac{p(x, z)}{q(z|x)}\right]
#   \;\ge\; \mathbb{E}_{q(z|x)}\left[\log \frac{p(x, z)}{q(z|x)}\right] = \text{ELBO}.$$
#
# The inequality is **Jensen's** (log is concave, so the log of a mean is at least the mean of the
# logs). Splitting `p(x, z) = p(x|z) p(z)` gives the form people train with:
#
# $$\text{ELBO} = \underbrace{\mathbb{E}_q[\log p(x|z)]}_{\text{reconstruction}}
#   - \underbrace{\mathrm{KL}(q(z|x)\,\|\,p(z))}_{\text{stay close to the prior}}.$$
#
# **The second derivation** says how loose the bound is. Write `p(x, z) = p(z|x) p(x)` instead:
#
# $$\text{ELBO} = \mathbb{E}_q[\log p(z|x) + \log p(x) - \log q(z|x)]
#   = \log p(x) - \mathrm{KL}(q(z|x)\,\|\,p(z|x)).$$
#
# So the gap is exactly the KL from q to the true posterior: maximising the ELBO over the guide makes
# q a better posterior, and over the decoder raises the likelihood. Pyro's `Trace_ELBO` estimates
# the ELBO with samples from q; `TraceMeanField_ELBO` uses the closed form of the KL term.
#
# For the point-mass guide, `log q(z|x)` is zero at its one point, so its "ELBO" is
# `log p(x|enc(x)) + log p(enc(x))`: the autoencoder's reconstruction plus a penalty `½‖z‖²` on the
# codes. The missing piece is the entropy of q: nothing rewards spreading out. We train it with the
# same ELBO machinery and the same trainer as the VAE (`TraceMeanField_ELBO` needs a Normal q, so
# the point mass uses `Trace_ELBO`).

# %%
kwargs = dict(epochs=EPOCHS, batch_size=128, lr=1e-3, quiet=True)
vae_history = pyro_vae.fit(vae_model, vae_guide, data, TraceMeanField_ELBO(), **kwargs)
ae_history = pyro_vae.fit(ae_model, ae_guide, data, Trace_ELBO(), **kwargs)
vae = pyro_vae.Run(config, vae_model, vae_guide, data.x_shape)
print(f"VAE test ELBO after {EPOCHS} epochs: {vae_history.test_elbo[-1]:.2f} nats/image")

# %% [markdown]
# ## Checking the decomposition
#
# Three numbers per image, averaged over the test set: the reconstruction term (a Monte Carlo
# average over codes drawn from q), the KL term (closed form for two Gaussians) and the ELBO that
# `pyro_vae.elbo` computes. Reconstruction minus KL must equal the ELBO within Monte Carlo error, and
# the importance-sampled log p(x) must sit above it: the difference estimates KL(q || p(z|x)).

# %%
x = data.test_x
with torch.no_grad():
    q = vae_guide.z_dist(x)
    z = q.sample((50,))  # 50 codes per image
    reconstruction = vae_model.x_dist(z).log_prob(x).mean(0)
    kl = torch.distributions.kl_divergence(q, vae_model.z_dist())
elbo = pyro_vae.elbo(vae_model, vae_guide, x, num_samples=50)
log_px = pyro_vae.log_px(vae_model, vae_guide, x, num_samples=K)
print(f"reconstruction E_q log p(x|z)   {reconstruction.mean():9.2f}")
print(f"KL(q(z|x) || p(z))             {kl.mean():9.2f}")
print(f"reconstruction - KL            {(reconstruction - kl).mean():9.2f}")
print(f"ELBO (pyro_vae.elbo)           {elbo.mean():9.2f}")
print(f"log p(x) (IS, K={K})         {log_px.mean():9.2f}")
print(f"gap log p(x) - ELBO            {(log_px - elbo).mean():9.2f}  (>= 0: KL(q || p(z|x)))")
assert abs((reconstruction - kl - elbo).mean()) < 1.0

# %% [markdown]
# The KL term is the price of describing an image by a *region* of code space instead of a point:
# a few tens of nats. The reconstruction term is most of the ELBO: the decoder's uncertainty about
# the pixels.
#
# ## Reconstructions: both models can do this

# %%
originals = data.test_x[:10]
with torch.no_grad():
    ae_codes = ae_encoder_guide.encoder(originals)[0]
    rows = [originals, vae.decode(vae.encode(originals)[0]), ae_model.x_dist(ae_codes).mean]
path = os.path.join(OUT, "reconstructions.png")
plots.image_rows(
    rows, ["test images", "VAE", "autoencoder"], path, "reconstructions (decoder means)"
)
print(path)

# %% [markdown]
# ## Generation: only one of them can do this
#
# To generate, draw `z ~ Normal(0, I)` and decode. The VAE was trained so that its codes look like
# draws from the prior: the KL term pulls every q(z|x) towards `Normal(0, I)` and the entropy of q
# keeps it wide, so the region where the prior puts its mass is covered by codes the decoder has
# been trained on. The autoencoder's codes were only pushed towards 0 by the `½‖z‖²` penalty, and
# the decoder can undo any shrinking by growing its first-layer weights: nothing fixes the scale or
# the shape of the cloud of codes, so the prior has no reason to land where they are. A first
# check is the length of the codes: under `Normal(0, I)` in d dimensions, ‖z‖ concentrates near √d.

# %%
with torch.no_grad():
    ae_all = ae_encoder_guide.encoder(data.test_x)[0]
    vae_all = vae_guide.z_dist(data.test_x).sample()
    prior_draws = torch.randn(len(data.test_x), Z_DIM)
fig, ax = plt.subplots(figsize=(6, 3.5))
for values, label in [
    (prior_draws, "prior draws z ~ N(0, I)"),
    (vae_all, "VAE codes z ~ q(z|x)"),
    (ae_all, "autoencoder codes z = enc(x)"),
]:
    ax.hist(values.norm(dim=1).numpy(), bins=50, alpha=0.6, density=True, label=label)
ax.set_xlabel("‖z‖")
ax.set_yticks([])
ax.legend(fontsize=8)
ax.set_title(f"norms of {Z_DIM}-d codes of the test images", fontsize=10)
path = os.path.join(OUT, "code-norms.png")
fig.savefig(path, dpi=110, bbox_inches="tight")
plt.close(fig)
print(path)
print(
    f"median norm: prior {prior_draws.norm(dim=1).median():.2f}, VAE {vae_all.norm(dim=1).median():.2f}, autoencoder {ae_all.norm(dim=1).median():.2f}"
)

# %% [markdown]
# Now decode the same 20 prior draws with both decoders.

# %%
z = torch.randn(20, Z_DIM, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    rows = [vae.decode(z[:10]), vae.decode(z[10:])]
    rows += [ae_model.x_dist(z[:10]).mean, ae_model.x_dist(z[10:]).mean]
path = os.path.join(OUT, "prior-samples.png")
plots.image_rows(
    rows, ["VAE", "VAE", "autoencoder", "autoencoder"], path, "decoded draws z ~ Normal(0, I)"
)
print(path)

# %% [markdown]
# The VAE's decoded prior draws are digits (blurry ones: each image is the *mean* of p(x|z), an
# average over the pixels the model is unsure about). The autoencoder's are mostly not: the prior
# hands its decoder codes unlike the ones it was trained on, as the norms above show.
#
# **What to take away.** Same decoder, same likelihood, same trainer; the difference is the guide.
# A spread-out q plus the KL to the prior turns a compressor into a generative model, and the ELBO is
# a lower bound on log p(x) whose gap is the KL between q and the true posterior. The number to
# trust: the VAE's test log p(x), printed above, estimated by importance sampling.
