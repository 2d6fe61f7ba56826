"""The ``pyro-vae`` command line: train, evaluate, sample, demo."""

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
    )
    if metrics is not None:  # the process of global rank 0 reports for all
        _print_metrics(metrics, args.out)


def cmd_train(args):
    from .runs import default_run_dir, train_run

    config = _config_from_args(args)
    if any(v is not None for v in (args.devices, args.num_nodes, args.strategy, args.accelerator)):
        return _train_distributed(args, config)
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
