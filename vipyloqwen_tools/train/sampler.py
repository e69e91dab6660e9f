"""Task-grouped batches: every step trains one task, on every process (the InfoNCE all-gather lines up)."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import accumulate

import torch
from sentence_transformers.base.sampler import MultiDatasetDefaultBatchSampler


class TaskGroupedBatchSampler(MultiDatasetDefaultBatchSampler):
    """Single-task batches in proportion to each dataset's size, in groups of ``world_size`` consecutive batches
    from the same dataset, so that at every step all processes train the same task with equal batch sizes (the
    InfoNCE all-gather then lines up). Incomplete batches and groups are dropped."""

    def __init__(self, dataset, batch_samplers, generator=None, seed: int = 0, world_size: int = 1) -> None:
        super().__init__(dataset, batch_samplers, generator=generator, seed=seed)
        self.world_size = max(1, int(world_size))

    def _groups(self) -> list[tuple[int, list[list[int]]]]:
        offsets = [0, *accumulate(len(d) for d in self.dataset.datasets)]
        groups = []
        for index, sampler in enumerate(self.batch_samplers):
            batches = [[i + offsets[index] for i in batch] for batch in sampler if len(batch) == sampler.batch_size]
            for start in range(0, len(batches) - self.world_size + 1, self.world_size):
                groups.append((index, batches[start : start + self.world_size]))
        return groups

    def __iter__(self) -> Iterator[list[int]]:
        if self.generator is not None and self.seed is not None:
            self.generator.manual_seed(self.seed + self.epoch)
        groups = self._groups()
        order = torch.randperm(len(groups), generator=self.generator).tolist()
        for position in order:
            yield from groups[position][1]

    def __len__(self) -> int:
        total = 0
        for dataset, sampler in zip(self.dataset.datasets, self.batch_samplers, strict=False):
            total += (len(dataset) // sampler.batch_size) // self.world_size * self.world_size
        return total


__all__ = ["TaskGroupedBatchSampler"]
