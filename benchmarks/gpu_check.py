"""The speed benchmarks on a GPU, in one command that takes under five minutes; prints one JSON
object holding each benchmark's own.

It runs ``step_overhead.py`` (one training step: pyro_vae's recorded step, its eager step, the
hand-written step and Pyro's VAE example), ``log_px.py`` (log p(x) with K=1000 against the bare
decoder passes) and ``e_step.py`` (the test-time E-step against its decoder passes), each in a
fresh process with ``PYRO_VAE_BENCH_DEVICE=cuda``, and adds the GPU's name and the torch and CUDA
versions. ``quality_at_budget.py`` trains through :func:`pyro_vae.fit` on the CPU and is not part
of it.

Usage: ``python benchmarks/gpu_check.py`` on a machine with a GPU. ``--dry-run`` (or ``CI`` set,
the test suite's smoke run) runs the same scripts on the CPU with tiny sizes, to check that the
command works where there is no GPU; its numbers mean nothing.
"""

import json
import os
import subprocess
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ("step_overhead.py", "log_px.py", "e_step.py")
TIMEOUT = 280  # seconds for the three together: the whole check stays under five minutes


def run(script, env, deadline):
    """The script's JSON, or what went wrong."""
    left = deadline - time.monotonic()
    if left < 5:
        return {"error": "not run: the five-minute budget was spent"}
    try:
        result = subprocess.run(
            [sys.executable, os.path.join(HERE, script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=left,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"stopped after {left:.0f} s: the five-minute budget was spent"}
    if result.returncode != 0:
        return {"error": (result.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(result.stdout)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    dry_run = "--dry-run" in argv or "CI" in os.environ
    if not dry_run and not torch.cuda.is_available():
        sys.exit("gpu_check: no GPU here (torch.cuda.is_available() is False); use --dry-run")
    device = "cpu" if dry_run else "cuda"
    env = {**os.environ, "PYRO_VAE_BENCH_DEVICE": device}
    if dry_run:
        env["CI"] = "1"
    pythonpath = [os.path.dirname(HERE), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in pythonpath if p)
    start = time.monotonic()
    deadline = start + TIMEOUT
    results = {script[:-3]: run(script, env, deadline) for script in SCRIPTS}
    report = {
        "benchmark": "gpu_check",
        "dry_run": dry_run,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "seconds": round(time.monotonic() - start, 1),
        **results,
    }
    print(json.dumps(report, indent=2))
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
