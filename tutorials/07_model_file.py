# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Tutorial 7: writing your own Pyro model file
#
# The built-in model family covers the usual variants, but the point of writing VAEs in Pyro is
# that a new model is a new Python function, not a new loss. `pyro-vae` trains, evaluates and
# compares a model written the way Pyro's own documentation writes one, loaded from a file as it
# is:
#
# ```bash
# pyro-vae train --model my_model.py:VAE       # a class whose objects have .model and .guide
# pyro-vae train --model my_model.py           # module-level functions model(x) and guide(x)
# ```
#
# In this tutorial we
#
# 1. take a VAE written in plain Pyro (an `nn.Module` with `model(x)` and `guide(x)` methods,
#    `pyro.module` registrations, its own site names, flattened pixels) and let `pyro-vae inspect`
#    show what the library learns from running it;
# 2. write a model with a different prior, the **VampPrior** (Tomczak & Welling 2018), using the
#    library's optional extras;
# 3. train both and the built-in VAE with the same command line and compare their test log p(x);
# 4. break a file on purpose, three ways, and read what the command line says.
#
# Figures and files are written to `tutorial-output/07/`.

# %%
import contextlib
import io
import json
import os
import shutil

import matplotlib

matplotlib.use("Agg")
import pyro_vae
from pyro_vae import cli, plots

smoke_test = "CI" in os.environ  # the test suite runs every tutorial with tiny sizes
Z_DIM = 4 if smoke_test else 20
HIDDEN = "32" if smoke_test else "400"
EPOCHS = 1 if smoke_test else 40
K = 10 if smoke_test else 1000  # importance samples for the test log p(x)
OUT = os.path.join("tutorial-output", "07")
os.makedirs(OUT, exist_ok=True)


def pyro_vae_cli(*args):
    """Run ``pyro-vae ARGS`` as from a shell, in this process (the console script calls the same
    ``pyro_vae.cli.main``); print the command, its output and, on failure, its one-line error."""
    print("$ pyro-vae", " ".join(args))
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        status = cli.main(list(args))
    if errors.getvalue():
        print(errors.getvalue().strip())
    print(f"(exit status {status})\n")
    return status


# %% [markdown]
# ## 1. A VAE written in plain Pyro, used as it is
#
# `examples/pyro_style_vae.py` holds a VAE as a Pyro user writes one, with nothing of pyro_vae in
# it: the networks live in an `nn.Module`, its `model(x)` registers the decoder with
# `pyro.module("decoder", ...)`, samples a latent site it calls `"latent"` and observes the
# flattened pixels at a site it calls `"obs"`, all inside `pyro.plate("data", x.shape[0])`. Its
# `guide(x)` does the same with the encoder:

# %%
EXAMPLE = os.path.normpath(
    os.path.join(os.path.dirname(pyro_vae.__file__), "..", "examples", "pyro_style_vae.py")
)
if not os.path.exists(EXAMPLE):
    EXAMPLE = os.path.join("examples", "pyro_style_vae.py")  # run from a clone's root
assert os.path.exists(EXAMPLE), "this tutorial reads examples/pyro_style_vae.py: run it in a clone"
with open(EXAMPLE) as f:
    source = f.read()
print(source[source.index("class VAE") :])
NATIVE = f"{EXAMPLE}:VAE"

# %% [markdown]
# Nothing in it follows a convention of the library's. Instead, pyro_vae runs the guide and then
# the model (replayed on the guide's samples) on a few images under `poutine.trace`, as Pyro's
# autoguides do, and reads the structure off the traces: which site observed the images, which
# sites are latent and their shapes, which plate runs over the images and whether the program
# subsamples it itself, whether the model wants images flattened, and where its parameters live.
# `pyro-vae inspect` prints the traces' sites and what was learned:

# %%
common = ["--z-dim", str(Z_DIM), "--hidden-dims", HIDDEN]
status = pyro_vae_cli("inspect", NATIVE, *common, "--diagram", "none")
assert status == 0

# %% [markdown]
# The last lines are the door's findings. The image site is `"obs"`; the only latent site,
# `"latent"`, is the one the figures show; the plate `"data"` is **not subsampled**, so when
# training on minibatches pyro_vae scales every site inside it by (data set size / batch size),
# which is what `pyro.plate("data", N, subsample=idx)` would have done. The class is called with
# the arguments its signature shares with the command line (`z_dim` here); `hidden_dim` keeps its
# default, which is why `--hidden-dims` does not reach it.
#
# The parameters are found by following the autograd graph of each half's log-density: the
# decoder's belong to the model, the encoder's to the guide, even though both live in one
# `nn.Module`. Checkpoints hold them under the module's own names, and `--resume` continues such
# a run bit for bit like any other.

