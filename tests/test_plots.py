import pytest

from pyro_vae import plots


@pytest.fixture
def figures(monkeypatch):
    """The figures the plotting functions would save, kept open instead."""
    saved = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: saved.append(fig))
    return saved


def row(strategy, elbo, log_px):
    return {
        "strategy": strategy,
        "test_elbo": elbo,
        "test_elbo_stderr": 2.0,
        "test_log_px": log_px,
        "test_log_px_stderr": None if log_px is None else 2.0,
    }


@pytest.mark.parametrize("with_delta", [False, True])
def test_strategy_bars_labels_stay_inside_and_delta_is_explained_only_if_shown(figures, with_delta):
    rows = [row("amortized", -172.2, -171.6), row("local", -172.1, -171.6)]
    if with_delta:
        rows.append(row("delta", -160.0, None))
    plots.strategy_bars(rows, "unused.png", log_px_line=-171.6)
    (fig,) = figures
    ax = fig.axes[0]
    assert ("delta (hatched)" in ax.get_title()) == with_delta
    bottom, top = ax.get_ylim()
    labels = [t for t in ax.texts if t.get_text()]
    assert labels and all(bottom <= t.xy[1] <= top for t in labels)


def test_latent_scatter_names_each_class_once_in_its_own_colour(figures):
    import torch

    codes = torch.randn(40, 2)
    plots.latent_scatter(codes, torch.arange(40) % 2, "unused.png", names=("round", "square"))
    plots.latent_scatter(codes, torch.arange(40) % 12, "unused.png")
    plots.latent_scatter(codes, torch.arange(40) % 30, "unused.png")
    two, twelve, thirty = figures
    legend = two.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["round", "square"]
    assert len(two.axes) == 1  # no 0-9 colour bar for two classes
    colours = {tuple(c.get_facecolor()[0]) for c in twelve.axes[0].collections}
    assert len(twelve.axes[0].get_legend().get_texts()) == 12 and len(colours) == 12
    assert len(thirty.axes) == 2 and "30 classes" in thirty.axes[1].get_ylabel()


@pytest.mark.parametrize("n", [1, 2])
def test_latent_scatter_of_one_or_two_codes_of_many_numbers(figures, n):
    """A test split of one image (a small folder data set) with z_dim > 2 crashed after training."""
    import torch

    plots.latent_scatter(torch.randn(n, 5), torch.zeros(n, dtype=torch.long), "unused.png")
    (fig,) = figures
    (points,) = fig.axes[0].collections
    assert points.get_offsets().shape == (n, 2)
    assert "nan" not in fig.axes[0].get_title()
    if n == 1:
        assert "the codes do not vary" in fig.axes[0].get_title()


def test_training_curve_of_one_epoch_shows_points(figures):
    plots.training_curve({"epoch": [1], "train_elbo": [-200.0], "test_elbo": [-190.0]}, "u.png")
    (fig,) = figures
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2 and all(line.get_marker() == "o" for line in lines)


def test_training_curve_keeps_log_px_in_view_with_integer_epochs(figures):
    epochs = list(range(1, 11))
    history = {
        "epoch": epochs,
        "train_elbo": [-300.0 + 10 * e for e in epochs],
        "test_elbo": [None] * 9 + [-215.0],  # a per-image guide is tested at the end only
    }
    plots.training_curve(history, "u.png", log_px=-400.0, train_label="train objective (beta)")
    (fig,) = figures
    ax = fig.axes[0]
    bottom, top = ax.get_ylim()
    assert bottom < -400.0 < top
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 1 <= t <= 10]
    assert ticks and all(float(t).is_integer() for t in ticks)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "train objective (beta)" and labels[1] == "test ELBO"


def test_gradient_variance_legend_covers_no_panel(figures):
    rows = [
        {
            "stage": stage,
            "estimator": name,
            "num_particles": k,
            "encoder": {"variance": 10.0 ** (i + 1) / k},
            "decoder": {"variance": 5.0 / k},
        }
        for stage in ("epoch 0", "trained")
        for i, name in enumerate(("reparam", "score", "score-avg-baseline"))
        for k in (1, 10, 100)
    ]
    plots.gradient_variance(rows, "u.png")
    (fig,) = figures
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    box = legend.get_window_extent(renderer)
    assert [t.get_text() for t in legend.get_texts()][-2:] == ["epoch 0", "trained"]
    assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in fig.axes)


def test_semi_accuracy_draws_each_variant_with_its_interval_and_a_legend_off_the_axes(figures):
    rows = [
        {"labels": n, "variant": v, "accuracies": [m - 0.01, m + 0.01], "mean": m, "half_width": h}
        for n in (100, 600)
        for v, m, h in (
            ("enumeration + aux", 0.7 + n / 6000, 0.03),
            ("baseline", 0.65, float("nan")),
        )
    ]
    plots.semi_accuracy(rows, "semi.png")
    (fig,) = figures
    (ax,) = fig.axes
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["enumeration + aux", "baseline"]
    assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    means = [c.lines[0].get_ydata().tolist() for c in ax.containers]
    assert means == [[0.7 + 100 / 6000, 0.7 + 600 / 6000], [0.65, 0.65]]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["100", "600"]


def test_semi_accuracy_of_one_count_read_back_from_json_keeps_its_variants_close(figures):
    """A table of one label count and one draw, as semi.json holds it (no interval: null)."""
    rows = [
        {"labels": 100, "variant": v, "accuracies": [m], "mean": m, "half_width": None}
        for v, m in (("enumeration + aux", 0.71), ("baseline", 0.69))
    ]
    plots.semi_accuracy(rows, "semi.png")
    (fig,) = figures
    (ax,) = fig.axes
    left, right = ax.get_xlim()
    xs = [c.lines[0].get_xdata()[0] for c in ax.containers]
    # both near 100, with room on either side (they spanned the whole axis before)
    assert all(90 < x < 110 for x in xs) and left < 70 and right > 150


def test_a_figure_replaces_a_link_and_never_writes_through_it(tmp_path):
    """``train --overwrite`` replaced a user's picture that a run's samples.png linked to, and
    ``sample --out`` through a dangling link created its target."""
    import os

    import torch

    mine = tmp_path / "mine.png"
    mine.write_bytes(b"the user's picture")
    (tmp_path / "samples.png").symlink_to(mine)
    (tmp_path / "dangling.png").symlink_to(tmp_path / "elsewhere.png")
    for name in ("samples.png", "dangling.png"):
        plots.image_grid(torch.rand(4, 1, 8, 8), str(tmp_path / name), nrow=2)
        assert not os.path.islink(tmp_path / name)
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    assert mine.read_bytes() == b"the user's picture"
    assert not (tmp_path / "elsewhere.png").exists()
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
