# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Tutorial 8: discrete latents, enumeration and the semi-supervised VAE
#
# A latent variable need not be continuous. A class `y` next to the style `z` gives the
# semi-supervised VAE of Kingma, Rezende, Mohamed & Welling (2014), "M2":
#
# ```
# y ~ OneHotCategorical(1/K)      # the class, observed for the few labelled images
# z ~ Normal(0, I)                # the style
# x ~ Bernoulli(logits=dec(z, y)) # the image
# ```
#
# with the guide `q(y|x) q(z|x, y)`. The reparameterization trick does not apply to `y`: a class
# cannot be moved a little. In this tutorial we
#
# 1. check that Pyro's **parallel enumeration** computes the expectation over `y` exactly, as a
#    sum over the K classes;
# 2. measure how noisy the other ways to estimate the gradient are, the **score function** with
#    and without a baseline and the **Gumbel-softmax relaxation**, with the gradient-variance lab
#    on the discrete site;
# 3. train a model file with a discrete cluster each of the three ways (`--discrete`) and see
#    that the relaxation optimizes a *different* objective, while evaluation scores every run by
#    the same log p(x);
# 4. train M2 with 100 labels and compare its classifier q(y|x) with the same network trained on
#    the 100 labelled images alone.
#
# Figures are written to `tutorial-output/08/`.

# %%
import contextlib
import io
import json
import os

import matplotlib

matplotlib.use("Agg")
import pyro
import pyro.distributions as dist
import torch
from torch.nn import functional as F

import pyro_vae
from pyro_vae import cli, discrete, gradvar, semi

smoke_test = "CI" in os.environ  # the test suite runs every tutorial with tiny sizes
Z_DIM = 2 if smoke_test else 16
HIDDEN = (16,) if smoke_test else (256,)
EPOCHS = 1 if smoke_test else 8
DRAWS = 20 if smoke_test else 200  # gradient estimates per strategy
OUT = os.path.join("tutorial-output", "08")
os.makedirs(OUT, exist_ok=True)
data = pyro_vae.load_dataset("mnist-small")


def pyro_vae_cli(*args):
    """Run ``pyro-vae ARGS`` in this process; print the command and its one-line error, if any."""
    print("$ pyro-vae", " ".join(args))
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(list(args))
    if errors.getvalue():
        print(errors.getvalue().strip())
    return status


# %% [markdown]
# ## 1. Enumeration is exact marginalization
#
# For one image the ELBO of M2 is an expectation over both latents,
#
# $$\mathcal{L}(x) = \sum_{y} q(y|x)\, \mathbb{E}_{q(z|x,y)}\big[\log p(x, y, z) - \log q(y|x) - \log q(z|x,y)\big],$$
#
# and the sum over y has only K = 10 terms. Pyro's `TraceEnum_ELBO` with the guide's site marked
# `infer={"enumerate": "parallel"}` computes it with all K values at once in an extra tensor
# dimension, left of the data plate; pyro_vae marks the guide's discrete sites for you
# (`--discrete enumerate`, the default where the supports are small). We build an untrained M2 and
# do the sum by hand for four test images, one class at a time:

# %%
config = pyro_vae.Config(model="m2", labels=100, z_dim=Z_DIM, hidden_dims=HIDDEN)
pyro.set_rng_seed(0)
model, guide = pyro_vae.build(config, data.x_shape, 10, train_size=len(data.train_x))
x = data.test_x[:4]
inner_model, inner_guide = model.target, guide.target  # the ClassVAE and ClassGuide

S = 2000  # z samples per class
by_hand = torch.zeros(4)
log_q_y = inner_guide.classifier(x).log_softmax(-1).detach()
with torch.no_grad():
    for k in range(10):
        c = F.one_hot(torch.tensor([k] * 4), 10).float()
        q_z = dist.Normal(*inner_guide.encoder(x, c)).to_event(1)
        z = q_z.sample((S,))
        log_w = (
            inner_model.y_dist().log_prob(c)
            + inner_model.z_dist(c).log_prob(z)
            + inner_model.x_dist(z, c).log_prob(x)
            - q_z.log_prob(z)
        ).mean(0) - log_q_y[:, k]
        by_hand += log_q_y[:, k].exp() * log_w

enumerated = pyro_vae.elbo(model, guide, x, num_samples=S)
print("ELBO by hand, class by class:", by_hand.numpy().round(2))
print("ELBO with parallel enumeration:", enumerated.numpy().round(2))
assert torch.allclose(by_hand, enumerated, atol=0.5)

