"""The ``pyro-vae`` command line: train, evaluate, sample, demo, inspect, compare, gradvar, anomaly."""

import argparse
import json
import os
import sys

from ._version import __version__
from .errors import ConfigError, PyroVAEError, RunDirError
from .resources import faults


def _positive_int(text):
    from .config import MAX_COUNT

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer up to {MAX_COUNT} (2**31 - 1), got {text!r}"
        )
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _decay(text):
    value = _positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a factor in (0, 1], got {text!r}")
    return value


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return value


def _seed(text):
    from .config import MAX_SEED

    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(
            f"expected a seed from 0 to {MAX_SEED} (2**32 - 1), got {text!r}"
        )
    return value


def _int_list(text):
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 512,256, got {text!r}"
        ) from None
    if not values or min(values) < 1 or max(values) > 2**31 - 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers (up to 2**31 - 1) such as 512,256, got "
            f"{text!r}"
        )
    return tuple(values)


def _fraction(text):
    """A number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def _share(text):
    """A fraction between 0 and 1, or ``none`` (each labelled image once)."""
    return None if text.strip() == "none" else _fraction(text)


def _alpha(text):
    """A non-negative number, or ``kingma`` (kept as the string; the run sets 0.1 N / labels)."""
    if text.strip() == "kingma":
        return "kingma"
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or kingma, got {text!r}")
    return value


def _dataset_name(text):
    from .data import is_dataset_name

    if not is_dataset_name(text):
        raise argparse.ArgumentTypeError(
            f"unknown dataset {text!r}; choose mnist-small, mnist, fashion-mnist, cifar10 or "
            "folder:PATH"
        )
    return text


def _whole_numbers(what, example):
    """A parser of comma-separated integers >= 0 (``what``, e.g. class labels)."""

    def parse(text):
        try:
            values = [int(v) for v in text.replace(" ", "").split(",") if v]
        except ValueError:
            values = [-1]
        if not values or min(values) < 0:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {what} (integers >= 0) such as {example}, got {text!r}"
            )
        return tuple(values)

    return parse


_label_list = _whole_numbers("class labels", "1,7")
_epoch_list = _whole_numbers("numbers of epochs", "0,1,10")


def _choice_list(choices):
    def parse(text):
        values = tuple(v for v in text.replace(" ", "").split(",") if v)
        bad = [v for v in values if v not in choices]
        if not values or bad:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated names from {', '.join(choices)}, got {text!r}"
            )
        return values

    return parse


def _add_train_args(p, d, out_help=None):
    from .config import ELBOS
    from .data import BINARIZATIONS
    from .traced import STEPS

    p.add_argument(
        "--dataset",
        default=d.dataset,
        type=_dataset_name,
        help="mnist-small is embedded; mnist, fashion-mnist and cifar10 come through "
        "torchvision; folder:PATH reads your own images (default: %(default)s)",
    )
    p.add_argument(
        "--binarize",
        choices=BINARIZATIONS,
        help="none, static (one fixed-seed sample), dynamic (fresh per minibatch) or threshold "
        "(pixels >= 0.5 -> 1) (default: dynamic for the Bernoulli likelihood, none for the "
        "others)",
    )
    p.add_argument(
        "--z-dim", type=_positive_int, default=argparse.SUPPRESS, help=_recipe_help("z_dim", d)
    )
    p.add_argument(
        "--hidden-dims",
        type=_int_list,
        default=argparse.SUPPRESS,
        help="encoder widths, reversed for the decoder, e.g. 512,256 "
        + _recipe_help("hidden_dims", d),
    )
    p.add_argument(
        "--epochs", type=_positive_int, default=argparse.SUPPRESS, help=_recipe_help("epochs", d)
    )
    p.add_argument(
        "--time-limit",
        type=_positive_float,
        default=d.time_limit,
        metavar="SECONDS",
        help="a wall-clock budget for training: no epoch is started that would end after it, "
        "so --epochs is then an upper bound (default: none)",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=d.batch_size, help="(default: %(default)s)"
    )
    p.add_argument(
        "--lr", type=_positive_float, default=d.lr, help="Adam learning rate (default: %(default)s)"
    )
    p.add_argument(
        "--lr-decay",
        type=_decay,
        default=d.lr_decay,
        metavar="FACTOR",
        help="multiply the learning rate by FACTOR, in (0, 1], after every epoch (default: "
        "%(default)s, constant)",
    )
    p.add_argument(
        "--clip-grad",
        type=_positive_float,
        default=d.clip_grad,
        metavar="NORM",
        help="rescale each step's gradient to at most this norm (default: no clipping)",
    )
    p.add_argument(
        "--step",
        choices=tuple(STEPS),
        default=d.step,
        help="how each training step computes the loss: recorded (the ELBO's operations recorded "
        "once and replayed, Pyro's numbers bit for bit); compiled (torch.compile: faster per "
        "step, the same numbers to float rounding, seconds to a minute to compile; for long "
        "runs); eager (Pyro's eager step) (default: %(default)s)",
    )
    p.add_argument(
        "--elbo",
        choices=tuple(ELBOS),
        default=argparse.SUPPRESS,
        help="trace: Monte Carlo KL (Trace_ELBO); meanfield: analytic KL "
        "(TraceMeanField_ELBO); iwae: the importance-weighted bound with --num-particles K "
        + _recipe_help("elbo", d),
    )
    p.add_argument(
        "--num-particles",
        type=_positive_int,
        default=d.num_particles,
        help="latent samples per image per step; K of --elbo iwae (default: %(default)s)",
    )
    p.add_argument("--seed", type=_seed, default=d.seed, help="(default: %(default)s)")
    p.add_argument(
        "--exclude-classes",
        type=_label_list,
        default=d.exclude_classes,
        help="labels left out of both splits, e.g. 1 (for out-of-distribution tests)",
    )
    p.add_argument(
        "--log-px-samples",
        type=_positive_int,
        default=d.log_px_samples,
        help="importance samples K for the final test log p(x) (default: %(default)s)",
    )
    _add_family_args(p.add_argument_group("model family (see docs/guide/model-family.md)"), d)
    _add_guide_family_args(p.add_argument_group("guide family (see docs/guide/compare.md)"), d)
    _add_out_args(p, out_help)


def _add_guide_family_args(g, d):
    from .families import FAMILIES, families_help

    g.add_argument(
        "--guide-family",
        default=d.guide_family,
        choices=tuple(FAMILIES),
        help=f"the shape of q(z|x): {families_help()} (default: %(default)s)",
    )
    g.add_argument(
        "--flow-layers",
        type=_positive_int,
        default=d.flow_layers,
        help="inverse autoregressive flow steps of --guide-family flow (default: %(default)s)",
    )


def _add_family_args(g, d):
    from .likelihoods import LIKELIHOODS
    from .nets import ACTIVATIONS, NETS
    from .registry import help_text

    g.add_argument(
        "--model",
        default=d.model,
        help=help_text() + " (default: %(default)s)",
    )
    g.add_argument(
        "--likelihood",
        default=d.likelihood,
        choices=LIKELIHOODS,
        help="p(x|z) per pixel; gaussian learns a per-pixel scale unless --sigma fixes it "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--sigma",
        type=_positive_float,
        help="fixed scale of the gaussian likelihood (the MSE loss with its constant)",
    )
    g.add_argument(
        "--net",
        default=d.net,
        choices=NETS,
        help="mlp, or conv (strided convolutions; --hidden-dims are then channels, e.g. 32,64) "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--activation",
        default=d.activation,
        choices=tuple(ACTIVATIONS),
        help="the hidden nonlinearity of --net mlp's encoder and decoder (and of M2's "
        "classifier, the hierarchical model's and a learned prior's networks) "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--condition",
        default=d.condition,
        metavar="{none,label,quadrants:N}",
        help="label: a CVAE conditioned on the class; quadrants:N (N = 1, 2, 3): image "
        "completion from N observed quadrants; a model file gets either as its second argument "
        "(the image whole, or as Pyro's CVAE example splits it) (default: %(default)s)",
    )
    g.add_argument(
        "--learned-prior",
        action=argparse.BooleanOptionalAction,
        default=argparse.SUPPRESS,
        help="learn a conditional prior p(z|y); --no-learned-prior: the textbook Normal(0, I) "
        + _recipe_help("learned_prior", d),
    )
    g.add_argument("--z1-dim", type=_positive_int, help="top layer of --model hierarchical")
    g.add_argument(
        "--labels",
        type=_positive_int,
        help="--model m2, or a model file whose program observes a class site (model(xs, "
        "ys=None), Pyro's SS-VAE convention): the number of labelled training images (balanced "
        "over the classes, chosen by --seed); the others are unlabelled (ys=None)",
    )
    g.add_argument(
        "--alpha",
        type=_alpha,
        default=argparse.SUPPRESS,
        help="with --labels: weight of the classification term alpha * log q(y|x) on each "
        "labelled image (a model file's own model_classify/guide_classify pair where it has "
        "one, else its guide's class site); 'kingma' is Kingma et al.'s 0.1 N on the labelled "
        "images' mean, i.e. 0.1 N / labels on each; 0: no term, the textbook M2 "
        + _recipe_help("alpha", d),
    )
    g.add_argument(
        "--labelled-share",
        type=_share,
        default=argparse.SUPPRESS,
        help="with --labels: repeat the labelled images so that this fraction of every epoch is "
        "labelled (Siddharth et al. 2017's supervision rate; their terms then weigh more than in "
        "Kingma et al.'s objective); none: each image once, the textbook M2 "
        + _recipe_help("labelled_share", d),
    )
    g.add_argument(
        "--beta",
        type=_positive_float,
        default=d.beta,
        help="weight of the KL term (beta-VAE); evaluation always reports the ELBO at beta=1 "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--kl-warmup",
        type=_non_negative_int,
        default=d.kl_warmup,
        metavar="EPOCHS",
        help="raise the KL weight linearly from beta/EPOCHS to beta over EPOCHS epochs "
        "(default: %(default)s)",
    )
    from .discrete import STRATEGIES

    g.add_argument(
        "--discrete",
        choices=tuple(STRATEGIES),
        help="how discrete latent sites are trained: "
        + "; ".join(f"{s.name}: {s.description}" for s in STRATEGIES.values())
        + " (default: enumerate where the supports are finite and small, else score)",
    )
    g.add_argument(
        "--image-size",
        type=_positive_int,
        help="resize images to SIZE x SIZE (default: the dataset's size; 64 for folder:PATH)",
    )


def _non_negative_int(text):
    return 0 if text.strip() == "0" else _positive_int(text)


#: The settings whose defaults depend on the model (pyro_vae.config.RECIPES): argparse leaves
#: them out of the namespace where not given, and :func:`_config_from_args` fills them in.
_RECIPE_SETTINGS = (
    "z_dim",
    "hidden_dims",
    "epochs",
    "alpha",
    "labelled_share",
    "learned_prior",
    "elbo",
)


def _recipe_help(name, d):
    """``(default: ...)`` for a setting of ``--help``: the plain default and each recipe's."""
    from .config import PROGRAM_SIZES, RECIPES, Config

    def shown_value(v):
        if isinstance(v, bool):
            return "on" if v else "off"
        if v is None:
            return "none"
        if isinstance(v, tuple):
            return ",".join(map(str, v))
        return f"{v:g}" if isinstance(v, float) else str(v)

    plain = getattr(d, name)
    recipes = (
        [f"{shown_value(r.settings[name])} for {r.name}" for r in RECIPES if name in r.settings]
        if d == Config()  # semi has defaults of its own, and no recipes
        else []
    )
    if name in PROGRAM_SIZES and d == Config():
        recipes.append("a model file's constructor's own")
    return f"(default: {'; '.join([shown_value(plain), *recipes])})"


def _family_from_args(args):
    """The model-family settings of ``args``, with defaults that depend on each other."""
    from .registry import absolute

    binarize = args.binarize or ("dynamic" if args.likelihood == "bernoulli" else "none")
    model = absolute(args.model)  # a model file's path saved absolute: the run loads anywhere
    same = (
        "likelihood",
        "sigma",
        "net",
        "activation",
        "condition",
        "z1_dim",
        "beta",
    )
    same += ("kl_warmup", "image_size", "guide_family", "flow_layers", "discrete", "labels")
    return dict({name: getattr(args, name) for name in same}, binarize=binarize, model=model)


def _add_out_args(p, out_help=None):
    p.add_argument("--out", help=out_help or "run directory (default: runs/DATASET-TIMESTAMP)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into --out even if it exists and is not empty",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _config_from_args(args):
    from .config import Config

    # A recipe setting not given takes the model's recipe (pyro_vae.config.RECIPES).
    given = {name: getattr(args, name) for name in _RECIPE_SETTINGS if hasattr(args, name)}
    return Config.recipe(
        dataset=args.dataset,
        **given,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay=args.lr_decay,
        num_particles=args.num_particles,
        seed=args.seed,
        log_px_samples=args.log_px_samples,
        clip_grad=args.clip_grad,
        time_limit=args.time_limit,
        step=args.step,
        **_family_from_args(args),
        exclude_classes=args.exclude_classes,
    )


def to_json(obj):
    from .checkpoints import to_json  # torch is imported only when a command needs it

    return to_json(obj)


def _pm(stderr):
    """`` ± stderr``, or what stands in its place for a single image."""
    return " (one image: no standard error)" if stderr is None else f" ± {stderr:.2f}"


FIGURES = ("samples.png", "reconstructions.png", "latent.png", "training-curve.png")


def _print_metrics(metrics, out):
    print(f"run directory: {out}")
    print(f"  dataset        {metrics['dataset']} (binarize={metrics['binarize']})")
    limit = metrics.get("time_limit")
    print(
        f"  training       {plural(metrics['epochs'], 'epoch')} in {metrics['seconds']:.1f} s"
        + ("" if limit is None else f" (time limit {limit:g} s)")
    )
    print(f"  train ELBO     {metrics['train_elbo']:.2f} nats/image")
    print(f"  test ELBO      {metrics['test_elbo']:.2f} nats/image")
    print(
        f"  test log p(x)  {metrics['test_log_px']:.2f}{_pm(metrics['test_log_px_stderr'])} "
        f"nats/image (importance sampling, K={metrics['log_px_samples']})"
    )
    if metrics.get("measures"):
        print(f"                 {metrics['measures']}")
    if "baseline_test_log_px" in metrics:
        print(
            f"  baseline       {metrics['baseline_test_log_px']:.2f} nats/image "
            "(deterministic network, same task)"
        )
    if "label_effect" in metrics:
        print(
            f"  label effect   {metrics['label_effect']:.2f} (share of the samples' pixel variance "
            "that the label explains; 0: ignored)"
        )
        _warn_if_label_ignored(metrics["label_effect"])
    if "test_accuracy" in metrics:
        print(
            f"  test accuracy  {metrics['test_accuracy']:.3f} (q(y|x), {metrics['labels']} "
            "labelled training images)"
        )
    if "class_effect" in metrics:
        print(
            f"  class effect   {metrics['class_effect']:.2f} (share of the decoded pixel variance "
            "that y explains at fixed z; 0: the decoder ignores y)"
        )
    if "test_cluster_accuracy" in metrics:
        print(
            f"  cluster acc.   {metrics['test_cluster_accuracy']:.3f} (clusters matched one-to-one "
            "to the test labels)"
        )
    print("  figures        " + " ".join(metrics.get("figures", FIGURES)))


def _warn_if_label_ignored(effect):
    from .classifier import LABEL_EFFECT_WARNING

    if effect < LABEL_EFFECT_WARNING:
        print(
            f"pyro-vae: note: the samples barely depend on the label (label effect {effect:.2f} < "
            f"{LABEL_EFFECT_WARNING}): the code z carries the class, so sample --label draws the "
            "asked-for class only sometimes; train with --learned-prior (or a small --z-dim)",
            file=sys.stderr,
        )


def _add_distributed_args(p):
    g = p.add_argument_group(
        "data-parallel training on PyTorch Lightning (any of these flags turns it on; needs "
        "pip install 'pyro_vae[distributed]')"
    )
    g.add_argument(
        "--devices",
        type=_positive_int,
        help="processes per machine, one per GPU (default: 1); --batch-size is split among all",
    )
    g.add_argument("--num-nodes", type=_positive_int, help="machines (default: 1)")
    g.add_argument("--strategy", choices=("ddp", "auto"), help="(default: ddp)")
    g.add_argument("--accelerator", choices=("cpu", "gpu", "auto"), help="(default: auto)")


def _distributed(args):
    return any(
        getattr(args, name) is not None
        for name in ("devices", "num_nodes", "strategy", "accelerator")
    )


def _train_distributed(args, config):
    from .distributed import train_run_distributed

    _, metrics = train_run_distributed(
        config,
        args.out,
        overwrite=args.overwrite,
        quiet=args.quiet,
        devices=args.devices or 1,
        num_nodes=args.num_nodes or 1,
        strategy=args.strategy or "ddp",
        accelerator=args.accelerator or "auto",
        checkpoint_every=args.checkpoint_every,
    )
    if metrics is not None:  # the process of global rank 0 reports for all
        _print_metrics(metrics, args.out)


def cmd_train(args):
    from .runs import default_run_dir, resume_run, train_run

    if args.resume:
        if _distributed(args):
            raise ConfigError(
                "--resume continues a run in one process; a data-parallel run cannot be resumed "
                "on several (--devices, --num-nodes, --strategy, --accelerator), but pyro-vae "
                f"train --resume {args.resume} alone continues it from its last epoch"
            )
        _check_resume_args(args)
        _, metrics = resume_run(
            args.resume,
            quiet=args.quiet,
            checkpoint_every=args.checkpoint_every,
            started=_started(args, "train"),
        )
        _print_metrics(metrics, args.resume)
        return
    config = _config_from_file(args) if args.config else _config_from_args(args)
    if _distributed(args):
        return _train_distributed(args, config)
    out = args.out or default_run_dir(config.dataset)
    _, metrics = train_run(
        config,
        out,
        overwrite=args.overwrite,
        quiet=args.quiet,
        checkpoint_every=args.checkpoint_every,
        started=_started(args, "train"),
    )
    _print_metrics(metrics, out)


def _started(args, command, say=True):
    """What a training command does once its run directory is taken: name it (first, so a user
    who walks away knows where to look) and, for Ctrl-C, remember how the run continues."""

    def started(out):
        # Read after the interruption: a run stopped before its first checkpoint is removed.
        args.interrupted = lambda: (
            f"the run continues with: pyro-vae train --resume {out}"
            if os.path.exists(os.path.join(out, "config.json"))
            else f"it had no checkpoint yet, so {out} was removed"
        )
        if say and not args.quiet:
            print(f"pyro-vae {command}: run directory {out}", file=sys.stderr, flush=True)

    return started


def _add_resume_args(p):
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its last checkpoint, with its saved settings",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="start from the settings in FILE (a run's config.json, or its directory); options "
        "given on the command line override them",
    )
    p.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        metavar="N",
        help="also checkpoint every N steps (default: at the end of each epoch only)",
    )


