"""Figures written into a run directory. Every function takes tensors and a path; none trains."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402


def _show_grid(ax, images, nrow):
    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()


def _save(fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def image_grid(images, path, title=None, nrow=10):
    """A grid of images ``(N, C, H, W)`` in [0, 1], ``nrow`` per row."""
    rows = -(-images.shape[0] // nrow)
    fig, ax = plt.subplots(figsize=(nrow * 0.6 + 0.4, rows * 0.6 + 0.6))
    _show_grid(ax, images, nrow)
    if title:
        ax.set_title(title, fontsize=10)
    _save(fig, path)


def reconstructions(originals, reconstructed, path, title="originals (top) and reconstructions"):
    """Originals in the upper row of each pair, their reconstructions below."""
    n = originals.shape[0]
    nrow = min(n, 10)
    pairs = []
    for start in range(0, n, nrow):
        pairs += [originals[start : start + nrow], reconstructed[start : start + nrow]]
    image_grid(torch.cat(pairs), path, title=title, nrow=nrow)


def latent_scatter(codes, labels, path, title="posterior means of the test images"):
    """Posterior means coloured by label; their first two principal components when z_dim > 2."""
    codes = codes.detach().cpu().float()
    if codes.shape[1] > 2:
        centred = codes - codes.mean(0)
        _, s, v = torch.linalg.svd(centred, full_matrices=False)
        points = centred @ v[:2].T
        explained = (s[:2] ** 2).sum() / (s**2).sum()
        xlabel, ylabel = "principal component 1", "principal component 2"
        title = f"{title}\n(first two principal components, {100 * explained:.0f}% of the variance)"
    else:
        points = codes if codes.shape[1] == 2 else torch.cat([codes, torch.zeros_like(codes)], 1)
        xlabel, ylabel = "z[0]", "z[1]" if codes.shape[1] == 2 else ""
    fig, ax = plt.subplots(figsize=(6, 5))
    sc = ax.scatter(
        points[:, 0],
        points[:, 1],
        c=labels.cpu(),
        cmap="tab10",
        s=6,
        alpha=0.8,
        vmin=-0.5,
        vmax=9.5,
    )
    fig.colorbar(sc, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def training_curve(history, path, log_px=None):
    """Train and test ELBO per epoch (nats per image), and the final test log p(x) if given."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(history["epoch"], history["train_elbo"], label="train ELBO (minibatch average)")
    ax.plot(history["epoch"], history["test_elbo"], label="test ELBO")
    if log_px is not None:
        ax.axhline(log_px, color="k", ls="--", lw=1, label=f"test log p(x) = {log_px:.2f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("nats per image (higher is better)")
    lows = [v for v in history["test_elbo"] + history["train_elbo"]]
    if len(lows) > 4:  # the first epochs would squash the interesting part of the curve
        ax.set_ylim(sorted(lows)[len(lows) // 10] - 5, max(lows + [log_px or -1e9]) + 5)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def score_histograms(scores_in, scores_out, labels, path, title, names=("in", "out")):
    """One panel per anomaly score: histograms of the in- and out-of-distribution scores.

    :param dict scores_in: score name -> tensor; ``scores_out`` likewise.
    :param dict labels: score name -> axis label; the AUROC goes in each panel's title if given as
        ``labels[name] = (label, auroc)``.
    """
    keys = [k for k in scores_in if k in scores_out]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys):
        a, b = scores_in[key].detach().cpu(), scores_out[key].detach().cpu()
        both = torch.cat([a, b])
        lo, hi = both.quantile(0.005).item(), both.quantile(0.995).item()
        bins = torch.linspace(lo, hi, 41).numpy()
        ax.hist(a.clamp(lo, hi).numpy(), bins=bins, alpha=0.6, density=True, label=names[0])
        ax.hist(b.clamp(lo, hi).numpy(), bins=bins, alpha=0.6, density=True, label=names[1])
        label, value = labels[key]
        ax.set_xlabel(f"{label}, nats")
        ax.set_title(f"AUROC {value:.3f}", fontsize=10)
        ax.set_yticks([])
    axes[0][0].set_ylabel("density")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def gradient_variance(rows, path, title="gradient variance of the ELBO estimators"):
    """Total gradient variance against the number of particles, encoder and decoder side by side.

    Colours are estimators, line styles training stages.

    :param list rows: :func:`pyro_vae.gradvar.measure_stages` rows (with a ``"stage"`` key).
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    stages = list(dict.fromkeys(r["stage"] for r in rows))
    estimators = list(dict.fromkeys(r["estimator"] for r in rows))
    particles = sorted({r["num_particles"] for r in rows})
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, group in zip(axes, ("encoder", "decoder")):
        for i, name in enumerate(estimators):
            for j, stage in enumerate(stages):
                sel = [r for r in rows if r["estimator"] == name and r["stage"] == stage]
                ax.plot(
                    [r["num_particles"] for r in sel],
                    [r[group]["variance"] for r in sel],
                    styles[j % len(styles)],
                    marker="o",
                    ms=4,
                    color=f"C{i}",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_major_locator(FixedLocator(particles))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("particles per image (K)")
        ax.set_ylabel("total variance of the gradient")
        ax.grid(alpha=0.3)
    axes[0].set_title("encoder (guide) parameters", fontsize=10)
    axes[1].set_title(
        "decoder (model) parameters\n(the same for every estimator without a baseline)", fontsize=10
    )
    handles = [Line2D([], [], color=f"C{i}", marker="o", ms=4) for i in range(len(estimators))]
    axes[0].legend(handles, estimators, fontsize=8, loc="upper right")
    if len(stages) > 1:
        handles = [
            Line2D([], [], color="k", ls=styles[j % len(styles)]) for j in range(len(stages))
        ]
        axes[1].legend(handles, stages, fontsize=8, loc="upper right", handlelength=3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def image_rows(rows, labels, path, title=None):
    """Rows of images, each ``(n, C, H, W)``, with a label to the left of each row."""
    ncol = max(r.shape[0] for r in rows)
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(ncol * 0.62 + 1.6, len(rows) * 0.7 + 0.5), squeeze=False
    )
    for ax, row, label in zip(axes[:, 0], rows, labels):
        _show_grid(ax, row, row.shape[0])
        ax.text(-0.01, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)