# %% [markdown]
# The two agree up to the Monte Carlo error in z. The same enumeration scores every run:
# `pyro_vae.log_px` sums every finite discrete site out exactly,
# $\log p(x) = \log \sum_y p(x, y)$, with z importance-sampled within each class, so runs trained
# by different estimators are compared on the same number.
#
# ## 2. Why the score function is noisy
#
# Without enumeration, a sample y ~ q(y|x) is drawn and the gradient of q(y|x)'s parameters comes
# from the score function, $\nabla \log q(y|x)$ times the rest of the ELBO (Williams 1992). The
# rest is hundreds of nats per image, so the estimate jumps with every draw; a baseline b(x)
# subtracted from it (Mnih & Gregor 2014) removes part of that. The relaxation replaces the
# one-hot y by a point of the simplex that a differentiable function of Gumbel noise produces
# (Jang et al. 2017; Maddison et al. 2017): a pathwise gradient, but of another objective.
#
# `discrete.gradient_draws` draws many gradients of the same minibatch by each strategy; we
# summarize them as the lab of tutorial 3 does (the total variance over the encoder's and the
# decoder's parameters), after a short training run so the networks mean something:

# %%
status = pyro_vae_cli(
    "train", "--model", "m2", "--labels", "100", "--alpha", "kingma", "--labelled-share", "none",
    "--z-dim", str(Z_DIM),
    "--hidden-dims", ",".join(map(str, HIDDEN)), "--epochs", str(EPOCHS),
    "--log-px-samples", "10", "--quiet", "--out", os.path.join(OUT, "m2"), "--overwrite",
)  # fmt: skip
assert status == 0
run = pyro_vae.load_run(os.path.join(OUT, "m2"))
batch = data.test_x[:32]
rows = []
for name in discrete.STRATEGIES:
    draws = discrete.gradient_draws(run.model, run.guide, batch, name, num_draws=DRAWS)
    rows.append({"strategy": name, **gradvar.summarize(draws)})
print(f"{'strategy':16s} {'encoder variance':>18s} {'decoder variance':>18s}")
for r in rows:
    print(f"{r['strategy']:16s} {r['encoder']['variance']:18.4g} {r['decoder']['variance']:18.4g}")
by_name = {r["strategy"]: r for r in rows}
enum, score, baselined, relaxed = (
    by_name[k]["encoder"]["variance"] for k in ("enumerate", "score", "score-baseline", "relaxed")
)
decoder = {k: r["decoder"]["variance"] for k, r in by_name.items()}
print(f"the score function's encoder gradient is {score / enum:.0f} times as variable")
print(
    f"its learned baseline cuts that {score / baselined:.1f}-fold; relaxed: {relaxed / enum:.1f}x"
)
sampled = min(decoder[k] for k in ("score", "score-baseline", "relaxed")) / decoder["enumerate"]
print(f"decoder: every estimator that samples y is at least {sampled:.1f}x enumeration's")
if not smoke_test:  # what the text below says
    assert score > 100 * enum, (score, enum)
    assert score > 5 * baselined > 5 * enum, (score, baselined, enum)
    assert enum < relaxed < baselined, (enum, relaxed, baselined)
    assert sampled > 4, decoder

# %% [markdown]
# Enumeration's draws vary only through z; the score function's, through y as well, and by
# orders of magnitude more for the encoder, which holds q(y|x) (in the full run, 5.3e4 against
# 162). The learned baseline, trained along with the run, cuts that about tenfold (to 5.6e3), yet
# it stays far above enumeration's. The relaxed estimator's lies between the two (about 8 times
# enumeration's), but it is the gradient of the relaxed model's ELBO, not of ours. The decoder's
# gradient is noisier too, about 8 times enumeration's for every estimator that samples y: a
# sampled class gives the decoder one class's image to fit, where enumeration weighs them all.
#
# ## 3. The same model file, three estimators
#
# `examples/cluster_vae.py` holds a VAE with a cluster c ~ OneHotCategorical(1/3) that is never
# observed. `--discrete` chooses the estimator; nothing in the file changes:

# %%
EXAMPLE = os.path.normpath(
    os.path.join(os.path.dirname(pyro_vae.__file__), "..", "examples", "cluster_vae.py")
)
if not os.path.exists(EXAMPLE):
    EXAMPLE = os.path.join("examples", "cluster_vae.py")  # run from a clone's root
assert os.path.exists(EXAMPLE), "this tutorial reads examples/cluster_vae.py: run it in a clone"
results = {}
for name in ("enumerate", "score", "relaxed"):
    out = os.path.join(OUT, f"cluster-{name}")
    status = pyro_vae_cli(
        "train", "--model", f"{EXAMPLE}:ClusterVAE", "--discrete", name, "--elbo", "trace",
        "--z-dim", str(Z_DIM), "--hidden-dims", ",".join(map(str, HIDDEN)),
        "--epochs", str(EPOCHS), "--log-px-samples", "10" if smoke_test else "100", "--quiet",
        "--out", out, "--overwrite",
    )  # fmt: skip
    assert status == 0
    with open(os.path.join(out, "metrics.json")) as f:
        results[name] = json.load(f)
