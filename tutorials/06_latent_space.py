# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Tutorial 6: the latent space
#
# A trained VAE gives every image a region of code space, q(z|x), and every code an image, the mean
# of p(x|z). This tutorial walks around that space with the tools in `pyro_vae.latent`:
#
# 1. a 2-D latent space we can see whole: the codes of the test images and the decoded grid;
# 2. interpolation between two images, along a line and along a great circle;
# 3. traversals: one latent dimension at a time;
# 4. denoising and in-filling: decoding the encoder's guess against fitting q to what was seen;
# 5. anomaly detection: does the model notice images unlike its training data?
#
# Figures are written to `tutorial-output/06/`.

# %%
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pyro
import torch
from pyro.infer import TraceMeanField_ELBO

import pyro_vae
from pyro_vae import anomaly, latent, plots

smoke_test = "CI" in os.environ  # the test suite runs every tutorial with tiny sizes
EPOCHS = 1 if smoke_test else 60
HIDDEN = (32,) if smoke_test else (400,)
N_OOD = 100 if smoke_test else 1000
K = 10 if smoke_test else 200  # importance samples for log p(x)
OUT = os.path.join("tutorial-output", "06")
os.makedirs(OUT, exist_ok=True)
data = pyro_vae.load_dataset("mnist-small", binarize="dynamic")


def train(z_dim, data, exclude_classes=()):
    """A VAE trained with the library's trainer, wrapped as a Run for the latent-space tools."""
    pyro.set_rng_seed(0)
    config = pyro_vae.Config(z_dim=z_dim, hidden_dims=HIDDEN, exclude_classes=exclude_classes)
    model, guide = pyro_vae.build(config, data.x_shape)
    history = pyro_vae.fit(
        model, guide, data, TraceMeanField_ELBO(), epochs=EPOCHS, lr=1e-3, quiet=True
    )
    print(f"z_dim={z_dim}: test ELBO {history.test_elbo[-1]:.2f} nats/image after {EPOCHS} epochs")
    return pyro_vae.Run(config, model, guide, data.x_shape)


# %% [markdown]
# ## 1. A latent space you can see: z_dim = 2
#
# With two latent dimensions the whole code space fits on a page. Two views of it:
#
# * **Encoder's view.** Each test image's posterior mean, coloured by its digit. The digits form
#   regions, though nobody told the model about labels: images that look alike get nearby codes,
#   because a decoder is smooth and nearby codes decode to similar images.
# * **Decoder's view.** Decode a grid of codes (Kingma & Welling 2014, figure 4). The grid is spaced
#   evenly in *probability* under the prior (normal quantiles), so each cell stands for the same
#   share of the prior's mass, the way samples from the prior would fall.

# %%
run2 = train(2, data)
codes, _ = run2.encode(data.test_x)
path = os.path.join(OUT, "codes.png")
plots.latent_scatter(
    codes, data.test_y, path, title="posterior means of the test images, z_dim = 2"
)
print(path)
n = 8 if smoke_test else 20
path = os.path.join(OUT, "manifold.png")
axis = latent.grid_axis(n)
plots.image_grid(
    latent.manifold_grid(run2, n=n),
    path,
    title=f"decoded grid, z[0] and z[1] from {axis[0]:.2f} to {axis[-1]:.2f} (z[1] upwards)",
    nrow=n,
)
print(path)

# %% [markdown]
# Compare the two pictures, `codes.png` and `manifold.png`: the digit regions of the scatter plot
# reappear as regions of the grid. Between regions the decoder morphs one digit into another; a code
# between a 7 and a 1 is a thin, half-bent stroke. Two dimensions are too few for a good model (the
# ELBO above is poor), but they show the geometry. From here on we use more.
#
# ## 2. Interpolation: lines and great circles
#
# Encode two images, walk from one posterior mean to the other, decode each point. The straight
# line is the obvious path, but in high dimensions it is a poor one. Under `Normal(0, I)` in d
# dimensions, ‖z‖² is a sum of d squares: it concentrates around d, so nearly all codes lie near the
# sphere of radius √d. The midpoint of two codes on that sphere is shorter by a factor cos(θ/2),
# inside the shell, where the decoder has seen few codes. **Spherical interpolation** (slerp) follows
# the great circle instead and keeps the norm (White 2016).

