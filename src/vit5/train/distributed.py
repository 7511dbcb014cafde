"""Distributed data parallel helpers: detect torchrun, shard data, reduce metrics.

A run is distributed when torchrun's environment (``WORLD_SIZE`` > 1) is present. The backend is
NCCL on CUDA and gloo on CPU. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistributedContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum a list of numbers over every process (identity when not distributed)."""
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def setup_distributed(device: str | None = None) -> DistributedContext:
    """Initialise the process group from torchrun's environment, if any.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=torch_device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class EpochSampler(torch.utils.data.Sampler[int]):
    """A deterministic, resumable, rank-sharded sampler.

    Each epoch uses the permutation ``randperm(N, seed + epoch)`` (or ``arange`` without
    shuffling), truncated to a whole number of global batches when ``drop_last``; rank ``r`` takes
    positions ``r, r + W, r + 2W, ...`` — so with per-rank batch ``b`` the union of the ranks'
    ``i``-th batches is exactly the ``i``-th global batch ``b * W`` of a single process.
    ``start_batch`` skips the first batches of an epoch (resuming mid-epoch).
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        shuffle: bool = True,
        drop_last: bool = True,
        seed: int = 0,
    ) -> None:
        self.length = length
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch = epoch
        self.start_batch = start_batch

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def batches_per_epoch(self) -> int:
        if self.drop_last:
            return self.length // self.global_batch
        return -(-len(range(self.rank, self.length, self.world_size)) // self.batch_size)

    def _indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.length, generator=generator).tolist()
        else:
            order = list(range(self.length))
        if self.drop_last:
            order = order[: (self.length // self.global_batch) * self.global_batch]
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices()[self.start_batch * self.batch_size :])

    def __len__(self) -> int:
        return max(0, len(self._indices()) - self.start_batch * self.batch_size)


class RepeatedAugSampler(EpochSampler):
    """Repeated augmentation (DeiT's ``RASampler``), deterministic and resumable.

    Each epoch takes the permutation ``randperm(N, seed + epoch)``, repeats every index ``repeats``
    times in a row as ``i, i + N, ..., i + (k-1) N`` (the dataset reads image ``i`` with its own
    augmentation per copy), keeps the first ``(N // global_batch) * global_batch`` entries (the
    same number of steps as without repetition, so an epoch sees about ``N / k`` distinct images)
    and gives rank ``r`` positions ``r, r + W, ...``: the ``k`` copies of an image land on ``k``
    consecutive ranks (on one rank, in the same or the next batch). ``start_batch`` skips batches.
    """

    def __init__(self, length: int, batch_size: int, rank: int = 0, world_size: int = 1, repeats: int = 3,
                 seed: int = 0) -> None:  # fmt: skip
        super().__init__(length, batch_size, rank, world_size, shuffle=True, drop_last=True, seed=seed)
        if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
            raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
        self.repeats = repeats

    def _indices(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.length, generator=generator)  # (N,)
        copies = torch.arange(self.repeats) * self.length  # (k,)
        repeated = (order[:, None] + copies[None, :]).reshape(-1)  # (N k,) copies in a row
        total = (self.length // self.global_batch) * self.global_batch
        return repeated[:total][self.rank :: self.world_size].tolist()
