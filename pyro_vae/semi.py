"""Semi-supervised learning: the objective of any program with labels, and the study of M2
against the classifier it must beat, over numbers of labels.

- :class:`SemiSupervisedLoss`: the ELBO of a model file trained with ``--labels N``, following
  Pyro's SS-VAE convention (labelled images observe ``ys``, unlabelled ones pass ``ys=None``),
  with its classification term.
- :func:`baseline_classifier`: q(y|x)'s network trained on the labelled images alone, the
  baseline M2 must beat.
- :func:`table`: Pyro's semi-supervised tutorial's table 1 layout, test accuracy per number of
  labels and :data:`VARIANTS` (score function, enumeration, enumeration with the classification
  term, the baseline), mean and 95% interval over draws of the labelled set (``pyro-vae semi``).

What one M2 or mixture run reports (accuracy, cluster accuracy, the analogies figure) is
:mod:`pyro_vae.class_latent`.
"""

import json
import math
import os
import re
import warnings
from dataclasses import replace

import torch
from pyro.infer import Trace_ELBO
from torch import nn
from torch.nn import functional as F

from .data import bernoulli
from .errors import ConfigError, PyroVAEError, RunDirError, shown
from .program import Half, class_log_probs

#: The names of the classification pair a model file's object may define (Pyro's SS-VAE
#: example): ``model_classify(xs, ys)`` observes ``ys`` under the guide's classifier,
#: ``guide_classify(xs, ys)`` samples nothing.
CLASSIFY_PAIR = ("model_classify", "guide_classify")


class SemiSupervisedLoss(nn.Module):
    """The loss of a program trained with labels for some of its images (``--labels N`` with a
    model file, :attr:`pyro_vae.program.Condition.partial`), as Pyro's SS-VAE example trains
    it: a labelled image's term is the ELBO with ``ys`` observed, Kingma et al.'s (2014)
    ``L(x, y)``; an unlabelled image's is the ELBO with ``ys=None``, ``U(x)``, the class summed
    or sampled by the discrete strategy (:mod:`pyro_vae.discrete`).

    A program cannot take ``-1`` for "no label" (the built-in M2 can), so each minibatch is
    split in two calls of ``loss_fn``, one on its labelled images and one on the others. Each
    call scales its sum to the data set by ``size / part`` (the program's data plate, as for
    any minibatch), and is then weighted by ``part / batch``: every image's term is multiplied
    by ``size / batch``, as in one call on the whole minibatch. Since the minibatches are drawn
    uniformly (a random permutation of the training set, labelled images and their copies
    among them), the loss stays an unbiased estimate of minus the whole training set's
    objective ``sum_labelled L(x, y) + sum_unlabelled U(x)``, the same estimate as the built-in
    M2's, at the same scale. (Separate labelled and unlabelled minibatches, as Pyro's example
    draws them, would weigh the two sets by how often each is visited instead.)

    The classification term, ``alpha`` on each labelled image, scaled likewise (``size /
    batch``), so that ``--alpha`` means what it means for the built-in M2:

    - where the object that holds the program defines the pair :data:`CLASSIFY_PAIR` (Pyro's
      SS-VAE example), ``alpha`` times the pair's ELBO on the labelled images: ``model_classify
      (xs, ys)`` observes ``ys`` under the guide's classifier, and any scale it sets itself
      (Pyro's ``aux_loss_multiplier``) multiplies ``alpha`` (``--alpha 1`` keeps the
      program's own weight);
    - otherwise ``alpha * log q(y | x)`` at the guide's class site, the guide run with
      ``ys=None`` on the labelled images (:func:`pyro_vae.program.class_log_probs`).

    :param loss_fn: the ELBO as a loss module, ``elbo(model, guide)``.
    :param float alpha: the classification term's weight on each labelled image (0: none).
    """

    def __init__(self, loss_fn, alpha=0.0):
        super().__init__()
        self.loss_fn = loss_fn
        self.model, self.guide = loss_fn.model, loss_fn.guide
        self.elbo = loss_fn.elbo  # the strategy's (the recorded step refuses a split loss)
        self.baseline = getattr(loss_fn, "baseline", None)
        self.alpha = float(alpha)
        self.pair = classify_pair(self.model) if self.alpha else None
        self.classify_elbo = Trace_ELBO()

    def forward(self, x, y=None, idx=None, size=None):
        if y is None or y.is_floating_point():
            return self.loss_fn(x, y, idx, size)
        labelled = y >= 0
        batch = x.shape[0]
        total = 0.0
        for part in (labelled, ~labelled):
            k = int(part.sum())
            if k == 0:
                continue
            at = None if idx is None else idx[part]
            weight = k / batch if size is not None else 1.0
            with warnings.catch_warnings():
                # a labelled call has no class to sum out: Pyro's enumeration says so, rightly
                warnings.filterwarnings("ignore", "TraceEnum_ELBO found no sample sites")
                loss = self.loss_fn(x[part], y[part], at, size)
            total = total + weight * loss
        k = int(labelled.sum())
        if self.alpha and k:
            at = None if idx is None else idx[labelled]
            weight = k / batch if size is not None else 1.0
            total = total + self.alpha * weight * self.classify(x[labelled], y[labelled], at, size)
        return total

    def classify(self, x, y, idx, size):
        """Minus the classification term's log-likelihood of the labelled images ``x``, ``y``,
        scaled to the data set (``size / len(x)``)."""
        if self.pair is not None:
            model, guide = self.pair
            return self.classify_elbo.differentiable_loss(model, guide, x, y, idx, size)
        log_q = class_log_probs(self.guide, x, idx, size)
        scale = size / x.shape[0] if size is not None else 1.0
        return -scale * log_q.gather(-1, y.long()[:, None]).sum()