# %%
Z = 4 if smoke_test else 16
run = train(Z, data)
pairs = [(0, 7), (2, 9), (3, 8)]  # test images of digits 0-7, 2-9, 3-8
index = {d: int((data.test_y == d).nonzero()[0]) for d in range(10)}
rows, labels = [], []
for a, b in pairs:
    x0, x1 = data.test_x[index[a]], data.test_x[index[b]]
    for method in latent.INTERPOLATIONS:
        rows.append(latent.interpolate(run, x0, x1, steps=10, method=method))
        labels.append(f"{a} → {b}, {method}")
path = os.path.join(OUT, "interpolation.png")
plots.image_rows(rows, labels, path, title=f"interpolating posterior means, z_dim = {Z}")
print(path)
z0, z1 = run.encode(data.test_x[index[0]])[0][0], run.encode(data.test_x[index[7]])[0][0]
print("norm along the line:  ", [round(v, 2) for v in latent.lerp(z0, z1, 5).norm(dim=1).tolist()])
print("norm along the circle:", [round(v, 2) for v in latent.slerp(z0, z1, 5).norm(dim=1).tolist()])

# %% [markdown]
# For codes of moderate size the two paths decode to similar images (`interpolation.png`, a line and
# a great circle for each pair), and the printed norms show why: the line dips inside the shell in
# the middle, the circle does not. The difference grows with z_dim and with the angle between the
# codes.
#
# ## 3. Traversals
#
# Keep one image's code and sweep a single coordinate from −3 to +3 prior standard deviations, one
# row per coordinate, for the eight coordinates with the most KL (the KL of that coordinate's q from
# the prior, averaged over the test images, printed with it).

# %%
x = data.test_x[index[4]]
with torch.no_grad():
    kl_per_dim = torch.distributions.kl_divergence(
        run.guide.z_dist(data.test_x).base_dist, run.model.z_dist().base_dist
    ).mean(0)
dims = kl_per_dim.argsort(descending=True)[: min(Z, 8)].tolist()
values = torch.linspace(-3, 3, 9)
images = latent.traversals(run, x, dims=dims, values=values)
rows = list(images.split(len(values)))
labels = [f"z[{d}], KL {kl_per_dim[d]:.1f}" for d in dims]
path = os.path.join(OUT, "traversals.png")
plots.image_rows(rows, labels, path, title="traversals from -3 to +3, by KL per dimension (nats)")
print(path)
print("KL per dimension (nats):", [round(v, 2) for v in kl_per_dim.tolist()])
if not smoke_test:  # the text below and the interpolation section, checked on the full run
    assert kl_per_dim.min() > 1.0
    line, arc = latent.lerp(z0, z1, 5).norm(dim=1), latent.slerp(z0, z1, 5).norm(dim=1)
    assert line.min() < min(line[0], line[-1]) and arc.min() >= min(arc[0], arc[-1]) - 1e-4

# %% [markdown]
# In `traversals.png` some coordinates change the slant or the stroke width, some the identity of
# the digit (in the full run, the rows with the most KL turn the 4 into a 1 or an 8), and some very
# little. Here every one of the 16 dimensions carries some information (each has a KL of more than
# 1 nat, printed above), so no row stands still; given more dimensions than the data needs, a VAE
# can switch some off (their posterior stays at the prior, KL ≈ 0), which is called posterior
# collapse of single units.
#
# ## 4. Denoising and in-filling
#
# The encoder was only ever shown clean digits. The obvious way to restore a damaged one, encode it
# and decode the posterior mean, asks the encoder about an image unlike any it was trained on, and
# then replaces *every* pixel by the decoder's blurred guess, the undamaged ones too. It is the
# weakest method, and we measure it below.
#
# The Bayesian way puts the damage into the model. For **flip noise** at a known rate f, a seen
# pixel is the clean one flipped with probability f, so p(seen pixel = 1 | z) = μ(1 − f) + (1 − μ)f
# with μ the decoder's mean; for an **occluded** region, the hidden pixels are simply not in the
# likelihood. `latent.denoise(run, x, flip=f, observed=mask)` fits a Gaussian q(z) per image to the
# ELBO of what was seen (an E-step started at the encoder's q, the decoder fixed), then gives each
# pixel its posterior probability of being on: Bayes' rule for a seen pixel (it keeps its value
# unless the model is sure enough to overrule the noise), the decoder's mean for a hidden one.
# `method="encoder"` is the decode-the-posterior-mean method. The score is the fraction of pixels
# that differ from the clean image (thresholded at 0.5).