# Options that change how a run is carried out, not what it computes.
_RESUME_ALLOWED = {"resume", "quiet", "checkpoint_every"}


def _given_options(argv):
    """The names of the train options that ``argv`` sets explicitly (argparse fills in the rest)."""
    from .config import Config

    p = _Parser(add_help=False)
    _add_train_args(p, Config())
    _add_resume_args(p)
    _add_distributed_args(p)
    unset = object()
    # argparse fills in a default only where the namespace has no value yet.
    blank = argparse.Namespace(**dict.fromkeys((a.dest for a in p._actions), unset))
    return {name for name, value in vars(p.parse_args(argv, blank)).items() if value is not unset}


def _check_resume_args(args):
    extra = sorted(_given_options(args.argv[1:]) - _RESUME_ALLOWED)
    if extra:
        flag = "--" + extra[0].replace("_", "-")
        raise ConfigError(
            f"--resume continues {args.resume} with its saved settings and takes no {flag}; to "
            f"change settings start a new run: pyro-vae train --config "
            f"{os.path.join(args.resume, 'config.json')} {flag} ..."
        )


def _config_from_file(args):
    """The config in ``--config``, overridden by the config options given on the command line."""
    from dataclasses import fields

    from .config import Config
    from .runs import CONFIG, read_config

    path = os.path.join(args.config, CONFIG) if os.path.isdir(args.config) else args.config
    config = read_config(path)
    given = _given_options(args.argv[1:])
    overrides = {f.name: getattr(args, f.name) for f in fields(config) if f.name in given}
    return Config.from_dict({**config.as_dict(), **overrides})


