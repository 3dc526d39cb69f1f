"""Multi-GPU (or multi-process CPU) training through torchrun: torch.distributed + DistributedDataParallel.

Launch the usual command under torchrun, e.g. four GPUs on one machine::

    torchrun --standalone --nproc_per_node 4 "$(which psim-train)" encoder=dit_paper features=clip

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them everything here is a no-op (world 1), so
the same code path trains on one CPU or GPU. Every process draws the same global batch from the same
seeded generator and trains on its slice, so the data order, the noise and the result do not depend
on the number of processes (tested against a single-process run). Only the main process writes.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.barrier()

    @contextmanager
    def main_first(self):
        """The main process runs the block first (e.g. fills a cache), the others after it."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()


def context() -> Context:
    """This process's place in a torchrun job, from the environment (world 1 outside torchrun)."""
    try:
        return Context(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                       int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as err:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun): {err}") from None


# How long processes wait for each other, e.g. for the main process to fill a feature cache (CLIP on a
# GPU takes minutes for THINGS-EEG2; captioning with a VLM can take longer: fill such caches first
# with a single-process run).
TIMEOUT = timedelta(hours=2)


def local_device(device: str = "auto") -> torch.device:
    """``device`` for this process: 'auto' is cuda when there is a GPU, else cpu; a cuda device without
    an index is this process's own GPU, cuda:LOCAL_RANK (cuda:0 outside torchrun)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type != "cuda" or dev.index is not None:
        return dev
    rank, n = context().local_rank, torch.cuda.device_count()
    if rank >= n:
        raise ValueError(f"the process with LOCAL_RANK {rank} has no GPU of its own ({n} visible): start at most "
                         f"{n} processes per machine (torchrun --nproc_per_node {n})")
    return torch.device("cuda", rank)


def setup(device: torch.device) -> tuple[Context, bool]:
    """Join the process group when running under torchrun; returns (context, whether this call joined it)."""
    ctx = context()
    if ctx.world == 1 or dist.is_initialized():
        return ctx, False
    if device.type == "cuda":
        if device.index != ctx.local_rank:
            raise ValueError(f"under torchrun every process needs its own GPU, but the process with LOCAL_RANK "
                             f"{ctx.local_rank} was given {device}: set the device to 'auto' or 'cuda'")
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return ctx, True


def teardown(joined: bool) -> None:
    if joined and dist.is_initialized():
        dist.destroy_process_group()


def mean_over_processes(value: torch.Tensor, ctx: Context) -> torch.Tensor:
    """The mean of a scalar over all processes (for logging one loss per step, the same in every process)."""
    if ctx.world == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / ctx.world
