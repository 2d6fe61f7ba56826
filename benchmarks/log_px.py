"""Benchmark: the importance-sampled log p(x) against the decoder passes it is made of.

``pyro_vae.evaluate.log_px`` with K samples per image runs the guide once per chunk of images,
draws K latents per image, and runs the model's decoder on every one of them, in chunks of at
most 32,768 rows, through Pyro's traces. The work it cannot avoid is the decoder's forward pass
on N * K latents and the Bernoulli log-likelihood of each image under each; this script times
that bare work (the same decoder, the same chunks, no Pyro) against ``log_px`` in alternating
repeats, and prints one JSON object.

Target (issue 18): at most 1.3x the bare decoder forward passes.
"""

import json
import os
import statistics
import time

import torch
from _machine import machine
from torch.nn import functional as F

import pyro_vae
from pyro_vae import evaluate

# With CI set (the test suite's smoke run) the sizes are tiny: the numbers then mean nothing.
smoke_test = "CI" in os.environ
N, K, REPEATS = (20, 10, 1) if smoke_test else (100, 1000, 3)
# benchmarks/gpu_check.py runs this script on a GPU with PYRO_VAE_BENCH_DEVICE=cuda.
DEVICE = torch.device(os.environ.get("PYRO_VAE_BENCH_DEVICE", "cpu"))


def images(n):
    """n binarized digits from mnist-small."""
    data = pyro_vae.load_dataset("mnist-small", binarize="none")
    x = data.test_x.repeat(n // data.test_x.shape[0] + 1, 1, 1, 1)[:n]
    return torch.bernoulli(x, generator=torch.Generator().manual_seed(0)).to(DEVICE)


@torch.no_grad()
def decoder_passes(model, x, k, max_rows=evaluate.DEFAULT_MAX_ROWS):
    """Seconds for the decoder on ``k`` latents per image and each image's Bernoulli
    log-likelihood under them, chunked as evaluation chunks its rows."""
    per_image = max(1, max_rows // k)
    start = time.perf_counter()
    for first in range(0, x.shape[0], per_image):
        xc = x[first : first + per_image]
        z = torch.randn(k, xc.shape[0], model.z_dim, device=x.device)
        logits = model.decoder(z, None)
        target = xc.expand(k, *xc.shape)
        F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum((-3, -2, -1))
    synchronize(x)
    return time.perf_counter() - start


def log_px(model, guide, x, k):
    start = time.perf_counter()
    evaluate.log_px(model, guide, x, num_samples=k)
    synchronize(x)
    return time.perf_counter() - start


def synchronize(x):
    if x.device.type == "cuda":
        torch.cuda.synchronize()


def main():
    torch.manual_seed(0)
    config = pyro_vae.Config()
    model, guide = pyro_vae.build(config, (1, 28, 28))
    model.to(DEVICE).eval(), guide.to(DEVICE).eval()
    x = images(N)
    decoder_passes(model, x[:40], 10), log_px(model, guide, x[:40], 10)  # warm-up
    bare, ours = [], []
    for _ in range(REPEATS):  # interleaved, so a load change hits both alike
        bare.append(decoder_passes(model, x, K))
        ours.append(log_px(model, guide, x, K))
    ratios = [o / b for o, b in zip(ours, bare)]
    ratio = statistics.median(ratios)
    result = {
        "benchmark": "log_px",
        "images": N,
        "samples_per_image": K,
        "model": {"z_dim": config.z_dim, "hidden_dims": list(config.hidden_dims)},
        "decoder_forward_seconds": round(statistics.median(bare), 3),
        "log_px_seconds": round(statistics.median(ours), 3),
        "ratio": round(ratio, 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "target": {"ratio_max": 1.3},
        "target_met": ratio <= 1.3,
        "device": str(DEVICE),
        "machine": {**machine(), "load_average": round(os.getloadavg()[0], 2)},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
