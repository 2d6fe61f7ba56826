"""Figures written into a run directory. Every function takes tensors and a path; none trains."""

import math
import os

import torch


def _show_grid(ax, images, nrow):
    from torchvision.utils import make_grid  # here: importing torchvision takes seconds

    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=2, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()


def _subplots(*grid, figsize, **options):
    """A figure and its axes, as ``pyplot.subplots`` gives them, but a plain matplotlib
    ``Figure`` drawn by Agg: no pyplot state and no change of the user's backend, and matplotlib
    imported only when a figure is drawn (it takes most of a second)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(*grid, **options)


def _colormap(name):
    import matplotlib

    return matplotlib.colormaps[name]


def _save(fig, path):
    """Write the figure as every file of a run is written (atomically, beside ``path``, then
    moved into place): a link at ``path`` is replaced, never written through, so a figure never
    overwrites a user's file that a link in a run directory points to."""
    from .checkpoints import _atomic_write

    ext = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    _atomic_write(path, lambda f: fig.savefig(f, format=ext, dpi=110, bbox_inches="tight"))


def image_grid(images, path, title=None, nrow=10):
    """A grid of images ``(N, C, H, W)`` in [0, 1], ``nrow`` per row."""
    rows = -(-images.shape[0] // nrow)
    fig, ax = _subplots(figsize=(nrow * 0.6 + 0.4, rows * 0.6 + 0.6))
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


def latent_scatter(codes, labels, path, title="posterior means of the test images", names=None):
    """Posterior means coloured by label; their first two principal components when z_dim > 2.

    Up to 20 classes get a legend with one colour and name each (``names[label]``, default the
    label itself); more get a continuous colour bar over the labels.
    """
    codes = codes.detach().cpu().float()
    labels = labels.detach().cpu().long()
    if codes.shape[1] > 2:
        centred = codes - codes.mean(0)
        _, s, v = torch.linalg.svd(centred, full_matrices=False)
        points = centred @ v[:2].T  # one image (a test split of one) has one direction only
        points = torch.cat([points, torch.zeros(len(points), 2 - points.shape[1])], 1)
        total = (s**2).sum()
        share = (
            f"{100 * (s[:2] ** 2).sum() / total:.0f}% of the variance"
            if total > 0
            else "the codes do not vary"
        )
        xlabel, ylabel = "principal component 1", "principal component 2"
        title = f"{title}\n(first two principal components, {share})"
    else:
        points = codes if codes.shape[1] == 2 else torch.cat([codes, torch.zeros_like(codes)], 1)
        xlabel, ylabel = "z[0]", "z[1]" if codes.shape[1] == 2 else ""
    present = labels.unique().tolist()
    fig, ax = _subplots(figsize=(6, 5))
    if len(present) <= 20:
        colours = _colormap("tab10" if len(present) <= 10 else "tab20")
        for i, label in enumerate(present):
            chosen = labels == label
            name = names[label] if names is not None and label < len(names) else label
            ax.scatter(*points[chosen].T, color=colours(i), s=6, alpha=0.8, label=str(name))
        ax.legend(
            title="label",
            fontsize=8,
            markerscale=2.5,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncol=2 if len(present) > 10 else 1,
        )
    else:
        sc = ax.scatter(*points.T, c=labels, cmap="viridis", s=6, alpha=0.8)
        fig.colorbar(sc, ax=ax, label=f"label ({len(present)} classes)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    _save(fig, path)


def training_curve(history, path, log_px=None, train_label="train ELBO (minibatch average)"):
    """Train and test ELBO per epoch (nats per image), and the final test log p(x) if given.

    ``train_label`` names what the per-epoch train value is: with a beta or a KL warm-up it is the
    weighted objective, not the ELBO. Test values of ``None`` (a per-image guide is tested after
    the last epoch only) are left out.
    """
    from matplotlib.ticker import MaxNLocator

    fig, ax = _subplots(figsize=(6, 4))
    epochs = history["epoch"]
    test = [(e, v) for e, v in zip(epochs, history["test_elbo"]) if v is not None]
    marker = "o" if len(epochs) < 30 else None  # one epoch is one point, not an empty line
    ax.plot(epochs, history["train_elbo"], marker=marker, ms=3, label=train_label)
    if test:
        ax.plot(*zip(*test), marker=marker if len(test) > 1 else "o", ms=3, label="test ELBO")
    values = list(history["train_elbo"]) + [v for _, v in test]
    if log_px is not None:
        ax.axhline(log_px, color="k", ls="--", lw=1, label=f"test log p(x) = {log_px:.2f}")
        values.append(log_px)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("nats per image (higher is better)")
    if len(values) > 4:  # the first epochs would squash the interesting part of the curve
        low = sorted(values)[len(values) // 10]
        if log_px is not None:
            low = min(low, log_px)
        ax.set_ylim(low - 5, max(values) + 5)
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


# Figures of pyro_vae.compare: one model, several inference strategies.

STRATEGY_COLOURS = {
    "amortized": "tab:blue",
    "local": "tab:orange",
    "semi-amortized": "tab:green",
    "delta": "tab:red",
    "mcmc": "k",
}


def strategy_bars(rows, path, log_px_line=None, title="test split"):
    """Test ELBO and test log p(x) per strategy, with standard errors; delta's objective hatched.

    The bars rise from a common floor below the lowest value (nats have no natural zero).
    """
    entries = []  # (position, value, stderr, colour, light, hatch)
    for i, row in enumerate(rows):
        colour = STRATEGY_COLOURS.get(row["strategy"], "grey")
        delta = row["strategy"] == "delta"
        for key, offset, light in (("test_elbo", -0.2, True), ("test_log_px", 0.2, False)):
            if row.get(key) is not None:
                hatch = "///" if delta else None
                entries.append(
                    (i + offset, row[key], row.get(f"{key}_stderr"), colour, light, hatch)
                )
    line = [log_px_line] if log_px_line is not None else []
    lo = min([e[1] - (e[2] or 0) for e in entries] + line)
    hi = max([e[1] + (e[2] or 0) for e in entries] + line)  # the labels sit on the error bars
    floor = lo - 0.25 * (hi - lo) - 2
    fig, ax = _subplots(figsize=(1.7 * len(rows) + 2, 4.2))
    for pos, value, stderr, colour, light, hatch in entries:
        ax.bar(
            pos,
            value - floor,
            bottom=floor,
            width=0.38,
            color=colour,
            alpha=0.45 if light else 1.0,
            hatch=hatch,
            edgecolor="k",
            yerr=stderr,
            capsize=3,
        )
        ax.annotate(
            f"{value:.1f}",
            (pos, value + (stderr or 0)),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    if log_px_line is not None:
        ax.axhline(
            log_px_line, color="k", ls="--", lw=1, label=f"exact log p(x) = {log_px_line:.2f}"
        )
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(range(len(rows)), [r["strategy"] for r in rows])
    ax.set_ylim(floor, hi + 0.15 * (hi - lo) + 1.5)
    ax.set_ylabel("nats per image (higher is better)")
    delta = any(r["strategy"] == "delta" for r in rows)
    ax.set_title(
        f"{title}: ELBO (left, light) and importance-sampled log p(x) (right, dark)"
        + ("\ndelta (hatched): log p(x, z_MAP), which is not a bound on log p(x)" if delta else ""),
        fontsize=9,
    )
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def e_step_curves(curves, path, amortized_elbo=None, title="E-step on the test images"):
    """Each E-step's minibatch ELBO against its step count; the amortized ELBO as a line."""
    fig, ax = _subplots(figsize=(6, 4))
    ends = []
    for name, values in curves.items():
        label = "delta: log p(x, z), no bound" if name == "delta" else name
        ax.plot(range(1, len(values) + 1), values, color=STRATEGY_COLOURS.get(name), label=label)
        ends += values[len(values) // 3 :]
    if amortized_elbo is not None:
        ax.axhline(
            amortized_elbo,
            color=STRATEGY_COLOURS["amortized"],
            ls="--",
            label=f"amortized encoder: {amortized_elbo:.2f}",
        )
        ends.append(amortized_elbo)
    if ends:  # the first steps from the prior would squash the converged part
        ax.set_ylim(min(ends) - 5, max(ends) + 3)
    ax.set_xscale("log")
    ax.set_xlabel("E-step (Adam steps with the decoder frozen)")
    ax.set_ylabel("ELBO, nats per image")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def _ellipse(ax, loc, scale, colour, label):
    from matplotlib.patches import Ellipse

    # Two standard deviations: about 86% of a 2-D Gaussian's mass.
    ax.add_patch(
        Ellipse(
            loc.tolist(),
            4 * scale[0].item(),
            4 * scale[1].item(),
            fill=False,
            color=colour,
            lw=1.6,
            label=label,
        )
    )
    ax.plot(*loc.tolist(), "+", color=colour, ms=8)


FAMILY_COLOURS = {"diag": "tab:purple", "fullcov": "tab:olive", "flow": "tab:cyan"}


def posteriors_2d(grid, qs, images, path, samples=None, densities=None, title=None):
    """True posterior contours (grid) per image with each q's 2-sd ellipse and MCMC samples.

    :param grid: a :class:`pyro_vae.inference.GridPosterior` for ``images``.
    :param dict qs: strategy name -> ``(loc, scale)`` tensors ``(N, 2)`` (scale ``None``: a point).
    :param samples: MCMC samples ``(S, N, 2)`` or ``None``.
    :param dict densities: guide family -> log q* on the grid ``(N, P, P)``, each drawn as the
        contour at ``exp(-2)`` of its peak (a Gaussian's 2-sd ellipse), or ``None``.
    """
    from matplotlib.lines import Line2D

    n = images.shape[0]
    fig, axes = _subplots(1, n, figsize=(3.6 * n, 3.9), squeeze=False)
    mean, std = grid.moments()
    for i, ax in enumerate(axes[0]):
        density = grid.log_post[i].exp().T.numpy()  # rows: z2, columns: z1
        ax.contourf(grid.z1.numpy(), grid.z2.numpy(), density, levels=12, cmap="Greys")
        if samples is not None:
            s = samples[:, i].numpy()
            ax.plot(s[:, 0], s[:, 1], ".", color="k", ms=2, alpha=0.5, label="NUTS samples")
        for name, (loc, scale) in qs.items():
            colour = STRATEGY_COLOURS.get(name, "grey")
            if scale is None:
                ax.plot(*loc[i].tolist(), "x", color=colour, ms=9, mew=2, label=name)
            else:
                _ellipse(ax, loc[i], scale[i], colour, name)
        for name, log_q in (densities or {}).items():
            q = (log_q[i] - log_q[i].max()).exp().T.numpy()
            z1, z2 = grid.z1.numpy(), grid.z2.numpy()
            ax.contour(z1, z2, q, levels=[math.exp(-2)], colors=FAMILY_COLOURS[name])
            # contour sets have no legend entry of their own
            ax.add_line(Line2D([], [], color=FAMILY_COLOURS[name], label=f"q*_{name}"))
        reach = 4 * std[i].max().item() + 0.05
        centre = mean[i].tolist()
        ax.set_xlim(centre[0] - reach, centre[0] + reach)
        ax.set_ylim(centre[1] - reach, centre[1] + reach)
        ax.set_aspect("equal")
        ax.set_xlabel("z[0]")
        ax.set_ylabel("z[1]" if i == 0 else "")
        ax.set_title(f"test image {i}: log p(x) = {grid.log_px[i]:.2f}", fontsize=9)
        if images.dim() >= 3:  # show the image itself in a corner
            inset = ax.inset_axes([0.0, 0.75, 0.25, 0.25])
            inset.imshow(images[i].reshape(images.shape[-2], -1).numpy(), cmap="gray_r")
            inset.set_axis_off()
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.suptitle(
        title or "true posterior p(z|x) (grey, grid) and each q (2-sd ellipses)", fontsize=10
    )
    _save(fig, path)


def posterior_dims(mcmc_mean, mcmc_std, qs, path, dims=10, title=None):
    """Per-dimension posterior mean +- sd: NUTS against each q, one panel per image.

    :param dict qs: strategy name -> ``(loc, scale)`` tensors ``(N, z_dim)`` (scale ``None``: a point).
    """
    n = mcmc_mean.shape[0]
    dims = min(dims, mcmc_mean.shape[1])
    fig, axes = _subplots(n, 1, figsize=(7, 2.3 * n), squeeze=False, sharex=True)
    width = 0.8 / (len(qs) + 1)
    for i, ax in enumerate(axes[:, 0]):
        ax.errorbar(
            torch.arange(dims) - 0.4 + width / 2,
            mcmc_mean[i, :dims],
            mcmc_std[i, :dims],
            fmt="o",
            color="k",
            ms=3,
            capsize=2,
            label="NUTS",
        )
        for j, (name, (loc, scale)) in enumerate(qs.items(), 1):
            ax.errorbar(
                torch.arange(dims) - 0.4 + (j + 0.5) * width,
                loc[i, :dims],
                None if scale is None else scale[i, :dims],
                fmt="o",
                color=STRATEGY_COLOURS.get(name, "grey"),
                ms=3,
                capsize=2,
                label=name,
            )
        ax.set_ylabel(f"image {i}\nz (mean ± sd)", fontsize=8)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        fontsize=8,
        ncol=len(qs) + 1,
        loc="lower center",
        bbox_to_anchor=(0.5, -0.04),
    )
    axes[-1, 0].set_xticks(range(dims))
    axes[-1, 0].set_xlabel(f"latent dimension (first {dims})")
    fig.suptitle(title or "posterior mean ± sd per dimension: NUTS against each q", fontsize=10)
    _save(fig, path)


def score_histograms(scores_in, scores_out, labels, path, title, names=("in", "out")):
    """One panel per anomaly score: histograms of the in- and out-of-distribution scores.

    :param dict scores_in: score name -> tensor; ``scores_out`` likewise.
    :param dict labels: score name -> axis label; the AUROC goes in each panel's title if given as
        ``labels[name] = (label, auroc)``.
    """
    keys = [k for k in scores_in if k in scores_out]
    fig, axes = _subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
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


def _log_x_at(ax, values):
    """A logarithmic x axis ticked at ``values`` alone, in plain numbers."""
    from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(values))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())


def gradient_variance(rows, path, title="gradient variance of the ELBO estimators"):
    """Total gradient variance against the number of particles, encoder and decoder side by side.

    Colours are estimators, line styles training stages.

    :param list rows: :func:`pyro_vae.gradvar.measure_stages` rows (with a ``"stage"`` key).
    """
    from matplotlib.lines import Line2D

    stages = list(dict.fromkeys(r["stage"] for r in rows))
    estimators = list(dict.fromkeys(r["estimator"] for r in rows))
    particles = sorted({r["num_particles"] for r in rows})
    styles = ["-", "--", ":", "-."]
    fig, axes = _subplots(1, 2, figsize=(11, 4.4))
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
        _log_x_at(ax, particles)
        ax.set_yscale("log")
        ax.set_xlabel("particles per image (K)")
        ax.set_ylabel("total variance of the gradient")
        ax.grid(alpha=0.3)
    axes[0].set_title("encoder (guide) parameters", fontsize=10)
    axes[1].set_title(
        "decoder (model) parameters\n(the same for every estimator without a baseline)", fontsize=10
    )
    # The legends go below the panels: inside, they cover some estimator's line.
    handles = [Line2D([], [], color=f"C{i}", marker="o", ms=4) for i in range(len(estimators))]
    labels = list(estimators)
    if len(stages) > 1:
        handles += [
            Line2D([], [], color="k", ls=styles[j % len(styles)]) for j in range(len(stages))
        ]
        labels += list(stages)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.legend(
        handles,
        labels,
        fontsize=8,
        loc="lower center",
        ncol=min(len(labels), 4),
        handlelength=3,
        frameon=False,
    )
    _save(fig, path)


def image_rows(rows, labels, path, title=None):
    """Rows of images, each ``(n, C, H, W)``, with a label to the left of each row."""
    ncol = max(r.shape[0] for r in rows)
    fig, axes = _subplots(
        len(rows), 1, figsize=(ncol * 0.62 + 1.6, len(rows) * 0.7 + 0.5), squeeze=False
    )
    for ax, row, label in zip(axes[:, 0], rows, labels):
        _show_grid(ax, row, row.shape[0])
        ax.text(-0.01, 0.5, label, transform=ax.transAxes, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    _save(fig, path)


def semi_accuracy(rows, path, title="test accuracy of q(y|x) against the number of labels"):
    """The semi-supervised table as a figure: each variant's mean test accuracy against the
    number of labelled images, with its 95% interval as error bars and every draw as a dot.

    :param list rows: :func:`pyro_vae.semi.table` rows.
    """
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    counts = sorted({r["labels"] for r in rows})
    fig, ax = _subplots(figsize=(7, 4.4))
    # each variant a little to the side of the others, so that the intervals do not overlap
    shift = {v: 1.04 ** (i - (len(variants) - 1) / 2) for i, v in enumerate(variants)}
    for i, variant in enumerate(variants):
        sel = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["labels"])
        xs = [r["labels"] * shift[variant] for r in sel]
        # one draw has no interval: NaN in the rows, null once they are read back from JSON
        half = [r["half_width"] for r in sel]
        half = [0.0 if h is None or math.isnan(h) else h for h in half]
        ax.errorbar(
            xs,
            [r["mean"] for r in sel],
            yerr=half,
            marker="o",
            ms=5,
            capsize=3,
            color=f"C{i}",
            label=variant,
        )
        for x, r in zip(xs, sel):
            ax.plot(
                [x] * len(r["accuracies"]), r["accuracies"], ".", ms=3, color=f"C{i}", alpha=0.4
            )
    _log_x_at(ax, counts)
    # room around the counts: with one count alone the shifted variants would span the axis
    ax.set_xlim(counts[0] / 1.6, counts[-1] * 1.6)
    ax.set_xlabel("labelled training images")
    ax.set_ylabel("test accuracy (mean, 95% interval, draws as dots)")
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=10)
    # below the axes: inside, the legend covers some variant's points
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4, frameon=False)
    _save(fig, path)
