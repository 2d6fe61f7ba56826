"""Benchmark: what checkpointing costs the demo recipe, and how long resuming takes to start.

Trains the demo's model (``pyro_vae.Config()`` defaults) on mnist-small for a few epochs with
:func:`pyro_vae.fit`, once without checkpoints and once writing ``checkpoint.pt`` atomically (with
fsync) at the end of every epoch, as ``pyro-vae train`` does; prints one JSON object.

Target: checkpointing every epoch costs at most 10% of the training time (the writes' time against
the rest of the checkpointed run's).
"""

import json
import os
import tempfile
import time

import pyro
from _machine import machine  # benchmarks/_machine.py, beside this script

import pyro_vae
from pyro_vae.checkpoints import _atomic_write, checkpoint_header, read_checkpoint, save_checkpoint

# With CI set (the test suite's smoke run) it trains one epoch: the numbers then mean nothing.
smoke_test = "CI" in os.environ
EPOCHS = 1 if smoke_test else 5


def train(data, config, checkpoint=None):
    pyro.set_rng_seed(config.seed)
    model, guide = pyro_vae.build(config, data.x_shape)
    start = time.perf_counter()
    pyro_vae.fit(
        model,
        guide,
        data,
        config.make_elbo(),
        epochs=EPOCHS,
        batch_size=config.batch_size,
        lr=config.lr,
        quiet=True,
        checkpoint=checkpoint,
    )
    return time.perf_counter() - start


def main():
    config = pyro_vae.Config()
    data = pyro_vae.load_dataset(config.dataset, config.binarize)
    plain = train(data, config)
    writes = []
    with tempfile.TemporaryDirectory() as tmp:
        file = os.path.join(tmp, "checkpoint.pt")
        header = checkpoint_header(config, data.x_shape)

        def checkpoint(state):
            started = time.perf_counter()
            # As runs write them: with the digest of the contents, which the read checks.
            _atomic_write(file, lambda f: save_checkpoint({**header, **state}, f))
            writes.append(time.perf_counter() - started)

        checkpointed = train(data, config, checkpoint)
        size = os.path.getsize(file)
        started = time.perf_counter()
        read_checkpoint(file)
        read_seconds = time.perf_counter() - started
    # The writes' own time against the training's: steadier than the difference of two runs.
    overhead = sum(writes) / (checkpointed - sum(writes))
    result = {
        "benchmark": "checkpoint",
        "recipe": f"pyro-vae demo model, {EPOCHS} epochs of mnist-small",
        "train_seconds_without_checkpoints": round(plain, 2),
        "train_seconds_checkpointing_every_epoch": round(checkpointed, 2),
        "overhead_fraction": round(overhead, 3),
        "seconds_per_checkpoint_write": round(sum(writes) / len(writes), 4),
        "seconds_to_read_checkpoint": round(read_seconds, 4),
        "checkpoint_megabytes": round(size / 2**20, 2),
        "targets": {"overhead_fraction_max": 0.10},
        "targets_met": overhead <= 0.10,
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
