"""Benchmark: what one training step costs in pyro_vae against the same step written by hand.

pyro_vae's step is the one :func:`pyro_vae.fit` takes by default (the ELBO's operations recorded
and replayed) and the one it takes with ``step="compiled"`` (``--step compiled``: compiled by
``torch.compile``): the Pyro model and amortized guide from :func:`pyro_vae.build`,
``TraceMeanField_ELBO`` as a loss module, the trainer's Adam step with its divergence checks. The reference below is the same step as a
person would write it in eager PyTorch without Pyro: the identical networks (same classes, same
initial weights), the Bernoulli log-likelihood as ``binary_cross_entropy_with_logits``, the
closed-form Gaussian KL, the same ``N / batch`` scale, the same Adam settings and a ``loss.item()``
to log the loss. Both run on the same binarized batch with the same torch threads, alternating A
then B over several rounds in one process, so a change of machine load hits both alike; the
figure is the median of the per-round ratios.

The peer runs in the same rounds at MLP batch 128: Pyro's own VAE example (``_peer.py``: its
networks, ``SVI`` with ``pyro.optim.Adam``, ``Trace_ELBO`` and ``JitTrace_ELBO``), each path against
the same networks and objective written by hand. So the JSON shows pyro_vae, the peer and the
hand-written limit side by side, measured under the same load.

Target (issue 18): at most 1.05x at batch 128 for the MLP on CPU. Prints one JSON object.
"""

import copy
import json
import os
import statistics
import time
import warnings

import _peer
import pyro
import torch
from _machine import machine
from torch.nn import functional as F

import pyro_vae
from pyro_vae.program import ParamScope
from pyro_vae.traced import STEPS as STEP_KINDS
from pyro_vae.traced import TracedLoss
from pyro_vae.train import Schedule, adam

# With CI set (the test suite's smoke run) the sizes are tiny: the numbers then mean nothing.
smoke_test = "CI" in os.environ
ROUNDS, STEPS = (2, 2) if smoke_test else (9, 40)
CASES = [("mlp", (400,), 128), ("mlp", (400,), 1024), ("conv", (32, 64), 128)]
if not smoke_test:
    CASES.append(("conv", (32, 64), 1024))
N = 60_000  # the training set size the ELBO is scaled to, as for Fashion-MNIST
# benchmarks/gpu_check.py runs this script on a GPU with PYRO_VAE_BENCH_DEVICE=cuda.
DEVICE = torch.device(os.environ.get("PYRO_VAE_BENCH_DEVICE", "cpu"))


def batch(size):
    """``size`` binarized digits from mnist-small (repeated when more are asked for)."""
    data = pyro_vae.load_dataset("mnist-small", binarize="none")
    x = data.train_x.repeat(size // data.train_x.shape[0] + 1, 1, 1, 1)[:size]
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(0)).to(DEVICE)


def pyro_vae_step(config, x, step="recorded"):
    """pyro_vae's training step, built as :func:`pyro_vae.fit` builds it for ``fit(step=...)``:
    the ELBO's recorded loss (:class:`~pyro_vae.traced.TracedLoss`, the default), the compiled
    one (:class:`~pyro_vae.traced.CompiledLoss`) or Pyro's eager step (what fit falls back to).
    Also the seconds its first call took (with the compiled step, the compilation) and, where
    the compiled step fell back to the recording, why."""
    model, guide = pyro_vae.build(config, x.shape[1:])
    model.to(DEVICE), guide.to(DEVICE)
    loss_fn = config.make_elbo()(model, guide)
    make = STEP_KINDS[step]
    lean = None if make is None else make(loss_fn, x.shape[0], None)
    schedule = Schedule(loss_fn, config.lr, traced=lean)
    idx = torch.arange(x.shape[0])
    start = time.perf_counter()
    schedule(x, None, idx, N, 1, 1)  # records or compiles
    first_call = time.perf_counter() - start
    failed = lean.compile_failed if step == "compiled" else None
    return (lambda: schedule(x, None, idx, N, 1, 1)), model, guide, first_call, failed


