"""What every benchmark reports about the machine it ran on (imported by the scripts here)."""

import os
import platform

import torch


def machine():
    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }
