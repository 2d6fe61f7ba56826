"""The ``pyro-vae`` command line: train, evaluate, sample, demo, gradvar, anomaly."""

import argparse
import itertools
import json
import os
import sys

from .errors import PyroVAEError, RunDirError


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _int_list(text):
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 512,256, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated positive integers such as 512,256, got {text!r}"
        )
    return tuple(values)


def _label_list(text):
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        values = [-1]
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated class labels (integers >= 0) such as 1,7, got {text!r}"
        )
    return tuple(values)


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


def _add_train_args(p, d):
    from .config import ELBOS
    from .data import BINARIZATIONS, DATASETS

    p.add_argument(
        "--dataset",
        default=d.dataset,
        choices=DATASETS,
        help="mnist-small is embedded; mnist and fashion-mnist come through torchvision "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--binarize",
        default=d.binarize,
        choices=BINARIZATIONS,
        help="none, static (one fixed-seed sample) or dynamic (fresh per minibatch) "
        "(default: %(default)s)",
    )
    p.add_argument("--z-dim", type=_positive_int, default=d.z_dim, help="(default: %(default)s)")
    p.add_argument(
        "--hidden-dims",
        type=_int_list,
        default=d.hidden_dims,
        help="encoder widths, reversed for the decoder, e.g. 512,256 (default: %(default)s)",
    )
    p.add_argument("--epochs", type=_positive_int, default=d.epochs, help="(default: %(default)s)")
    p.add_argument(
        "--batch-size", type=_positive_int, default=d.batch_size, help="(default: %(default)s)"
    )
    p.add_argument(
        "--lr", type=_positive_float, default=d.lr, help="Adam learning rate (default: %(default)s)"
    )
    p.add_argument(
        "--elbo",
        default=d.elbo,
        choices=tuple(ELBOS),
        help="trace: Monte Carlo KL (Trace_ELBO); meanfield: analytic KL "
        "(TraceMeanField_ELBO) (default: %(default)s)",
    )
    p.add_argument(
        "--num-particles",
        type=_positive_int,
        default=d.num_particles,
        help="latent samples per image per step (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
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
    _add_out_args(p)


def _add_out_args(p):
    p.add_argument("--out", help="run directory (default: runs/DATASET-TIMESTAMP)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into --out even if it exists and is not empty",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _config_from_args(args):
    from .config import Config

    return Config(
        dataset=args.dataset,
        binarize=args.binarize,
        z_dim=args.z_dim,
        hidden_dims=args.hidden_dims,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        elbo=args.elbo,
        num_particles=args.num_particles,
        seed=args.seed,
        log_px_samples=args.log_px_samples,
        exclude_classes=args.exclude_classes,
    )


def _print_metrics(metrics, out):
    print(f"run directory: {out}")
    print(f"  dataset        {metrics['dataset']} (binarize={metrics['binarize']})")
    print(f"  training       {metrics['epochs']} epochs in {metrics['seconds']:.1f} s")
    print(f"  train ELBO     {metrics['train_elbo']:.2f} nats/image")
    print(f"  test ELBO      {metrics['test_elbo']:.2f} nats/image")
    print(
        f"  test log p(x)  {metrics['test_log_px']:.2f} ± {metrics['test_log_px_stderr']:.2f} "
        f"nats/image (importance sampling, K={metrics['log_px_samples']})"
    )
    print("  figures        samples.png reconstructions.png latent.png training-curve.png")


def cmd_train(args):
    from .runs import default_run_dir, train_run

    config = _config_from_args(args)
    out = args.out or default_run_dir(config.dataset)
    _, metrics = train_run(config, out, overwrite=args.overwrite, quiet=args.quiet)
    _print_metrics(metrics, out)


def cmd_demo(args):
    from .config import Config
    from .runs import default_run_dir, train_run

    config = Config() if args.epochs is None else Config(epochs=args.epochs)
    out = args.out or default_run_dir("demo")
    print(
        f"pyro-vae demo: a VAE ({config.z_dim}-d latent, hidden {list(config.hidden_dims)}) on "
        f"mnist-small, {config.epochs} epochs",
        flush=True,
    )
    _, metrics = train_run(config, out, overwrite=args.overwrite, quiet=args.quiet)
    _print_metrics(metrics, out)


def cmd_evaluate(args):
    from .data import load_dataset
    from .runs import evaluate_run, load_run

    run = load_run(args.run)
    data = load_dataset(
        run.config.dataset, run.config.binarize, exclude_classes=run.config.exclude_classes
    )
    metrics = evaluate_run(
        run, data, num_samples=args.num_samples, elbo_samples=args.elbo_samples, quiet=args.quiet
    )
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{args.run}: {metrics['dataset']} test split, {metrics['test_images']} images")
        print(f"  train ELBO     {metrics['train_elbo']:.2f} nats/image")
        print(f"  test ELBO      {metrics['test_elbo']:.2f} nats/image")
        print(
            f"  test log p(x)  {metrics['test_log_px']:.2f} ± {metrics['test_log_px_stderr']:.2f}"
            f" nats/image (K={metrics['log_px_samples']})"
        )


def cmd_sample(args):
    from . import plots
    from .runs import load_run

    run = load_run(args.run)
    out = args.out or os.path.join(run.path, f"samples-seed{args.seed}.png")
    if os.path.exists(out) and not args.overwrite:
        raise RunDirError(f"{out} exists; pass --overwrite or choose another --out")
    if not out.lower().endswith(".png"):
        raise RunDirError(f"--out must name a .png file, got {out}")
    images = run.sample(args.n, seed=args.seed)
    plots.image_grid(
        images, out, title=f"{args.n} samples, seed {args.seed}", nrow=min(args.n, args.nrow)
    )
    print(out)


# --- the teaching labs: gradvar and anomaly -------------------------------------------------


def _run_and_data(path):
    from .data import load_dataset
    from .runs import load_run

    run = load_run(path)
    c = run.config
    return run, load_dataset(c.dataset, c.binarize, exclude_classes=c.exclude_classes)


def cmd_gradvar(args):
    from . import plots
    from .gradvar import format_rows, measure_stages, training_stages
    from .runs import prepare_run_dir, write_json

    run, data = _run_and_data(args.run)
    out = args.out or os.path.join(run.path, "gradvar")
    prepare_run_dir(out, args.overwrite)
    x = data.test_x[: args.batch_size]
    # a generator, so each stage is measured before training moves on to the next
    stages = itertools.chain(
        training_stages(run.config, data, args.progress, quiet=args.quiet),
        [(f"trained ({run.config.epochs} epochs)", run.model, run.guide)],
    )
    rows = measure_stages(
        stages,
        x,
        estimators=args.estimators,
        particles=args.particles,
        num_draws=args.draws,
        seed=args.seed,
    )
    result = {
        "run": os.path.abspath(run.path),
        "images": int(x.shape[0]),
        "gradient_of": "negative ELBO per image",
        "rows": rows,
    }
    write_json(os.path.join(out, "gradvar.json"), result)
    plots.gradient_variance(
        rows,
        os.path.join(out, "gradvar.png"),
        title=f"{data.name}: variance of {args.draws} gradient estimates on {x.shape[0]} images",
    )
    print(json.dumps(result, indent=2) if args.json else format_rows(rows))
    if not args.json:
        print(f"written: {out}/gradvar.json {out}/gradvar.png")


def _ood_sets(run, data, names, n):
    """name -> images to detect: another dataset's test split, or the run's held-out classes."""
    from .data import load_dataset
    from .errors import ConfigError

    sets = {}
    for name in names:
        if name == "held-out":
            if not run.config.exclude_classes:
                raise ConfigError(
                    "--ood held-out needs a run trained with --exclude-classes; this one saw "
                    "every class"
                )
            held_out = load_dataset(run.config.dataset, run.config.binarize).select_classes(
                run.config.exclude_classes
            )
            label = ",".join(map(str, run.config.exclude_classes))
            sets[f"held-out {label}"] = held_out.test_x[:n]
        else:
            binarize = run.config.binarize if run.config.binarize != "none" else "static"
            sets[name] = load_dataset(name, binarize).test_x[:n]
    return sets


def cmd_anomaly(args):
    from .anomaly import anomaly_scores, detect, format_tables
    from .runs import prepare_run_dir, write_json

    run, data = _run_and_data(args.run)
    names = args.ood or (["held-out"] if run.config.exclude_classes else ["fashion-mnist"])
    out = args.out or os.path.join(run.path, "anomaly")
    oods = _ood_sets(run, data, names, args.n)
    prepare_run_dir(out, args.overwrite)
    x_in = data.test_x[: args.n]
    scores_in = anomaly_scores(run, x_in, num_samples=args.num_samples)
    tables = {}
    for name, x_out in oods.items():
        slug = "".join(c if c.isalnum() else "-" for c in name)
        tables[name], _ = detect(
            run,
            scores_in,
            x_out,
            num_samples=args.num_samples,
            path=os.path.join(out, f"scores-{slug}.png"),
            title=f"model trained on {data.name}: its test images vs {name}",
            names=(f"{data.name} (in)", f"{name} (out)"),
        )
    result = {
        "run": os.path.abspath(run.path),
        "in": data.name,
        "num_samples": args.num_samples,
        "images_in": int(x_in.shape[0]),
        "tables": {
            name: {"images_out": int(oods[name].shape[0]), "rows": rows}
            for name, rows in tables.items()
        },
    }
    write_json(os.path.join(out, "anomaly.json"), result)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"in: {data.name} test split, {x_in.shape[0]} images; log p(x) with K={args.num_samples}"
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
        type=_label_list,
        default=(0,),
        help="also measure a fresh model from the run's config and seed, trained this "
        "many epochs, e.g. 0,1,10 (default: 0, the untrained model)",
    )
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
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
    p.set_defaults(func=cmd_anomaly)


def make_parser():
    from .config import Config

    parser = argparse.ArgumentParser(
        prog="pyro-vae",
        description="Variational autoencoders as Pyro model/guide pairs. Numbers are nats per "
        "image; higher is better.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="train the default VAE on the embedded mnist-small (~1 min)")
    p.add_argument("--epochs", type=_positive_int, help="override the demo's epoch count")
    _add_out_args(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a VAE and write a run directory")
    _add_train_args(p, Config())
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
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sample", help="a PNG grid of images generated from the prior")
    p.add_argument("run", help="a run directory")
    p.add_argument("--n", type=_positive_int, default=100, help="(default: %(default)s)")
    p.add_argument("--nrow", type=_positive_int, default=10, help="images per row")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--out", help="PNG path (default: RUN/samples-seedSEED.png)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=cmd_sample)

    _add_lab_commands(sub)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = make_parser().parse_args(argv)
    try:
        args.func(args)
    except PyroVAEError as e:
        # One line: Pyro appends trace shapes to errors raised inside a model.
        print(f"pyro-vae: error: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pyro-vae: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
