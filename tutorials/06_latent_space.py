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
# 4. denoising and in-filling by encoding a damaged image;
# 5. anomaly detection: does the model notice images unlike its training data?
#
# Figures are written to `tutorial-output/06/`.

# %%
import os

import matplotlib

matplotlib.use("Agg")
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
# Compare the two pictures: the digit regions of the scatter plot reappear as regions of the grid.
# Between regions the decoder morphs one digit into another; a code between a 7 and a 1 is a thin,
# half-bent stroke. Two dimensions are too few for a good model (the ELBO above is poor), but they
# show the geometry. From here on we use more.
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
# For codes of moderate size the two paths decode to similar images, and the printed norms show
# why: the line dips inside the shell in the middle, the circle does not. The difference grows with
# z_dim and with the angle between the codes.
#
# ## 3. Traversals
#
# Keep one image's code and sweep a single coordinate from −3 to +3 prior standard deviations. Some
# coordinates change the slant or the stroke width, some the identity of the digit, and some
# almost nothing: a VAE switches off latent dimensions it does not need (their posterior stays at
# the prior, KL ≈ 0), a phenomenon known as posterior collapse of single units.

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

# %% [markdown]
# ## 4. Denoising and in-filling
#
# The encoder was only ever shown clean digits. Give it a damaged one, 15% of the pixels flipped or
# the lower half erased, and decode its posterior mean. What comes back is the model's idea of a
# clean digit near the damaged one: a projection onto what the model can generate. It is often
# right; where the damage removes the distinguishing part (a 7 and a 9 share their top half) it can
# be confidently wrong, which is worth seeing too.

# %%
truth = data.test_x[[index[d] for d in range(10)]]
noisy = latent.flip_pixels(truth, p=0.15, seed=0)
half = latent.occlude(truth)
rows = [noisy, latent.denoise(run, noisy), half, latent.denoise(run, half), truth]
labels = ["15% flipped", "denoised", "lower half erased", "filled in", "truth"]
path = os.path.join(OUT, "denoising.png")
plots.image_rows(rows, labels, path, title="encode the damaged image, decode the posterior mean")
print(path)

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

# %% [markdown]
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