print(f"{'--discrete':10s} {'train objective':>16s} {'test ELBO':>10s} {'test log p(x)':>14s}")
for name, m in results.items():
    print(f"{name:10s} {m['train_elbo']:16.2f} {m['test_elbo']:10.2f} {m['test_log_px']:14.2f}")

# %% [markdown]
# The first column is what each run optimized, averaged over its last epoch: the relaxed run's is
# the ELBO of the relaxed model, in which c is a point of the simplex with a concrete density, so
# it is not a bound on the discrete model's log p(x) and not comparable with the others. The test
# columns are the discrete model's ELBO and log p(x), with c summed out, the same computation for
# all three runs.
#
# ## 4. Semi-supervised learning: M2 against its own classifier alone
#
# With 100 labelled images and 3,900 unlabelled ones, M2 learns q(y|x) from both: from the
# labels through the labelled ELBO and, with Kingma et al.'s classification term
# `--alpha kingma` (0.1 N on the labelled images' mean: 0.1 N / 100 = 4 on each), directly; from
# the unlabelled images through the sum over y. The run of section 2 is this M2 as Kingma et al.
# wrote it, each image seen once per epoch (`--labelled-share none`); with no option but
# `--labels 100`, `pyro-vae train --model m2` trains the recipe of the discrete guide instead
# (the labelled images repeated to a third of every epoch, a larger weight on the classification
# term), which reaches about 0.75 on these digits.
# The baseline is q(y|x)'s network trained by cross-entropy on the 100 labelled images alone.
#
# We also print the run's **class effect**, the number `pyro-vae train` reports for M2: how much
# the decoded image depends on the class. It decodes 200 codes z ~ p(z) under every class and takes
# the share of the decoded pixels' variance that comes from changing the class at a fixed z: 0 when
# the decoder ignores y, 1 when y alone sets the image.

# %%
m2 = json.load(open(os.path.join(OUT, "m2", "metrics.json")))
data.labelled = pyro_vae.data.balanced_labels(data.train_y, 100, seed=0)
baseline = semi.baseline_classifier(data, HIDDEN, epochs=5 if smoke_test else 100)
print(f"M2 (enumeration + aux, {EPOCHS} epochs): test accuracy {m2['test_accuracy']:.3f}")
print(f"baseline classifier (100 labelled images):  test accuracy {baseline:.3f}")
print(f"class effect {m2['class_effect']:.3f} (share of the decoded pixels' variance due to y)")
print("analogies figure:", os.path.join(OUT, "m2", "analogies.png"))
if not smoke_test:  # what the text below says
    assert m2["test_accuracy"] < baseline - 0.1, (m2["test_accuracy"], baseline)
    assert m2["class_effect"] < 0.05, m2["class_effect"]

# %% [markdown]
# The analogies figure, `analogies.png` (Kingma et al.'s figure 1), takes the style z of a few test
# images and decodes it under every class: in a decoder that reads y, each row would be one
# handwriting and each column one digit. At this length of training it is not so: every row shows
# the same digit in every column, because the decoder ignores y and z carries the class (the run's
# class effect, printed above, says so: the full run's is 0.004). An unlabelled image's bound then
# pulls q(y|x) towards the uniform only, and M2 does worse than the baseline: 0.55 against 0.76 in
# the full run. The user guide's "Why M2 did no better than its baseline classifier" measures this
# and what changes it (`--labelled-share`).
#
# The table over several numbers of labels, with 95% intervals over draws of the labelled set, is
# `pyro-vae semi`; its measured numbers and commands are in the discrete guide
# (docs/guide/discrete.md, "Semi-supervised tables"). Here at a small size:

# %%
status = pyro_vae_cli(
    "semi", "--label-counts", "100", "--draws", "2", "--variants", "enumeration+aux,baseline",
    "--z-dim", str(Z_DIM), "--hidden-dims", ",".join(map(str, HIDDEN)),
    "--epochs", "1" if smoke_test else "4", "--log-px-samples", "1", "--quiet",
    "--out", os.path.join(OUT, "semi"), "--overwrite",
)  # fmt: skip
assert status == 0
for row in json.load(open(os.path.join(OUT, "semi", "semi.json")))["rows"]:
    print(
        f"{row['labels']:5d} labels  {row['variant']:18s} {row['mean']:.3f} +- {row['half_width']:.3f}"
    )