# %% [markdown]
# ## 2. The optional extras: a model with a prior made of the encoder's own posteriors
#
# A VAE's KL term pulls every q(z|x) towards the prior N(0, I). But what prior would be best? The
# ELBO, averaged over the training set, is maximised over p(z) by the *aggregate posterior*, the
# average of q(z|x_i) over all N training images: a mixture of N Gaussians. That is too many
# components and would memorise the training set, so the VampPrior ("variational mixture of
# posteriors") keeps only K of them, at K **pseudo-images** u_k that are learned like any other
# parameter:
#
# ```
# u_1, ..., u_K                     # learned pseudo-images (parameters, not data)
# z ~ (1/K) Σ_k q(z | u_k)          # the prior: the encoder's posteriors of the pseudo-images
# x ~ Bernoulli(logits=dec(z))      # as before
# ```
#
# The encoder now appears in the model too: the model and the guide *share* it. In the file below
# that is one line: the same `MLPEncoder` object is handed to both.
#
# This file uses what the library offers on top of plain Pyro, all of it optional
# (`pyro_vae/modelfile.py` lists the ways a file may be written):
#
# * the class is called as `VampPriorVAE(x_shape=(C, H, W), z_dim=..., hidden_dims=(...))`, so
#   `--z-dim` and `--hidden-dims` size its networks and it fits any image size;
# * the library's networks (`MLPEncoder`, `MLPDecoder`) and its amortized guide;
# * `pyro_vae.data_plate(x, idx, size)` with the signature `model(x=None, y=None, idx=None,
#   size=None)`: the program subsamples its own plate (the door sees it and scales nothing), and
#   with `x=None` it can generate `size` images on its own;
# * `z_dist` and `x_dist` methods, as the built-in model has, for code that wants the
#   distributions themselves (pyro_vae's commands do not need them).
#
# Here is the whole file:

# %%
MODEL_FILE = '''"""A VAE with a VampPrior (Tomczak & Welling 2018), written by tutorial 7.

    z ~ (1/K) sum_k q(z | u_k)       # u_k: K learned pseudo-images
    x ~ Bernoulli(logits=dec(z))
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from pyro_vae import AmortizedGuide, MLPDecoder, MLPEncoder, data_plate


class VampPriorModel(PyroModule):
    def __init__(self, x_shape, z_dim, hidden_dims, encoder, components=50):
        super().__init__()
        self.x_shape, self.z_dim = tuple(x_shape), z_dim
        self.encoder = encoder  # the guide's encoder, shared
        self.decoder = MLPDecoder(x_shape, z_dim, list(hidden_dims)[::-1])
        self.pseudo_logits = torch.nn.Parameter(0.1 * torch.randn(components, *x_shape))

    def z_dist(self, y=None):
        loc, scale = self.encoder(self.pseudo_logits.sigmoid())  # q(z | u_k), each (K, z_dim)
        mixing = dist.Categorical(logits=torch.zeros(loc.shape[0]))
        return dist.MixtureSameFamily(mixing, dist.Normal(loc, scale).to_event(1))

    def x_dist(self, z, y=None):
        return dist.Bernoulli(logits=self.decoder(z)).to_event(len(self.x_shape))

    def forward(self, x=None, y=None, idx=None, size=None):
        with data_plate(x, idx, size):
            z = pyro.sample("z", self.z_dist())
            return pyro.sample("x", self.x_dist(z), obs=x)


class VampPriorVAE:
    def __init__(self, x_shape, z_dim, hidden_dims):
        encoder = MLPEncoder(x_shape, z_dim, list(hidden_dims))
        self.guide = AmortizedGuide(encoder)
        self.model = VampPriorModel(x_shape, z_dim, hidden_dims, encoder)
'''
model_path = os.path.join(OUT, "vamp_prior_vae.py")
with open(model_path, "w") as f:
    f.write(MODEL_FILE)
MODEL = f"{model_path}:VampPriorVAE"
print("wrote", model_path)

# %% [markdown]
# Three things the file does not do. It has no loss: Pyro derives the ELBO from the model and
# the guide. It has no KL formula: the KL between a Gaussian and a mixture has no closed form, so
# the ELBO estimates log p(z) − log q(z|x) from the sampled z (`--elbo trace` says so; the default
# mean-field ELBO would fall back to the same estimate). And it has no evaluation code: the
# library's importance sampling scores any model/guide pair.
#
# ### Shapes and the plate diagram: `pyro-vae inspect`
#
# Before training, check the shapes. `inspect` runs the guide, then the model on the guide's
# samples, for a batch of test images, and prints every sample site; it also draws the model
# with `pyro.render_model` (when Graphviz is installed).

# %%
diagram = os.path.join(OUT, "vamp-prior-model.png")
if os.path.exists(diagram):
    os.remove(diagram)  # inspect does not replace a file it did not write
has_graphviz = shutil.which("dot") is not None
status = pyro_vae_cli("inspect", MODEL, *common, "--diagram", diagram if has_graphviz else "none")
assert status == 0