def cmd_demo(args):
    from .config import Config
    from .runs import default_run_dir, train_run

    config = Config() if args.epochs is None else Config(epochs=args.epochs)
    out = args.out or default_run_dir("demo")
    print(
        f"pyro-vae demo: a VAE ({config.z_dim}-d latent, hidden {list(config.hidden_dims)}) on "
        f"mnist-small, {plural(config.epochs, 'epoch')}, into {out}",
        flush=True,
    )
    _, metrics = train_run(
        config,
        out,
        overwrite=args.overwrite,
        quiet=args.quiet,
        started=_started(args, "demo", say=False),
    )
    _print_metrics(metrics, out)


def cmd_evaluate(args):
    from .runs import evaluate_run, load_run, load_run_data

    run = load_run(args.run)
    if args.images:
        return _evaluate_images(run, args)
    if args.label is not None:
        raise ConfigError("--label goes with --images (the test split has its own labels)")
    data = _scored_data(load_run_data(run.config), args)
    metrics = evaluate_run(
        run, data, num_samples=args.num_samples, elbo_samples=args.elbo_samples, quiet=args.quiet
    )
    note = _unfinished(run, args.run)
    if note:
        metrics["unfinished"] = note
    if args.json:
        print(to_json(metrics))
    else:
        if note:
            print(f"note: {note}")
        split = "" if args.on_train else " test split"
        print(f"{args.run}: {metrics['dataset']}{split}, {metrics['test_images']} images")
        print(f"  train ELBO     {metrics['train_elbo']:.2f} nats/image")
        elbo, log_px = (
            ("scored ELBO   ", "scored log p(x)")
            if args.on_train
            else ("test ELBO     ", "test log p(x) ")
        )
        print(f"  {elbo} {metrics['test_elbo']:.2f} nats/image")
        print(
            f"  {log_px} {metrics['test_log_px']:.2f}{_pm(metrics['test_log_px_stderr'])}"
            f" nats/image (K={metrics['log_px_samples']})"
        )
        if metrics.get("measures"):
            print(f"                 {metrics['measures']}")


def _scored_data(data, args):
    """The run's data, with its first ``--on-train N`` training images in place of the test
    split when the option is given."""
    from .data import scored_on_train

    return scored_on_train(data, args.on_train) if args.on_train else data


def _add_on_train_arg(p):
    p.add_argument(
        "--on-train",
        type=_positive_int,
        metavar="N",
        help="score the first N training images instead of the test split (Cremer et al. "
        "report their gaps on the first 1000); the 'test' columns are then theirs",
    )


def _unfinished(run, path):
    """What to say about a checkpoint taken before the run's last epoch, or ``None``."""
    from .lock import holder

    epoch, step = getattr(run, "progress", (run.config.epochs, 0))
    owner = holder(run.path)
    if (epoch >= run.config.epochs or getattr(run, "out_of_time", False)) and owner is None:
        return None
    where = f"epoch {epoch} of {run.config.epochs}" + (f" and {step} steps" if step else "")
    if owner is not None:
        return (
            f"{path} is still training (process {owner['pid']} on {owner.get('host')}); these "
            f"numbers are for its checkpoint after {where}"
        )
    return (
        f"{path} stopped after {where}; these numbers are for that checkpoint, and pyro-vae "
        f"train --resume {path} finishes the run"
    )


