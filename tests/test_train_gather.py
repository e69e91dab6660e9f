"""InfoNCE across 2 gloo processes whose batches differ in size (a row dropped from one rank's batch at batch time):
the candidates are every rank's rows, and the ranks' mean loss is the single-process loss of the 7 rows together."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SIZES = (4, 3)


def gloo_prepare(folder: Path) -> None:
    """The inputs of :func:`gloo_worker`: 7 rows of query / positive embeddings and scores (conftest ``gloo_pair``)."""
    generator = torch.Generator().manual_seed(0)
    rows = sum(SIZES)
    data = {
        "q": torch.randn(rows, 6, generator=generator, dtype=torch.float64),
        "p": torch.randn(rows, 6, generator=generator, dtype=torch.float64),
        "scores": torch.tensor([0.9, 0.2, 0.7, 0.6, 0.1, 0.95, 0.8], dtype=torch.float64),
    }
    torch.save(data, folder / "data.pt")


def gloo_worker(rank: int, folder: str) -> None:
    """In each of the 2 gloo processes: its rows (4 and 3) gathered, and the InfoNCE of each task and its gradient."""
    from vipyloqwen_tools.train.gather import gather_rows, rows_before
    from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss

    data = torch.load(f"{folder}/data.pt")
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
    torch.save(results, f"{folder}/data.pt.rank{rank}")


@pytest.mark.slow
def test_uneven_batches_gather_every_row(gloo_pair):
    from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss

    path = str(gloo_pair[__name__] / "data.pt")
    data = torch.load(path)
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
