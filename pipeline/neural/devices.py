"""Machine checks. In: train params. Out: nothing, or ParamsError naming the train.* key this
machine cannot run (a GPU accelerator or half precision without CUDA, too many devices, several
nodes without a launcher), before any work starts."""

from __future__ import annotations

import os

import torch

from pipeline.config import ParamsError, TrainParams


def check_machine(train: TrainParams, cuda_devices: int | None = None,
                  cpu_count: int | None = None, env: dict | None = None) -> None:
    """The counts default to what torch and the OS report."""
    if cuda_devices is None:
        cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    cpu_count = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    env = os.environ if env is None else env
    named = train.accelerator in ("gpu", "cuda")
    gpu = named or (train.accelerator == "auto" and cuda_devices > 0)
    available, unit = (cuda_devices, "CUDA GPU") if gpu else (cpu_count, "CPU core")
    launched = any(name in env for name in ("WORLD_SIZE", "SLURM_NTASKS", "MASTER_ADDR", "LOCAL_RANK"))
    problems = [
        (named and cuda_devices == 0, f"train.accelerator={train.accelerator!r} but this machine "
         "has no CUDA GPU; use accelerator: auto or cpu"),
        (not gpu and train.precision in ("bf16-mixed", "bf16-true", "16-mixed"),
         f"train.precision={train.precision!r} needs a CUDA GPU and this run is on the CPU; use "
         "precision: auto (bf16-mixed on a GPU, 32-true on the CPU) or 32-true"),
        (train.devices > available, f"train.devices={train.devices} but this machine has "
         f"{available} {unit}{'s' if available != 1 else ''}; use devices <= {available}, or run "
         "on more machines with train.num_nodes"),
        (train.num_nodes > 1 and not launched, f"train.num_nodes={train.num_nodes} needs a "
         "multi-node launcher (torchrun or SLURM, see docs/scaling.md), or num_nodes: 1"),
    ]
    for bad, message in problems:
        if bad:
            raise ParamsError(message)