# %%
truth = data.test_x[[index[d] for d in range(10)]]
noisy = latent.flip_pixels(truth, p=0.15, seed=0)
half = latent.occlude(truth)
seen = latent.visible(truth)
rows = [
    noisy,
    latent.denoise(run, noisy, method="encoder"),
    latent.denoise(run, noisy, flip=0.15),
    half,
    latent.denoise(run, half, method="encoder"),
    latent.denoise(run, half, observed=seen),
    truth,
]
labels = [
    "15% flipped",
    "encode, decode",
    "fit q, Bayes",
    "lower half erased",
    "encode, decode",
    "fit q to top",
    "truth",
]
path = os.path.join(OUT, "denoising.png")
plots.image_rows(rows, labels, path, title="restoring damaged test digits, two ways")
print(path)

# %% [markdown]
# `denoising.png`: ten test digits, one of each class, damaged two ways (15% of the pixels flipped;
# the lower half erased), each followed by its restorations by the two methods; the clean digits
# are the last row.
#
# Now the pixel error against the damage level, on test images the model never trained on.

# %%
clean = data.test_x[: 20 if smoke_test else 300]
rates = [0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3]
errors = {"damaged image": [], "encode, decode": [], "fit q, Bayes": []}
for rate in rates:
    damaged = latent.flip_pixels(clean, p=rate, seed=1)
    errors["damaged image"].append(latent.pixel_error(damaged, clean))
    errors["encode, decode"].append(
        latent.pixel_error(latent.denoise(run, damaged, method="encoder"), clean)
    )
    errors["fit q, Bayes"].append(
        latent.pixel_error(latent.denoise(run, damaged, flip=rate), clean)
    )
half, seen = latent.occlude(clean), latent.visible(clean)
infill = {
    "damaged image": latent.pixel_error(half, clean),
    "encode, decode": latent.pixel_error(latent.denoise(run, half, method="encoder"), clean),
    "fit q, Bayes": latent.pixel_error(latent.denoise(run, half, observed=seen), clean),
}
fig, ax = plt.subplots(figsize=(6, 4))
for name, values in errors.items():
    ax.plot([100 * r for r in rates], [100 * v for v in values], marker="o", label=name)
ax.set_xlabel("pixels flipped (%)")
ax.set_ylabel("pixels wrong after restoring (%)")
ax.set_title(f"denoising {len(clean)} test images, z_dim = {Z}", fontsize=10)
ax.grid(alpha=0.3)
ax.legend()
path = os.path.join(OUT, "denoising-error.png")
fig.savefig(path, dpi=110, bbox_inches="tight")
plt.close(fig)
print(path)
print("pixel error (%) at flip rates", [f"{100 * r:g}" for r in rates])
for name, values in errors.items():
    print(f"  {name:<15}", " ".join(f"{100 * v:5.2f}" for v in values))
print("lower half erased:", ", ".join(f"{k} {100 * v:.2f}%" for k, v in infill.items()))

# %% [markdown]
# What the curve shows (`denoising-error.png`; full run, 300 test images): decoding the encoder's
# posterior mean *adds* error at light damage (2% flipped pixels become about 5% wrong ones; even an
# undamaged image comes back with about 4.5% of its pixels wrong: the decoder's blur replaces good
# pixels), and helps only once the damage is heavier than that blur. Fitting q to the damaged image
# through the noise model beats both at every rate: a quarter to a third of the damage remains (2%
# flipped become about 0.6% wrong, 20% about 4.4%). For the erased lower half (about 7% of the
# pixels wrong, the ink that was erased), the encoder's guess is worse than leaving the half black
# (about 10%); fitting q to the top half alone and filling in the bottom improves on both, but less
# (about 5%): the top of a digit often leaves its bottom open (a 7 and a 9 share their top half),
# and the model can only fill in its average guess.

