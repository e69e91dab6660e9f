"""InfoNCE across 2 gloo processes whose batches differ in size (a row dropped from one rank's batch at batch time):
the candidates are every rank's rows, and the ranks' mean loss is the single-process loss of the 7 rows together."""

from __future__ import annotations

import os

import pytest
import torch
from conftest import free_port

SIZES = (4, 3)


def _worker(rank: int, port: int, path: str) -> None:
    import torch.distributed as dist

    from vipyloqwen_tools.train.gather import gather_rows, rows_before
    from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        data = torch.load(path)
        start = sum(SIZES[:rank])
        mine = slice(start, start + SIZES[rank])
        results = {"gathered": gather_rows(data["q"][mine], with_grad=False), "before": rows_before(SIZES[rank])}
        for task in ("instr", "ocr", "text_pair"):
            q = data["q"][mine].clone().requires_grad_()
            p = data["p"][mine].clone().requires_grad_()
            router = ViPyloQwenRouterLoss(torch.nn.Linear(1, 1), gather_across_devices=True)
            terms = router.compute_loss_from_embeddings(task, [q, p], data["scores"][mine])
            terms[f"{task}/infonce"].backward()
            results[task] = {"infonce": terms[f"{task}/infonce"].item(), "q_grad": q.grad}
        torch.save(results, f"{path}.rank{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_uneven_batches_gather_every_row(tmp_path):
    import torch.multiprocessing as mp

    from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss

    generator = torch.Generator().manual_seed(0)
    rows = sum(SIZES)
    data = {
        "q": torch.randn(rows, 6, generator=generator, dtype=torch.float64),
        "p": torch.randn(rows, 6, generator=generator, dtype=torch.float64),
        "scores": torch.tensor([0.9, 0.2, 0.7, 0.6, 0.1, 0.95, 0.8], dtype=torch.float64),
    }
    path = str(tmp_path / "data.pt")
    torch.save(data, path)
    mp.start_processes(_worker, args=(free_port(), path), nprocs=2, start_method="spawn")
    ranks = [torch.load(f"{path}.rank{r}") for r in range(2)]
    for rank in (0, 1):
        assert torch.equal(ranks[rank]["gathered"], data["q"])  # every rank's rows, in rank order, no padding
    assert [r["before"] for r in ranks] == [0, SIZES[0]]
    router = ViPyloQwenRouterLoss(torch.nn.Linear(1, 1))
    for task in ("instr", "ocr", "text_pair"):
        q = data["q"].clone().requires_grad_()
        full = router.compute_loss_from_embeddings(task, [q, data["p"]], data["scores"])[f"{task}/infonce"]
        full.backward()
        # DDP averages the ranks' losses and gradients: that mean is the loss of all 7 rows in one process.
        assert (ranks[0][task]["infonce"] + ranks[1][task]["infonce"]) / 2 == pytest.approx(full.item(), rel=1e-9)
        grads = torch.cat([ranks[0][task]["q_grad"], ranks[1][task]["q_grad"]]) / 2
        torch.testing.assert_close(grads, q.grad, rtol=1e-9, atol=1e-12)
