"""Benchmark: the test-time E-step against the decoder passes it is made of.

An E-step step on N images draws ``E_STEP_PARTICLES`` latents per image (four), runs the decoder
forward on all of them, takes the Bernoulli log-likelihood and the analytic KL, one backward
pass to the latents' parameters and an Adam update. This script times it
(:func:`pyro_vae.inference.e_step` with a :class:`~pyro_vae.guides.LocalGuide` over all N images
at once) against the bare decoder forward+backward on the same number of latents, with the
decoder frozen in both, and prints one JSON object.

Target (issue 18): an E-step step over 10,000 images costs at most 1.3x the decoder's
forward+backward.
"""

import json
import os
import platform
import statistics
import time

import torch

import pyro_vae
from pyro_vae.guides import LocalGuide
from pyro_vae.inference import E_STEP_PARTICLES, e_step

# With CI set (the test suite's smoke run) the sizes are tiny: the numbers then mean nothing.
smoke_test = "CI" in os.environ
# Each timed E-step includes its one-time costs (the program's checks, recording the loss),
# spread over 10 steps: a real E-step spreads them over 300, so the ratio here is pessimistic.
N, STEPS, REPEATS = (300, 2, 1) if smoke_test else (10_000, 10, 3)
# benchmarks/gpu_check.py runs this script on a GPU with PYRO_VAE_BENCH_DEVICE=cuda.
DEVICE = torch.device(os.environ.get("PYRO_VAE_BENCH_DEVICE", "cpu"))


def images(n):
    """n binarized digits from mnist-small (repeated: it holds 5,000)."""
    data = pyro_vae.load_dataset("mnist-small", binarize="none")
    x = torch.cat([data.train_x, data.test_x]).repeat(n // 5000 + 1, 1, 1, 1)[:n]
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(0)).to(DEVICE)


def synchronize():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def decoder_passes(model, x, steps):
    """Seconds per decoder forward + Bernoulli log-likelihood + backward to z, on as many latents
    per image as the E-step draws."""
    z = torch.zeros(E_STEP_PARTICLES, x.shape[0], model.z_dim, device=x.device, requires_grad=True)
    start = time.perf_counter()
    for _ in range(steps):
        loss = -model.x_dist(z).log_prob(x).sum()
        loss.backward()
        z.grad = None
    synchronize()
    return (time.perf_counter() - start) / steps


def e_step_steps(model, x, steps):
    guide = LocalGuide(x.shape[0], model.z_dim).to(x.device)
    start = time.perf_counter()
    e_step(model, guide, x, steps=steps)
    synchronize()
    return (time.perf_counter() - start) / steps


def main():
    config = pyro_vae.Config()
    model, _ = pyro_vae.build(config, (1, 28, 28))
    model.to(DEVICE).requires_grad_(False)
    x = images(N)
    e_step_steps(model, x[:500], 2), decoder_passes(model, x[:500], 2)  # warm-up
    decoder, estep = [], []
    for _ in range(REPEATS):  # interleaved, so a load change hits both alike
        decoder.append(decoder_passes(model, x, STEPS))
        estep.append(e_step_steps(model, x, STEPS))
    ratio = statistics.median(estep) / statistics.median(decoder)
    result = {
        "benchmark": "e_step",
        "images": N,
        "model": {"z_dim": config.z_dim, "hidden_dims": list(config.hidden_dims)},
        "steps_per_repeat": STEPS,
        "latents_per_image": E_STEP_PARTICLES,
        "decoder_forward_backward_seconds": round(statistics.median(decoder), 4),
        "e_step_seconds_per_step": round(statistics.median(estep), 4),
        "ratio": round(ratio, 3),
        "target": {"ratio_max": 1.3},
        "target_met": ratio <= 1.3,
        "device": str(DEVICE),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "load_average": os.getloadavg()[0],
        },
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