def _evaluate_images(run, args):
    """``evaluate --images FILE``: the run's ELBO and log p(x) of the user's own images."""
    from .data import load_images
    from .evaluate import standard_error

    x = load_images(args.images)
    y = None
    if run.conditioned_on == "label":
        if args.label is None:
            raise ConfigError(
                f"{args.run} is conditioned on a label: pass --label N, the class of the images "
                f"in {args.images} (0 to {run.num_classes - 1})"
            )
        y = args.label
    elif args.label is not None:
        raise ConfigError("--label needs a label-conditioned run (--condition label)")
    elbo = run.elbo(x, args.elbo_samples, y=y)
    log_px = run.log_px(x, num_samples=args.num_samples, progress=not args.quiet, y=y)
    metrics = {
        "images": args.images,
        "count": len(log_px),
        "elbo": round(elbo.mean().item(), 3),
        "log_px": round(log_px.mean().item(), 3),
        "log_px_stderr": standard_error(log_px),
        "log_px_samples": args.num_samples,
        "units": "nats per image (higher is better)",
    }
    if args.json:
        return print(to_json(metrics))
    print(f"{args.images}: {metrics['count']} images, scored by {args.run}")
    for name, key in (("ELBO", "elbo"), (f"log p(x), K={args.num_samples}", "log_px")):
        print(f"  {name:<22} {metrics[key]:.2f} nats/image")


def cmd_sample(args):
    from . import plots
    from .errors import ConfigError
    from .runs import class_samples, load_run

    run = load_run(args.run)
    label = "" if args.label is None else f"-label{args.label}"
    out = args.out or os.path.join(run.path, f"samples{label}-seed{args.seed}.png")
    if os.path.exists(out) and not args.overwrite:
        raise RunDirError(f"{out} exists; pass --overwrite or choose another --out")
    if not out.lower().endswith(".png"):
        raise RunDirError(f"--out must name a .png file, got {out}")
    if run.conditioned_on == "label" and args.label is None:
        # one row per class
        images = class_samples(run, per_class=args.nrow, seed=args.seed)
        title = f"{args.nrow} samples per label (one row each), seed {args.seed}"
        nrow = args.nrow
    else:
        if args.label is not None and run.conditioned_on != "label" and run.config.labels is None:
            raise ConfigError(
                "--label needs a run that generates per class: --condition label, --model m2, "
                "or a model file trained with --labels"
            )
        if run.conditioned_on == "image":
            raise ConfigError(
                "an image-completion run completes images; its inpainting.png shows them"
            )
        given = _images_to_read(run, args.n)
        images = run.sample(args.n, seed=args.seed, y=args.label, x=given)
        if args.label is not None and run.conditioned_on == "label" and not args.quiet:
            from .classifier import label_effect

            _warn_if_label_ignored(label_effect(run))
        label = "" if args.label is None else f" of label {args.label}"
        title = f"{args.n} samples{label}, seed {args.seed}"
        if given is not None:
            title += f", given what the model reads of {args.n} test images"
        nrow = min(args.n, args.nrow)
    plots.image_grid(images, out, title=title, nrow=nrow)
    print(out)


def _images_to_read(run, n):
    """The first ``n`` test images, for a program whose image distribution reads the images (a
    Multinomial's total count: no prior sample without them, as the run's samples.png); else
    ``None``."""
    from .runs import load_run_data

    if not run.structure.reads_x:
        return None
    test_x = load_run_data(run.config).test_x
    if n > test_x.shape[0]:
        raise ConfigError(
            f"this program draws given test images (its image site reads them), and the test "
            f"split has {test_x.shape[0]}; ask for --n {test_x.shape[0]} or fewer"
        )
    return test_x[:n]


def plural(n, word):
    """``"1 epoch"``, ``"2 epochs"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error of pyro-vae."""

    def error(self, message):
        self.exit(2, f"pyro-vae: error: {message} (see {self.prog} --help)\n")


def cmd_inspect(args):
    """Print each sample site's shapes for a batch of real images; write the plate diagram."""
    from . import inspect as inspect_
    from .config import build
    from .runs import load_run, load_run_data

    if os.path.isdir(args.target):
        run = load_run(args.target)
        config, model, guide = run.config, run.model, run.guide
        data = load_run_data(config)
    else:
        args.model = args.target
        config = _config_from_args(args)
        data = load_run_data(config)
        x = data.test_x[: args.batch]
        model, guide = build(
            config,
            data.x_shape,
            data.num_classes,
            x=x,
            y=data.model_y(x, data.test_y[: args.batch]),
            train_size=data.train_x.shape[0],
        )
    if args.diagram != "none" and os.path.exists(args.diagram) and not args.overwrite:
        raise RunDirError(f"{args.diagram} exists; pass --overwrite or choose another --diagram")
    x = data.test_x[: args.batch]
    print(
        f"{args.target} on {config.dataset}: a batch of {len(x)} test images {tuple(x.shape[1:])}"
    )
    print(inspect_.site_table(model, guide, x, data.model_y(x, data.test_y[: args.batch])))
    if args.diagram != "none":
        inspect_.render(model, x, data.model_y(x, data.test_y[: args.batch]), args.diagram)
        print(f"plate diagram: {args.diagram}")


def cmd_compare(args):
    from .compare import STRATEGIES
    from .errors import ConfigError
    from .runs import load_run, load_run_data, prepare_run_dir, train_run

    strategies = [s for s in args.strategies.replace(" ", "").split(",") if s]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ConfigError(
            f"unknown --strategies {','.join(unknown) or '(none)'}; "
            f"choose from {','.join(STRATEGIES)}"
        )
    families = list(args.families) if args.families else None
    if args.train_families:
        return _compare_families(args, strategies, families)
    if args.run:
        run = load_run(args.run)
        _check_handles("compare", run.structure, args.run)
        out = args.out or os.path.join("runs", f"compare-{run.config.dataset}-{_timestamp()}")
        prepare_run_dir(out, args.overwrite)
        train_seconds = _json_field(os.path.join(run.path, "metrics.json"), "seconds")
    else:
        _check_handles("compare", _structure(_config_from_args(args)))  # before training
        out = args.out or os.path.join("runs", f"compare-{args.dataset}-{_timestamp()}")
        prepare_run_dir(out, args.overwrite)
        print(f"training the model to compare on: {os.path.join(out, 'run')}", flush=True)
        run, metrics = train_run(
            _config_from_args(args), os.path.join(out, "run"), overwrite=True, quiet=args.quiet
        )
        train_seconds = metrics["seconds"]
    data = _scored_data(load_run_data(run.config), args)
    result = _compare_one(run, data, out, args, strategies, families, train_seconds)
    with open(os.path.join(out, "comparison.md")) as f:
        print(f.read())
    print(f"wrote {out}: comparison.json comparison.md and figures ({result['seconds']:.0f} s)")


