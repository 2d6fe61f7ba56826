"""Benchmark: `pyro-vae demo` end to end, against the foundation targets.

Runs the command as a user would (a subprocess, a fresh run directory), times the whole command,
reads the run's metrics.json and prints one JSON object.

Targets: whole command <= 90 s on 2 CPU cores; test log p(x) (K=1000) >= -108 nats on the
mnist-small test split.

With ``CI`` set (the test suite's smoke run) the demo trains for one epoch: the script is
exercised, the targets are not.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from _machine import machine  # benchmarks/_machine.py, beside this script

smoke_test = "CI" in os.environ


def main():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "demo")
        start = time.perf_counter()
        smoke = ["--epochs", "1"] if smoke_test else []
        subprocess.run(
            [sys.executable, "-m", "pyro_vae.cli", "demo", "--quiet", "--out", out, *smoke],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - start
        metrics = json.load(open(os.path.join(out, "metrics.json")))
    result = {
        "benchmark": "demo",
        "command": "pyro-vae demo",
        "wall_seconds": round(seconds, 1),
        "train_seconds": metrics["seconds"],
        "test_elbo": metrics["test_elbo"],
        "test_log_px": metrics["test_log_px"],
        "test_log_px_stderr": metrics["test_log_px_stderr"],
        "log_px_samples": metrics["log_px_samples"],
        "targets": {"wall_seconds_max": 90, "test_log_px_min": -108},
        "targets_met": seconds <= 90 and metrics["test_log_px"] >= -108,
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
