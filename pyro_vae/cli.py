"""The ``pyro-vae`` command line: train, evaluate, sample, demo, compare."""

import argparse
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


def _non_negative_int(text):
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
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
    data = load_dataset(run.config.dataset, run.config.binarize)
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


def cmd_compare(args):
    from .compare import STRATEGIES, compare_run
    from .data import load_dataset
    from .errors import ConfigError
    from .runs import load_run, prepare_run_dir, train_run

    strategies = [s for s in args.strategies.replace(" ", "").split(",") if s]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown or not strategies:
        raise ConfigError(
            f"unknown --strategies {','.join(unknown) or '(none)'}; "
            f"choose from {','.join(STRATEGIES)}"
        )
    if args.run:
        run = load_run(args.run)
        out = args.out or os.path.join("runs", f"compare-{run.config.dataset}-{_timestamp()}")
        prepare_run_dir(out, args.overwrite)
        train_seconds = _json_field(os.path.join(run.path, "metrics.json"), "seconds")
    else:
        out = args.out or os.path.join("runs", f"compare-{args.dataset}-{_timestamp()}")
        prepare_run_dir(out, args.overwrite)
        print(f"training the model to compare on: {os.path.join(out, 'run')}", flush=True)
        run, metrics = train_run(
            _config_from_args(args), os.path.join(out, "run"), overwrite=True, quiet=args.quiet
        )
        train_seconds = metrics["seconds"]
    data = load_dataset(run.config.dataset, run.config.binarize)
    result = compare_run(
        run,
        data,
        out,
        overwrite=True,
        strategies=strategies,
        num_images=args.num_images,
        e_steps=args.e_steps,
        refine_steps=args.refine_steps,
        lr=args.e_lr,
        elbo_samples=args.elbo_samples,
        log_px_samples=args.log_px_samples,
        mcmc_images=args.mcmc_images,
        mcmc_samples=args.mcmc_samples,
        mcmc_warmup=args.mcmc_warmup,
        grid_points=args.grid_points,
        seed=args.seed,
        train_seconds=train_seconds,
    )
    print(open(os.path.join(out, "comparison.md")).read())
    print(f"wrote {out}: comparison.json comparison.md and figures ({result['seconds']:.0f} s)")


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
        default=0.1,
        help="the E-step's Adam learning rate (default: %(default)s)",
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
    p.set_defaults(func=cmd_compare)


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

    _add_compare_parser(sub, Config())
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