def _compare_settings(args, strategies, families):
    return dict(
        strategies=strategies,
        num_images=args.num_images,
        e_steps=args.e_steps,
        refine_steps=args.refine_steps,
        lr=args.e_lr,
        refine_lr=args.refine_lr,
        elbo_samples=args.elbo_samples,
        log_px_samples=args.log_px_samples,
        mcmc_images=args.mcmc_images,
        mcmc_samples=args.mcmc_samples,
        mcmc_warmup=args.mcmc_warmup,
        grid_points=args.grid_points,
        grid_lim=args.grid_lim,
        seed=args.seed,
        families=families,
    )


def _compare_families(args, strategies, families):
    """``compare --train-families``: one model trained per family, each compared, and the
    models side by side (:func:`pyro_vae.compare.families_study`)."""
    from .compare import families_study
    from .errors import ConfigError
    from .runs import load_run_data

    if args.run:
        raise ConfigError(
            "--train-families trains one model per family itself; leave out --run (or compare "
            "a trained run with --run and --families)"
        )
    config = _config_from_args(args)
    _check_handles("compare", _structure(config))
    out = args.out or os.path.join("runs", f"compare-families-{args.dataset}-{_timestamp()}")
    data = _scored_data(load_run_data(config), args)
    text = families_study(
        config,
        data,
        out,
        args.train_families,
        args.overwrite,
        args.quiet,
        log=lambda line: print(line, flush=True),
        **_compare_settings(args, strategies, families),
    )
    print(text)
    print(f"wrote {out}: families.md families.json, and run-FAMILY/ compare-FAMILY/ for each")


def _compare_one(run, data, out, args, strategies, families, train_seconds):
    from .compare import compare_run

    return compare_run(
        run,
        data,
        out,
        overwrite=True,
        train_seconds=train_seconds,
        **_compare_settings(args, strategies, families),
    )


def _timestamp():
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def _json_field(path, key):
    try:
        with open(path) as f:
            return json.load(f).get(key)
    except (OSError, ValueError):
        return None


def _add_compare_parser(sub, d):
    from .compare import STRATEGIES
    from .families import FAMILIES
    from .inference import E_STEP_LR, REFINE_LR

    p = sub.add_parser(
        "compare",
        help="fit one model with each inference strategy and measure the gaps (a few minutes)",
        description="Train a VAE (or load one with --run), hold its decoder fixed, and compare "
        "inference strategies on the same images: ELBO, log p(x), cost, and the approximation "
        "and amortization gaps. Writes OUT/comparison.json, OUT/comparison.md and figures.",
    )
    _add_train_args(p, d)
    p.add_argument("--run", help="compare on this trained run directory instead of training")
    p.add_argument(
        "--strategies",
        default=",".join(STRATEGIES),
        help="comma-separated, from %(default)s",
    )
    p.add_argument(
        "--num-images",
        type=_positive_int,
        default=1000,
        help="train and test images each strategy is fitted to (default: %(default)s)",
    )
    p.add_argument(
        "--e-steps",
        type=_positive_int,
        default=300,
        help="E-step Adam steps for local and delta (default: %(default)s)",
    )
    p.add_argument(
        "--refine-steps",
        type=_non_negative_int,
        default=20,
        help="E-step steps refining the encoder's q for semi-amortized (default: %(default)s)",
    )
    p.add_argument(
        "--e-lr",
        type=_positive_float,
        default=E_STEP_LR,
        help="the E-step's Adam learning rate from the prior, for local (default: %(default)s)",
    )
    p.add_argument(
        "--refine-lr",
        type=_positive_float,
        default=REFINE_LR,
        help="its learning rate from the encoder's q, for semi-amortized, delta and q* "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--elbo-samples",
        type=_positive_int,
        default=100,
        help="latent samples per image for each ELBO (default: %(default)s)",
    )
    p.add_argument(
        "--mcmc-images", type=_positive_int, default=3, help="test images for NUTS (default: 3)"
    )
    p.add_argument(
        "--mcmc-samples", type=_positive_int, default=200, help="NUTS samples (default: 200)"
    )
    p.add_argument(
        "--mcmc-warmup", type=_positive_int, default=200, help="NUTS warm-up steps (default: 200)"
    )
    p.add_argument(
        "--grid-points",
        type=_positive_int,
        default=200,
        help="grid points per axis for the exact posterior when z_dim is 2 (default: 200)",
    )
    p.add_argument(
        "--grid-lim",
        type=_positive_float,
        default=5.0,
        help="the exact posterior's grid covers [-LIM, LIM]^2 (default: 5, where the prior has "
        "all but ~1e-6 of its mass; widen it when the report finds mass on the grid's edge)",
    )
    p.add_argument(
        "--families",
        type=_choice_list(tuple(FAMILIES)),
        help=f"guide families to find q* in, comma-separated from {','.join(FAMILIES)} "
        "(default: all that the latent sites allow; the encoder's own is always included)",
    )
    p.add_argument(
        "--train-families",
        type=_choice_list(tuple(FAMILIES)),
        metavar="FAMILIES",
        help="train one model per guide family (e.g. diag,flow), compare each, and write "
        "OUT/families.md: Cremer et al.'s Table 2 layout, rows = the family trained with",
    )
    _add_on_train_arg(p)
    p.set_defaults(func=cmd_compare)


# --- the teaching labs: gradvar and anomaly -------------------------------------------------


def _run_and_data(path):
    from .runs import load_run, load_run_data

    run = load_run(path)
    return run, load_run_data(run.config)


# What each command cannot do yet, by what the program is (its Structure): (test, why). A
# command on such a run stops in one line before it computes anything.
_UNHANDLED = {
    "compare": [
        (
            lambda s: s.conditional,
            "its strategies fit q(z|x) without a condition, and this model is conditioned on "
            "{condition}",
        ),
    ],
    "gradvar": [
        (
            lambda s: s.conditional,
            "it measures the gradients of an unconditional ELBO, and this model is conditioned "
            "on {condition}",
        ),
    ],
    "anomaly": [
        (
            lambda s: s.conditional,
            "its scores are of images alone, and this model is conditioned on {condition}",
        ),
    ],
}