# %%
if not smoke_test:  # what the text above says, checked on the full run
    damaged, encoder, fitted = (errors[k] for k in errors)
    assert encoder[1] > 2 * damaged[1] and fitted[1] < damaged[1] / 2
    assert all(f < min(d, e) for f, d, e in zip(fitted[1:], damaged[1:], encoder[1:]))
    assert encoder[0] > 0.03 and 0.04 < encoder[1] < 0.06 and fitted[1] < 0.01
    assert 0.2 < min(f / d for f, d in zip(fitted[1:], damaged[1:]))
    assert max(f / d for f, d in zip(fitted[1:], damaged[1:])) < 0.35
    assert 0.03 < fitted[5] < 0.055
    assert 0.06 < infill["damaged image"] < 0.08 and 0.085 < infill["encode, decode"] < 0.11
    assert 0.04 < infill["fit q, Bayes"] < 0.06
    assert infill["encode, decode"] > infill["damaged image"] > infill["fit q, Bayes"]

# %% [markdown]
# ## 5. Anomaly detection
#
# A generative model assigns every image a probability, so a natural detector of unusual inputs
# is a low probability. `pyro_vae.anomaly` scores each image three ways (higher = more unusual):
# −ELBO; −log p(x) by importance sampling; and KL(q(z|x) || p(z)), how far the encoder has to move the
# code from the prior. The quality of a score is its AUROC: the probability that a random unusual
# image scores higher than a random normal one (1 perfect, 0.5 chance).
#
# Two tests. We train a model on all digits *except 1*, and ask it about
#
# * held-out 1s (same pen, same style, a digit it never saw), and
# * Fashion-MNIST clothes (a different kind of image), when that dataset is installed.

# %%
no_ones = data.select_classes([1], keep=False)
run_no1 = train(Z, no_ones, exclude_classes=(1,))
ones = data.select_classes([1]).test_x
scores_in = anomaly.anomaly_scores(run_no1, no_ones.test_x[:N_OOD], num_samples=K)
outsiders = {"held-out 1s": ones[:N_OOD]}
try:
    outsiders["Fashion-MNIST"] = pyro_vae.load_dataset("fashion-mnist", "static").test_x[:N_OOD]
except pyro_vae.DatasetUnavailableError as e:
    print("skipping Fashion-MNIST:", e)
tables = {}
for name, x_out in outsiders.items():
    path = os.path.join(OUT, f"anomaly-{name.split()[0].lower()}.png")
    tables[name], _ = anomaly.detect(
        run_no1,
        scores_in,
        x_out,
        num_samples=K,
        path=path,
        title=f"model trained without 1s: test digits 0, 2-9 vs {name}",
        names=("digits 0, 2-9 (in)", f"{name} (out)"),
    )
    print(path)
print(anomaly.format_tables(tables))
aurocs = {name: {r["score"]: r["auroc"] for r in rows} for name, rows in tables.items()}
if not smoke_test:  # what the text below says, checked on the full run
    assert aurocs["held-out 1s"]["log_px"] < 0.5 and aurocs["held-out 1s"]["elbo"] < 0.5
    if "Fashion-MNIST" in aurocs:
        assert aurocs["Fashion-MNIST"]["log_px"] > 0.9

# %% [markdown]
# `anomaly-held-out.png` (and `anomaly-fashion-mnist.png`, where Fashion-MNIST is installed) draws
# each score's histograms, for the test digits the model was trained on and for the outsiders, with
# the score's AUROC above its panel.
#
# **Where likelihood fails.** The held-out 1s are *not* flagged: they get a *higher* likelihood
# (lower −log p(x)) than the digits the model was trained on, and the AUROC falls below 0.5, worse
# than chance. A 1 is a single stroke with few "on" pixels; a Bernoulli decoder that predicts
# "mostly background" already explains most of its pixels, so it is cheap in nats, whatever the
# model thinks of its shape. Likelihood measures how *compressible* an image is under the model,
# which is not the same as how *typical* it is (Nalisnick et al. 2019 found the same for deep
# generative models trained on Fashion-MNIST and scoring MNIST, and on CIFAR-10 scoring SVHN).
# Fashion-MNIST clothes, with large areas of ink, cost many more nats and are detected easily.
#
# The KL score looks at the code instead of the pixels: how surprising is the encoder's answer.
# It is the score to try when simple outliers fool the likelihood, but it is not a cure; compare
# its AUROC on both tests above. The honest summary: a VAE's likelihood is a good detector of
# images that are *more complex* than its training data, and a poor one for simpler images.