def classify_pair(model):
    """The halves ``(model_classify, guide_classify)`` of the object that holds the program
    ``model`` (a model file's class instance), called as pyro_vae calls every program; ``None``
    where it has no such pair."""
    owner = getattr(model, "target", None)
    fns = [getattr(owner, name, None) for name in CLASSIFY_PAIR]
    if owner is None or not all(callable(fn) for fn in fns):
        return None
    return Half(model.program, "model", fns[0]), Half(model.program, "guide", fns[1])


def baseline_classifier(data, hidden_dims, epochs=100, lr=1e-3, seed=0, activation="softplus"):
    """q(y|x)'s network (:func:`pyro_vae.config.build_class_vae`'s classifier) trained by
    cross-entropy on ``data``'s labelled training images alone; returns its test accuracy."""
    from .config import Config, build_class_vae

    torch.manual_seed(seed)
    config = Config(model="gmvae", hidden_dims=tuple(hidden_dims), activation=activation)
    net = build_class_vae(config, data.x_shape, data.num_classes)[1].classifier
    x, y = data.train_x[data.labelled], data.train_y[data.labelled]
    optim = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(128):
            xb = bernoulli(x[idx], generator=g) if data.binarize == "dynamic" else x[idx]
            loss = F.cross_entropy(net(xb), y[idx])
            optim.zero_grad()
            loss.backward()
            optim.step()
    with torch.no_grad():
        return (net(data.test_x).argmax(-1) == data.test_y).float().mean().item()


#: The file, in the table's folder, that holds the table (``pyro-vae semi --out``).
TABLE = "semi.json"

#: The table's columns: name -> the settings an M2 run of that variant changes (None: the
#: baseline classifier). ``alpha="kingma"`` is Kingma et al.'s 0.1 N, unless the table's config
#: sets its own ``alpha`` (see :func:`table`).
VARIANTS = {
    "score function": {"discrete": "score"},
    "enumeration": {"discrete": "enumerate"},
    "enumeration + aux": {"discrete": "enumerate", "alpha": "kingma"},
    "baseline": None,
}