def _check_handles(command, structure, run=None):
    """Refuse, in one line, a run of a kind ``command`` does not handle (see ``_UNHANDLED``)."""
    condition = "the label" if structure.y.kind == "labels" else "an image (its observed part)"
    for applies, why in _UNHANDLED.get(command, ()):
        if applies(structure):
            what = f"the run {run}" if run else "this model"
            raise ConfigError(
                f"pyro-vae {command} cannot work on {what}: {why.format(condition=condition)}"
            )


def _structure(config):
    """What the program ``config`` describes is (:class:`~pyro_vae.program.Structure`), learned
    before anything is trained, on the shape and classes of its data."""
    from .config import build
    from .runs import load_run_data

    data = load_run_data(config)
    x, y = data.example_batch()
    model, _ = build(config, data.x_shape, data.num_classes, x=x, y=y)
    return model.structure


def cmd_gradvar(args):
    from .gradvar import format_rows, study

    run, data = _run_and_data(args.run)
    _check_handles("gradvar", run.structure, args.run)
    out = args.out or os.path.join(run.path, "gradvar")
    result = study(
        run,
        data,
        out,
        args.overwrite,
        args.batch_size,
        args.progress,
        args.quiet,
        estimators=args.estimators,
        particles=args.particles,
        num_draws=args.draws,
        seed=args.seed,
    )
    print(to_json(result) if args.json else format_rows(result["rows"]))
    if not args.json:
        print(f"written: {out}/gradvar.json {out}/gradvar.png")


def cmd_anomaly(args):
    from .anomaly import format_tables, study

    run, data = _run_and_data(args.run)
    _check_handles("anomaly", run.structure, args.run)
    out = args.out or os.path.join(run.path, "anomaly")
    result, tables = study(
        run, data, out, args.ood, args.n, args.num_samples, args.overwrite, not args.quiet
    )
    if args.json:
        print(to_json(result))
    else:
        print(
            f"in: {data.name} test split, {result['images_in']} images; log p(x) with "
            f"K={args.num_samples}"
        )
        print(format_tables(tables))


def _add_lab_commands(sub):
    from .gradvar import ESTIMATORS

    p = sub.add_parser("gradvar", help="the gradient-variance lab: how noisy is each estimator")
    p.add_argument("run", help="a run directory")
    p.add_argument(
        "--draws",
        type=_positive_int,
        default=100,
        help="gradient estimates per estimator (default: %(default)s)",
    )
    p.add_argument(
        "--particles",
        type=_int_list,
        default=(1, 10),
        help="latent samples per image, e.g. 1,10,100 (default: 1,10)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=32,
        help="test images in the fixed minibatch (default: %(default)s)",
    )
    p.add_argument(
        "--estimators",
        type=_choice_list(ESTIMATORS),
        default=tuple(ESTIMATORS),
        help=f"comma-separated, from {','.join(ESTIMATORS)} (default: all)",
    )
    p.add_argument(
        "--progress",
        type=_epoch_list,
        default=(0,),
        help="also measure a fresh model from the run's config and seed, trained this "
        "many epochs, e.g. 0,1,10 (default: 0, the untrained model)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="(default: %(default)s)")
    p.add_argument("--out", help="output directory (default: RUN/gradvar)")
    p.add_argument("--overwrite", action="store_true", help="write into --out even if not empty")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_gradvar)

    p = sub.add_parser("anomaly", help="out-of-distribution detection by -ELBO, KL and -log p(x)")
    p.add_argument("run", help="a run directory")
    p.add_argument(
        "--ood",
        action="append",
        choices=("held-out", "mnist-small", "mnist", "fashion-mnist"),
        help="images to detect, repeatable: a dataset's test split, or held-out for "
        "the classes the run excluded (default: held-out if the run excluded classes, "
        "else fashion-mnist)",
    )
    p.add_argument(
        "--n", type=_positive_int, default=1000, help="images per side (default: %(default)s)"
    )
    p.add_argument(
        "--num-samples",
        "-k",
        type=_positive_int,
        default=100,
        help="importance samples K for log p(x) (default: %(default)s)",
    )
    p.add_argument("--out", help="output directory (default: RUN/anomaly)")
    p.add_argument("--overwrite", action="store_true", help="write into --out even if not empty")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_anomaly)