def hand_written_loss(encoder, decoder, x):
    """The negative ELBO of the minibatch, scaled to the N images: the Bernoulli log-likelihood of
    one reparameterized sample and the closed-form KL from N(0, I)."""
    loc, std = encoder(x)
    z = loc + std * torch.randn_like(loc)
    nll = F.binary_cross_entropy_with_logits(decoder(z), x, reduction="sum")
    kl = 0.5 * (loc.pow(2) + std.pow(2) - 1).sum() - std.log().sum()
    return N / x.shape[0] * (nll + kl)


def hand_written_step(model, guide, x, lr):
    """The same networks, objective and optimizer in plain PyTorch."""
    # The networks are plain torch modules (pyro_vae.nets); copies share nothing with the model.
    encoder, decoder = copy.deepcopy(guide.encoder), copy.deepcopy(model.decoder)
    optimizer = adam([*encoder.parameters(), *decoder.parameters()], lr)

    def step():
        loss = hand_written_loss(encoder, decoder, x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def seconds_per_step(step, steps):
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def peer_steps(x):
    """Pyro's VAE example's step by each of its ELBOs, and the same networks' hand-written step.
    Each peer keeps its parameters in a param store of its own (swapped in around its step), so
    two of them can alternate in one process."""
    vae = _peer.PeerVAE(x_dim=x[0].numel()).to(DEVICE)
    steps = {"peer_hand_written": _peer.hand_written_step(copy.deepcopy(vae), x)}
    for name in _peer.ELBOS:
        scope = ParamScope()
        with scope:
            svi = _peer.peer_svi(copy.deepcopy(vae), name)

        def step(svi=svi, scope=scope):
            with scope:
                return svi.step(x)

        steps[f"peer_{name}"] = step
    return steps


def alternate(steps):
    """Median seconds per step of each of ``steps``, timed in turn over ``ROUNDS`` rounds, and
    each round's times (for ratios within a round)."""
    for step in steps.values():  # warm-up: allocator, first-call caches, the peer's JIT
        seconds_per_step(step, 3)
    rounds = []
    for _ in range(ROUNDS):
        rounds.append({name: seconds_per_step(step, STEPS) for name, step in steps.items()})
    return rounds


def ms(rounds, name):
    return round(1e3 * statistics.median(r[name] for r in rounds), 3)


def ratio(rounds, name, reference):
    ratios = [r[name] / r[reference] for r in rounds]
    return {
        "ratio": round(statistics.median(ratios), 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
    }


def case(net, hidden_dims, batch_size, with_peer=False, with_compiled=True):
    config = pyro_vae.Config(net=net, hidden_dims=hidden_dims)
    x = batch(batch_size)
    ours, model, guide, *_ = pyro_vae_step(config, x)
    steps = {"hand_written": hand_written_step(model, guide, x, config.lr), "pyro_vae": ours}
    if with_compiled:
        compiled, _, _, compile_seconds, failed = pyro_vae_step(config, x, "compiled")
        steps["pyro_vae_compiled"] = compiled
    if with_peer:
        steps["pyro_vae_eager"] = pyro_vae_step(config, x, "eager")[0]
        steps.update(peer_steps(x))
    rounds = alternate(steps)
    result = {
        "net": net,
        "hidden_dims": list(hidden_dims),
        "z_dim": config.z_dim,
        "batch_size": batch_size,
        "hand_written_ms": ms(rounds, "hand_written"),
        "pyro_vae_ms": ms(rounds, "pyro_vae"),
        **ratio(rounds, "pyro_vae", "hand_written"),
    }
    if with_compiled:
        result["pyro_vae_compiled"] = {
            "what": "fit(step='compiled') (--step compiled): the loss captured and compiled by "
            "torch.compile, the same numbers to float rounding",
            "ms": ms(rounds, "pyro_vae_compiled"),
            **ratio(rounds, "pyro_vae_compiled", "hand_written"),
            "first_call_seconds": round(compile_seconds, 1),
            # On a machine where torch.compile fails (no C++ compiler, no Triton on a GPU) the
            # step is the recording, and the figures above are the recording's.
            "compiled": failed is None,
            **({} if failed is None else {"why_not": failed}),
        }
    if with_peer:
        result["pyro_vae_eager"] = {
            "what": "pyro_vae's eager Pyro step, what fit falls back to where a recording "
            "cannot apply",
            "ms": ms(rounds, "pyro_vae_eager"),
            **ratio(rounds, "pyro_vae_eager", "hand_written"),
        }
        result["peer"] = {
            "what": "Pyro's VAE example (784-400-50, SVI + pyro.optim.Adam) against its networks "
            "and Trace_ELBO objective written by hand (one torch Adam); same batch, same rounds",
            "hand_written_ms": ms(rounds, "peer_hand_written"),
            **{
                name: {
                    "ms": ms(rounds, f"peer_{name}"),
                    **ratio(rounds, f"peer_{name}", "peer_hand_written"),
                }
                for name in _peer.ELBOS
            },
        }
    return result


def breakdown(batch_size=128):
    """Where the MLP step's time goes, each part timed in the same alternating rounds: the loss's
    forward pass, and forward with backward, recorded (what fit runs), hand-written and through
    Pyro's eager step; the gradient-norm check the recorded step leaves out; Pyro's validation,
    which the eager step pays (the whole eager step with it off)."""
    config = pyro_vae.Config()
    x = batch(batch_size)
    model, guide = pyro_vae.build(config, x.shape[1:])
    model.to(DEVICE), guide.to(DEVICE)
    loss_fn = config.make_elbo()(model, guide)
    traced = TracedLoss(loss_fn)
    encoder, decoder = copy.deepcopy(guide.encoder), copy.deepcopy(model.decoder)
    idx = torch.arange(batch_size)
    params = list(loss_fn.parameters())
    eager_step = pyro_vae_step(config, x, "eager")[0]

    def backward(loss):
        loss.backward()
        for p in (*params, *encoder.parameters(), *decoder.parameters()):
            p.grad = None

    def unvalidated():
        with pyro.validation_enabled(False):
            eager_step()

    traced(x, None, idx, N).backward()  # gradients for the norm below
    parts = {
        "forward_recorded": lambda: traced(x, None, idx, N),
        "forward_hand_written": lambda: hand_written_loss(encoder, decoder, x),
        "forward_pyro_eager": lambda: loss_fn(x, None, idx, N),
        "gradient_norm_check": lambda: torch.isfinite(
            torch.nn.utils.clip_grad_norm_(params, float("inf"))
        ).item(),
        "forward_backward_recorded": lambda: backward(traced(x, None, idx, N)),
        "forward_backward_hand_written": lambda: backward(hand_written_loss(encoder, decoder, x)),
        "eager_step_validation_on": eager_step,
        "eager_step_validation_off": unvalidated,
    }
    rounds = alternate(parts)
    return {"case": f"mlp, batch {batch_size}", **{f"{k}_ms": ms(rounds, k) for k in parts}}


def main():
    # The peer's JitTrace_ELBO traces with torch.jit, which torch now announces as deprecated.
    warnings.filterwarnings("ignore", ".*torch.jit.trace.*", FutureWarning)
    torch.manual_seed(0)
    # The smoke run compiles nothing: each compilation takes seconds to a minute
    # (tests/test_traced.py compiles a training step).
    results = [
        case(*c, with_peer=i == 0, with_compiled=not smoke_test) for i, c in enumerate(CASES)
    ]
    headline = results[0]["ratio"]
    compiled_case = results[0].get("pyro_vae_compiled", {})
    compiled = compiled_case["ratio"] if compiled_case.get("compiled") else float("inf")
    print(
        json.dumps(
            {
                "benchmark": "step_overhead",
                "elbo": "TraceMeanField_ELBO (pyro_vae) vs BCE + closed-form KL (hand-written)",
                "torch_version": torch.__version__,
                "pyro_version": pyro.__version__,
                "rounds": ROUNDS,
                "steps_per_round": STEPS,
                "cases": results,
                "breakdown": breakdown(),
                "target": {"case": "mlp, batch 128", "ratio_max": 1.05},
                "target_met": {
                    "recorded (default)": headline <= 1.05,
                    "compiled": compiled <= 1.05,
                },
                "device": str(DEVICE),
                "machine": {**machine(), "load_average": round(os.getloadavg()[0], 2)},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