def interval(values):
    """Mean and half-width of the 95% Student-t interval of ``values``."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    from scipy.stats import t as student_t  # here: scipy takes a second to import

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def table(
    config,
    labels=(100, 600, 1000, 3000),
    draws=5,
    variants=None,
    out=None,
    log=print,
    overwrite=False,
    resume=False,
    quiet=True,
    progress=None,
    jobs=1,
):
    """Test accuracy of every variant for every number of labels, over ``draws`` labelled sets
    (seeds ``config.seed`` to ``config.seed + draws - 1``). Returns the rows as dicts:
    ``labels``, ``variant``, ``accuracies``, ``mean`` and ``half_width`` (95% interval); with
    the baseline among the variants, each M2 row also has ``minus_baseline`` (see
    :func:`_paired`).

    :param Config config: the M2 settings shared by every run (its ``labels``, ``discrete``
        and ``seed`` are set per cell; its ``alpha``, when not 0, is the weight of the variant
        with the classification term, in place of Kingma et al.'s, and the others have none).
    :param str out: a folder for the runs (default: a temporary one, removed at the end);
        refused if it exists and is not empty, unless ``overwrite`` or ``resume``.
    :param bool resume: continue a table interrupted in ``out``, or extend one (more draws or
        label counts), called with the same settings: its finished runs are read, not trained
        again, an unfinished one continues from its last checkpoint
        (:func:`~pyro_vae.runs.resume_run`), and a run trained with other settings is refused.
        The baselines are trained again (from the same seeds: the same numbers).
    :param bool quiet: no progress bars in the runs.
    :param progress: called with a line as each run ends (its accuracy, and whether it was
        trained, resumed or read).
    :param int jobs: runs trained at once, each in a process of its own on one torch thread
        (:func:`default_jobs`); the table is the same whatever their number.
    """
    import tempfile

    variants = list(variants or VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    if out is None:  # the runs go to a temporary folder, removed at the end
        if resume:
            raise ConfigError("resuming a semi-supervised table needs the folder it ran in")
        with tempfile.TemporaryDirectory(prefix="pyro-vae-semi-") as folder:
            return table(
                config,
                labels,
                draws,
                variants,
                folder,
                log,
                overwrite=True,
                quiet=quiet,
                progress=progress,
                jobs=jobs,
            )
    _check_out(out, overwrite, resume)
    cells = [
        (n, variant, draw, *_cell(config, n, variant, draw, out))
        for n in labels
        for variant in variants
        for draw in range(draws)
    ]
    accuracy = {}
    results = _run_cells([(cell, path) for *_, cell, path in cells], resume, quiet, jobs)
    for i, ((n, variant, draw, cell, _), (value, how)) in enumerate(zip(cells, results), 1):
        accuracy[n, variant, draw] = value
        if progress is not None:
            progress(
                f"{i}/{len(cells)}: {n} labels, {variant}, seed {cell.seed}: test accuracy "
                f"{value:.3f} ({how})"
            )
    rows = []
    for n in labels:
        for variant in variants:
            accuracies = [accuracy[n, variant, draw] for draw in range(draws)]
            mean, half = interval(accuracies)
            rows.append(
                {
                    "labels": n,
                    "variant": variant,
                    "accuracies": [round(a, 4) for a in accuracies],
                    "mean": round(mean, 4),
                    "half_width": round(half, 4),
                }
            )
            log(f"labels {n:5d}  {variant:18s} {mean:.3f} {_spread(half)}")
        _paired(rows, n, log)
    return rows


def _cell(config, labels, variant, draw, out):
    """The config of one cell of the table and its run folder (``None`` for the baseline, which
    trains no run)."""
    settings = VARIANTS[variant]
    if settings and "alpha" in settings and config.alpha:
        settings = {**settings, "alpha": config.alpha}  # the user's own weight
    cell = replace(config, labels=labels, seed=config.seed + draw, alpha=0.0, discrete=None)
    if settings is None:  # the labelled images once each, whatever M2's share
        return replace(cell, labelled_share=None), None
    return replace(cell, **settings), _run_folder(out, labels, variant, draw)


def _cell_accuracy(cell, path, resume, quiet):
    """``(test accuracy, how it was had)`` of one cell: the baseline classifier's, or the M2
    run's (:func:`_m2_run`)."""
    if path is None:
        from .runs import load_run_data

        accuracy = baseline_classifier(
            load_run_data(cell), cell.hidden_dims, seed=cell.seed, activation=cell.activation
        )
        return accuracy, "trained"
    return _m2_run(cell, path, resume, quiet)


def default_jobs():
    """Runs trained at once by default: one per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity on this platform
        return max(1, os.cpu_count() or 1)


class _Cells:
    """The cells of a table trained in processes of their own, ``jobs`` at a time: each a fresh
    ``python -m pyro_vae._semi_cell`` on one torch thread (not :mod:`multiprocessing`, whose
    workers import the caller's script again: a script or tutorial that calls the table
    without a ``__main__`` guard would run itself in each)."""

    def __init__(self, resume):
        self.resume, self.running = resume, set()

    def accuracy(self, cell, path):
        import subprocess
        import sys

        spec = json.dumps({"config": cell.as_dict(), "path": path, "resume": self.resume})
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "pyro_vae._semi_cell"]
        with subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=env,
        ) as process:  # fmt: skip
            self.running.add(process)
            try:
                out, err = process.communicate(spec)
            finally:
                self.running.discard(process)
        if process.returncode != 0:
            lines = err.strip().splitlines()
            raise PyroVAEError(
                lines[-1]
                if lines
                else f"a run of the table ended with exit code {process.returncode}"
            )
        result = json.loads(out.strip().splitlines()[-1])
        return result["accuracy"], result["how"]

    def stop(self):
        for process in list(self.running):
            process.terminate()


def _run_cells(cells, resume, quiet, jobs=1):
    """Each cell's ``(accuracy, how)``, in order, as each is known: one after the other, or in
    ``jobs`` processes of one torch thread each (the order kept: a line for a cell is given once
    the cells before it are done)."""
    if jobs <= 1 or len(cells) <= 1:
        for cell, path in cells:
            yield _cell_accuracy(cell, path, resume, quiet)
        return
    from concurrent.futures import ThreadPoolExecutor

    workers = _Cells(resume)
    with ThreadPoolExecutor(min(jobs, len(cells))) as pool:
        futures = [pool.submit(workers.accuracy, cell, path) for cell, path in cells]
        try:
            for future in futures:
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            workers.stop()  # the runs keep their last checkpoints for --resume
            raise


def cell_main():
    """One cell of a table in a process of its own (:class:`_Cells`): its config, run folder and
    ``resume`` as JSON on stdin, ``{"accuracy", "how"}`` as JSON on stdout, a failure as one
    line on stderr and exit code 1."""
    import sys

    from .config import Config

    spec = json.loads(sys.stdin.read())
    torch.set_num_threads(1)
    try:
        accuracy, how = _cell_accuracy(
            Config.from_dict(spec["config"]), spec["path"], spec["resume"], True
        )
    except PyroVAEError as e:
        print(str(e).strip().splitlines()[0], file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"accuracy": accuracy, "how": how}))


def _check_out(out, overwrite, resume):
    """Refuse an ``out`` the table cannot write its runs into as asked; create it if missing."""
    from .runs import prepare_run_dir

    runs, finished = _holds_runs(out), os.path.exists(os.path.join(out, TABLE))
    if not resume:
        if runs and not overwrite:
            raise RunDirError(
                f"{out} holds a finished table; add --resume to extend it (more draws or label "
                "counts, the same settings), or --overwrite to start again"
                if finished
                else f"{out} holds a table that did not finish; add --resume (with the same "
                "options) to continue it, or --overwrite to start again"
            )
        prepare_run_dir(out, overwrite)  # before any training: the runs already there stay
    elif overwrite:
        raise ConfigError("a table is either resumed or overwritten, not both")
    elif not os.path.exists(out):
        raise RunDirError(f"there is no table to resume in {out}: no such folder")
    elif not os.path.isdir(out):
        raise RunDirError(f"{out} exists and is not a directory")
    elif os.listdir(out) and not (runs or finished):
        raise RunDirError(
            f"{out} holds no semi-supervised table (no {TABLE}, no runs of one); give --resume "
            "the --out the table ran in"
        )


def _m2_run(config, path, resume, quiet):
    """Test accuracy of the M2 run ``config`` in ``path`` and how it was had: trained, resumed
    (from the run's last checkpoint) or read (a finished run's ``metrics.json``)."""
    from .runs import CONFIG, read_config, resume_run, train_run

    if not (resume and os.path.isfile(os.path.join(path, CONFIG))):  # not started yet
        return train_run(config, path, overwrite=True, quiet=quiet)[1]["test_accuracy"], "trained"
    saved = read_config(os.path.join(path, CONFIG))
    if saved != config:
        key, ours, theirs = config.first_difference(saved)
        raise ConfigError(
            f"{path} was trained with {key} {shown(theirs)}, this table asks for {shown(ours)}; "
            "resume with the settings the table started with"
        )
    finished = os.path.join(path, "metrics.json")
    if os.path.isfile(finished):
        try:
            with open(finished) as f:
                accuracy = float(json.load(f)["test_accuracy"])
            if 0.0 <= accuracy <= 1.0:  # not NaN, nor a number no accuracy can be
                return accuracy, "read"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    # No record, or a damaged one: evaluate the run again.
    return resume_run(path, quiet=quiet)[1]["test_accuracy"], "resumed"


def _run_folder(out, labels, variant, draw):
    """Where the table keeps the M2 run of ``variant`` with ``labels`` labels, draw ``draw``."""
    return os.path.join(out, f"{labels}-{variant.replace(' ', '')}-{draw}")


#: The name :func:`_run_folder` gives a run.
_RUN_NAME = re.compile(rf"\d+-({'|'.join(re.escape(v.replace(' ', '')) for v in VARIANTS)})-\d+")


def _holds_runs(out):
    """Whether ``out`` holds runs of a table."""
    from .runs import CONFIG

    return os.path.isdir(out) and any(
        _RUN_NAME.fullmatch(name) and os.path.isfile(os.path.join(out, name, CONFIG))
        for name in os.listdir(out)
    )


def _spread(half):
    """The 95% interval's half-width as the table prints it (none from a single draw)."""
    return "(one draw)" if math.isnan(half) else f"+- {half:.3f}"


def _paired(rows, labels, log):
    """Add to each M2 row of ``labels`` its difference from the baseline draw by draw (the same
    labelled images), mean and 95% interval: ``minus_baseline`` and its ``half_width``."""
    cells = [r for r in rows if r["labels"] == labels]
    baseline = next((r for r in cells if r["variant"] == "baseline"), None)
    if baseline is None:
        return
    for row in cells:
        if row is baseline:
            continue
        diff = [a - b for a, b in zip(row["accuracies"], baseline["accuracies"])]
        mean, half = interval(diff)
        row["minus_baseline"] = {"mean": round(mean, 4), "half_width": round(half, 4)}
        log(
            f"labels {labels:5d}  {row['variant']:18s} minus the baseline, paired by draw: "
            f"{mean:+.3f} {_spread(half)}"
        )


def write_table(out, config, rows, draws):
    """The table in ``out``: :data:`TABLE` (the settings and the rows) and ``semi.png``."""
    from . import plots
    from .checkpoints import write_json

    write_json(os.path.join(out, TABLE), {"config": config.as_dict(), "rows": rows})
    plots.semi_accuracy(
        rows,
        os.path.join(out, "semi.png"),
        title=f"{config.dataset}: test accuracy of q(y|x), {draws} "
        f"draw{'s' if draws > 1 else ''} of the labelled set",
    )
