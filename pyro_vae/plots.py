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


def image_rows(rows, path, title=None):
    """Labelled rows of images: ``rows`` is a list of ``(label, images (N, C, H, W))``."""
    n = rows[0][1].shape[0]
    fig, axes = plt.subplots(len(rows), 1, figsize=(n * 0.6 + 1.2, len(rows) * 0.65 + 0.8))
    for ax, (label, images) in zip(axes, rows):
        _show_grid(ax, images, n)
        ax.text(-0.01, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)