# %% [markdown]
# Read the table column by column. Both programs sample `"z"` with batch shape `(4,)`, one code per
# image of the batch, and event shape `(z_dim,)`: the model's `"z"` is a `MixtureSameFamily` whose
# components have no batch dimension of their own, broadcast across the plate. `"x"` is observed
# with batch shape `(4,)` and event shape `(1, 28, 28)`: one log-probability per image. The plate
# `"data"` has dim −1, the rightmost batch dimension. In the diagram, `vamp-prior-model.png`, `z`
# and `x` sit inside the `data` plate, one pair per image; the pseudo-images and the networks'
# weights are parameters, not sample sites, so they do not appear.
#
# ## 3. Training and comparing through the command line
#
# Now train the plain-Pyro VAE, the VampPrior model and the built-in VAE with identical
# settings. Each run writes a run directory with `metrics.json` (test ELBO and importance-sampled
# log p(x)) and figures.

# %%
settings = [*common, "--epochs", str(EPOCHS), "--log-px-samples", str(K), "--quiet"]
run_dirs = {
    "plain Pyro (model file)": os.path.join(OUT, "runs", "pyro-style"),
    "VampPrior (model file)": os.path.join(OUT, "runs", "vamp-prior"),
    "built-in VAE, N(0, I) prior": os.path.join(OUT, "runs", "vae"),
}
for (name, out), model in zip(run_dirs.items(), (NATIVE, MODEL, "vae")):
    status = pyro_vae_cli(
        "train", "--model", model, "--elbo", "trace", *settings, "--out", out, "--overwrite"
    )
    assert status == 0, f"training {name} failed"

# %% [markdown]
# The runs can be loaded back with `pyro_vae.load_run` like any other (the model file's absolute
# path is saved in `config.json`), so we compare them from their `metrics.json` and decode prior
# samples from both.

# %%
print(f"{'model':30} {'test ELBO':>10} {'test log p(x)':>18} {'train s':>8}")
samples, labels = [], []
for name, out in run_dirs.items():
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    print(
        f"{name:30} {m['test_elbo']:10.2f} {m['test_log_px']:10.2f} ± "
        f"{m['test_log_px_stderr']:5.2f} {m['seconds']:8.1f}"
    )
    run = pyro_vae.load_run(out)
    draws = run.sample(20, seed=0)
    samples += [draws[:10], draws[10:]]
    labels += [name, ""]
path = os.path.join(OUT, "samples.png")
plots.image_rows(samples, labels, path, "decoder means for z drawn from each model's prior")
print(path)

# %% [markdown]
# `samples.png` decodes twenty draws from each model's prior, two rows per model.
#
# The table is the honest comparison: same data, same networks, same epochs and the same evaluation;
# only the prior differs. Read the difference against the standard errors, and remember that one
# seed and one training budget decide it here. The VampPrior also has 50 pseudo-images' worth of
# extra parameters (50 × 784) that can overfit: compare the train ELBO in each run's `metrics.json`
# with the test ELBO too. `pyro-vae evaluate RUN` works on these runs as on any other, and so does
# `pyro-vae compare --run RUN` on every latent site the library found by running the file's model
# and guide once (the per-image guides are built from the discovered sites, not from `z_dist`);
# NUTS, though, refuses the VampPrior model: it moves in an unconstrained space, and torch has no
# map onto a mixture's support. The plain-Pyro VAE and the built-in VAE have the same networks
# (784-400-latent with softplus), so their rows should agree within a few standard errors.
#
# ## 4. What the command line says for a broken file
#
# Three mistakes people make, written as edits of the file above. Before training, `pyro-vae`
# runs the model and guide on four test images and names the first broken rule in one line (exit
# status 1), instead of a Pyro traceback from deep inside the ELBO.

# %%
BROKEN = {
    # The image's distribution without .to_event: 784 independent sites per image instead of one.
    "no-to-event": (".to_event(len(self.x_shape))", ""),
    # The image sampled but not observed: no site of the model sees the data.
    "no-obs": ('pyro.sample("x", self.x_dist(z), obs=x)', 'pyro.sample("x", self.x_dist(z))'),
    # A typo in an import: the file does not even load.
    "bad-import": ("from pyro_vae import", "from pyro_vea import"),
}
for name, (old, new) in BROKEN.items():
    assert old in MODEL_FILE
    path = os.path.join(OUT, f"broken_{name.replace('-', '_')}.py")
    with open(path, "w") as f:
        f.write(MODEL_FILE.replace(old, new))
    status = pyro_vae_cli(
        "train",
        "--model",
        f"{path}:VampPriorVAE",
        *settings,
        "--out",
        os.path.join(OUT, "runs", "broken"),
        "--overwrite",
    )
    assert status == 1

# %% [markdown]
# Each message points at the line to change: the `.to_event(...)` that makes the image one
# event, the `obs=x` that ties the image site to the data, the module that failed to import. The same check
# runs in `pyro-vae inspect`, and from Python as `pyro_vae.check_protocol(model, guide, x)`.
#
# **What to take away.** A new model is a file with a model and a guide: Pyro derives the ELBO,
# the library trains it, scores it by importance sampling and compares it with any other model
# through the same commands. The numbers to trust: the two test log p(x) above, measured the same
# way on the same test images.