def make_parser():
    from .config import Config

    parser = _Parser(
        prog="pyro-vae",
        description="Variational autoencoders as Pyro model/guide pairs. Numbers are nats per "
        "image; higher is better.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="train the default VAE on the embedded mnist-small (~1 min)")
    p.add_argument("--epochs", type=_positive_int, help="override the demo's epoch count")
    _add_out_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a VAE and write a run directory")
    _add_train_args(p, Config())
    _add_resume_args(p)
    _add_distributed_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="ELBO and importance-sampled log p(x) of a run")
    p.add_argument("run", help="a run directory")
    p.add_argument(
        "--num-samples",
        "-k",
        type=_positive_int,
        default=1000,
        help="importance samples K per image (default: %(default)s)",
    )
    p.add_argument(
        "--elbo-samples",
        type=_positive_int,
        default=1,
        help="latent samples per image for the ELBO (default: %(default)s)",
    )
    _add_on_train_arg(p)
    p.add_argument(
        "--images",
        metavar="FILE",
        help="score these images (.npy, or .pt holding a tensor; values in [0, 1]) instead of "
        "the run's test split",
    )
    p.add_argument(
        "--label",
        type=_non_negative_int,
        help="with --images, for a label-conditioned run: the class of those images",
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sample", help="a PNG grid of images generated from the prior")
    p.add_argument("run", help="a run directory")
    p.add_argument("--n", type=_positive_int, default=100, help="(default: %(default)s)")
    p.add_argument("--nrow", type=_positive_int, default=10, help="images per row")
    p.add_argument("--seed", type=_seed, default=0, help="(default: %(default)s)")
    p.add_argument("--out", help="PNG path (default: RUN/samples-seedSEED.png)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--label",
        type=int,
        help="the class to generate, for a run that generates per class: --condition label, "
        "--model m2, a model file trained with --labels (default: a label-conditioned run draws "
        "one row per class, the others from p(x))",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="print only the PNG's path (no note when a run's samples ignore --label)",
    )
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser(
        "inspect",
        help="print a model's sample sites with their shapes and draw its plate diagram",
        description="MODEL is vae, hierarchical, a model file (FILE.py[:NAME]) or a run directory; the train "
        "options build it exactly as train would.",
    )
    p.add_argument(
        "target", metavar="MODEL", help="vae, hierarchical, a model file (FILE.py[:NAME]) or a run"
    )
    p.add_argument("--batch", type=_positive_int, default=4, help="images (default: %(default)s)")
    p.add_argument(
        "--diagram",
        default="model.png",
        help="where pyro.render_model writes the plate diagram (needs graphviz), or none "
        "(default: %(default)s)",
    )
    _add_train_args(p, Config())
    p.set_defaults(func=cmd_inspect)

    _add_compare_parser(sub, Config())

    _add_lab_commands(sub)
    _add_semi_parser(sub)
    return parser


def _add_semi_parser(sub):
    from .config import Config
    from .semi import VARIANTS

    d = Config(model="m2", labels=100, z_dim=16, hidden_dims=(256,), epochs=10)
    p = sub.add_parser(
        "semi",
        help="the semi-supervised table: M2's (or a model file's, --model FILE:NAME) test "
        "accuracy per number of labels and variant",
    )
    p.add_argument(
        "--label-counts",
        type=_int_list,
        default=(100, 600, 1000, 3000),
        help="numbers of labelled images (default: 100,600,1000,3000)",
    )
    p.add_argument(
        "--draws",
        type=_positive_int,
        default=5,
        help="labelled sets drawn per cell, seeds --seed, --seed + 1, ... (default: %(default)s)",
    )
    p.add_argument(
        "--variants",
        type=_choice_list(tuple(v.replace(" ", "") for v in VARIANTS)),
        default=tuple(v.replace(" ", "") for v in VARIANTS),
        help="comma-separated, from "
        + ",".join(v.replace(" ", "") for v in VARIANTS)
        + "; enumeration+aux weighs its classification term by --alpha where given, else by "
        "Kingma et al.'s 0.1 N",
    )
    p.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        help="runs trained at once, each in a process of its own on one torch thread; the "
        "table is the same for any number (default: one per core)",
    )
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    _add_train_args(
        p,
        d,
        out_help="folder for the table (semi.json, semi.png) and its runs (default: none; the "
        "runs go to a temporary folder, removed at the end, and the table is only printed)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the table that stopped in --out, given the same options again, or grow "
        "a finished one with more --draws or --label-counts: its finished runs are kept, an "
        "unfinished one continues from its last checkpoint",
    )
    for action in p._actions:  # set per cell by the table itself
        if action.dest in _SET_BY_SEMI:
            action.default, action.help = None, argparse.SUPPRESS
    # semi keeps its own defaults: the table's variants say the classification weight and share
    p.set_defaults(func=cmd_semi, model="m2", **{n: getattr(d, n) for n in _RECIPE_SETTINGS})


#: Options of train that semi sets per cell, and the semi option that chooses them.
_SET_BY_SEMI = {"labels": "--label-counts", "discrete": "--variants"}


def _announce_run(line):
    print(f"pyro-vae semi: {line}", file=sys.stderr, flush=True)


def cmd_semi(args):
    from .registry import entry
    from .semi import VARIANTS, default_jobs, table, write_table

    model = entry(args.model)
    if not (model.needs_labels or model.user_code):
        raise ConfigError(
            f"semi tables the built-in semi-supervised VAE (--model m2) or a model file whose "
            f"program observes a class site, not --model {args.model}; train a model's discrete "
            "latent with pyro-vae train --discrete"
        )
    for name, instead in _SET_BY_SEMI.items():
        if getattr(args, name) is not None:
            raise ConfigError(f"semi sets --{name} for each of its runs; choose with {instead}")
    if args.resume and not args.out:
        raise ConfigError("--resume continues the table in --out; give the folder it ran in")
    if args.out:  # for Ctrl-C: the runs keep their checkpoints in --out
        args.interrupted = lambda: "the table continues with the same command and --resume"
    args.labels = args.label_counts[0]
    config = _config_from_args(args)
    if model.user_code:
        _check_semi_model_file(config, args.model)
    names = {v.replace(" ", ""): v for v in VARIANTS}
    rows = table(
        config,
        labels=args.label_counts,
        draws=args.draws,
        variants=[names[v] for v in args.variants],
        out=args.out,
        log=(lambda line: None) if args.json or args.quiet else print,
        overwrite=args.overwrite,
        resume=args.resume,
        quiet=args.quiet,
        progress=None if args.quiet else _announce_run,
        jobs=args.jobs or default_jobs(),
    )
    if args.out:
        write_table(args.out, config, rows, args.draws)
    if args.json:
        print(to_json(rows))


def _check_semi_model_file(config, shown_as):
    """Refuse, before any training, a model file that cannot be trained with labels (no class
    site, or it fails to load or run), in one line."""
    from .config import build
    from .runs import load_run_data

    data = load_run_data(config)
    try:
        build(config, data.x_shape, data.num_classes, train_size=data.train_x.shape[0])
    except PyroVAEError as e:
        raise ConfigError(
            f"semi tables the built-in semi-supervised VAE (--model m2) or a model file whose "
            f"program observes a class site, not --model {shown_as}: {e}"
        ) from None


class _PipeClosed(BaseException):
    """Standard output's reader went away (``pyro-vae evaluate --json | head -c 1``). A
    BaseException, so that :func:`~pyro_vae.resources.faults` does not call it a disk error."""


def _run(args):
    try:
        args.func(args)
        sys.stdout.flush()  # here, not at exit, where a closed pipe could not be answered
    except BrokenPipeError:
        raise _PipeClosed from None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = None
    try:
        args = make_parser().parse_args(argv)
        args.argv = argv
        with faults():  # file-system and memory errors of any command, as one line too
            _run(args)
    except PyroVAEError as e:
        # One line: Pyro appends trace shapes to errors raised inside a model.
        print(f"pyro-vae: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        how = getattr(args, "interrupted", None)
        print(f"pyro-vae: interrupted{'; ' + how() if how else ''}", file=sys.stderr)
        return 130
    except _PipeClosed:
        # As Unix tools do: end quietly, with the status of a process that SIGPIPE ended. What
        # is still buffered for the closed pipe goes nowhere, so the exit flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    return 0


if __name__ == "__main__":
    sys.exit(main())
