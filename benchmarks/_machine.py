"""What every benchmark reports about the machine it ran on (imported by the scripts here)."""

import os
import platform

import torch

# torch's optimizers import torch._dynamo the first time one is made (about 2 s here). pyro_vae
# no longer imports it at start, so import it now: no timed section of a benchmark pays that
# once-per-process cost, whichever trainer makes the first optimizer.
import torch._dynamo  # noqa: F401


def machine():
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }
