"""Benchmark: peak memory of training and of importance-sampled log p(x) with K up to 5,000.

Each measurement runs in a fresh Python process (so peaks do not mask each other) and reports the
process's peak resident set size (``ru_maxrss``) above a baseline process that only imports
pyro_vae, loads the data and builds the model. Evaluation draws K latents per image in chunks of at
most ``max_rows`` decoder rows, so its peak should not grow with K: the script scores the same
images with K=500 and K=5000 to show it.

Prints one JSON object. With ``CI`` set (the test suite's smoke run) the sizes are tiny.
"""

import json
import os
import subprocess
import sys

from _machine import machine

smoke_test = "CI" in os.environ
TRAIN_EPOCHS, TEST_IMAGES, KS = (1, 20, (10, 50)) if smoke_test else (3, 1000, (500, 5000))

CHILD = """
import resource, sys, torch, pyro_vae
import torch._dynamo  # torch's optimizers import it once per process; the baseline holds it too
from pyro_vae import evaluate
what, arg = sys.argv[1], int(sys.argv[2])
data = pyro_vae.load_dataset("mnist-small", binarize="dynamic")
config = pyro_vae.Config()
model, guide = pyro_vae.build(config, data.x_shape)
if what == "train":
    pyro_vae.fit(model, guide, data, config.make_elbo(), epochs=arg, test_samples=0, quiet=True)
elif what == "log_px":
    evaluate.log_px(model, guide, data.test_x[:{test_images}], num_samples=arg)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_mib(what, arg=0):
    code = CHILD.replace("{test_images}", str(TEST_IMAGES))
    out = subprocess.run(
        [sys.executable, "-c", code, what, str(arg)], check=True, capture_output=True, text=True
    ).stdout
    return int(out.split()[-1]) / 1024  # ru_maxrss is in KiB on Linux


def main():
    base = peak_mib("baseline")
    train = peak_mib("train", TRAIN_EPOCHS)
    evals = {k: peak_mib("log_px", k) for k in KS}
    result = {
        "benchmark": "memory",
        "model": "784-400-50 MLP, batch 128 (the default recipe), mnist-small",
        "baseline_peak_mib": round(base),
        "train_epochs_on_mnist_small": TRAIN_EPOCHS,
        "train_peak_above_baseline_mib": round(train - base),
        "log_px_images": TEST_IMAGES,
        "log_px_peak_above_baseline_mib": {f"K={k}": round(v - base) for k, v in evals.items()},
        "log_px_peak_ratio_largest_to_smallest_K": round(
            (evals[KS[-1]] - base) / max(evals[KS[0]] - base, 1), 2
        ),
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
