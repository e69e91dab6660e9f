"""The router loss terms equal an independent, loop-by-loop computation of the formulas; cached == plain."""

from __future__ import annotations

import math

import pytest
import torch

from vipyloqwen_tools.train.losses import CachedTaskLoss, TaskLoss, ViPyloQwenRouterLoss, task_of_dataset

T = 0.07


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))


def ce(logits: list[float], target: int) -> float:
    top = max(logits)
    return -(logits[target] - top - math.log(sum(math.exp(x - top) for x in logits)))


def ref_infonce(q, p, n=None, rows=None) -> float:
    """Mean over selected rows of (CE(q_i -> [p..., n...]) + CE(p_i -> [q...])) / 2, cosines / T."""
    batch = len(q)
    docs = list(p) + (list(n) if n is not None else [])
    rows = range(batch) if rows is None else rows
    losses = []
    for i in rows:
        q2d = ce([cos(q[i], d) / T for d in docs], i)
        d2q = ce([cos(p[i], a) / T for a in q], i)
        losses.append((q2d + d2q) / 2)
    return sum(losses) / len(losses) if losses else 0.0


def ref_triplet(q, p, n=None, margin=0.2) -> float:
    total = 0.0
    for i in range(len(q)):
        if n is not None:
            negative = cos(q[i], n[i])
        else:
            negative = max(cos(q[i], p[j]) for j in range(len(q)) if j != i)
        total += max(0.0, (1 - cos(q[i], p[i])) - (1 - negative) + margin)
    return total / len(q)


@pytest.fixture
def emb():
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(6, 8, generator=generator, dtype=torch.float64) for _ in range(3)]


@pytest.fixture
def router():
    return ViPyloQwenRouterLoss(torch.nn.Linear(1, 1), temperature=T)


def test_text_pair_infonce_only_on_positive_rows_and_mse_on_all(router, emb):
    q, p, _ = emb
    scores = torch.tensor([0.9, 0.1, 0.5, 0.49, 1.0, 0.0], dtype=torch.float64)
    terms = router.compute_loss_from_embeddings("text_pair", [q, p], scores)
    assert set(terms) == {"text_pair/infonce", "text_pair/mse"}
    assert terms["text_pair/infonce"].item() == pytest.approx(ref_infonce(q, p, rows=[0, 2, 4]), rel=1e-9)
    mse = sum((cos(q[i], p[i]) - float(scores[i])) ** 2 for i in range(6)) / 6
    assert terms["text_pair/mse"].item() == pytest.approx(mse, rel=1e-9)
    # A 0.1-scored pair is not a positive: the loss differs from InfoNCE over all rows.
    assert terms["text_pair/infonce"].item() != pytest.approx(ref_infonce(q, p), rel=1e-3)


def test_text_pair_threshold_configurable_and_empty_selection(emb):
    q, p, _ = emb
    scores = torch.full((6,), 0.3, dtype=torch.float64)
    router = ViPyloQwenRouterLoss(torch.nn.Linear(1, 1), score_threshold=0.2)
    assert router.compute_loss_from_embeddings("<text_pair>", [q, p], scores)["text_pair/infonce"].item() == (
        pytest.approx(ref_infonce(q, p), rel=1e-9)
    )
    strict = ViPyloQwenRouterLoss(torch.nn.Linear(1, 1))
    assert strict.compute_loss_from_embeddings("text_pair", [q, p], scores)["text_pair/infonce"].item() == 0.0
    with pytest.raises(ValueError, match="score"):
        strict.compute_loss_from_embeddings("text_pair", [q, p], None)


def test_instr_infonce_and_cosine(router, emb):
    q, p, _ = emb
    terms = router.compute_loss_from_embeddings("instr", [q, p])
    assert terms["instr/infonce"].item() == pytest.approx(ref_infonce(q, p), rel=1e-9)
    assert terms["instr/cosine"].item() == pytest.approx(sum(1 - cos(q[i], p[i]) for i in range(6)) / 6, rel=1e-9)


@pytest.mark.parametrize("task", ["ocr", "vqa_single", "vqa_multi"])
def test_triplet_tasks_hardest_in_batch_negative(router, emb, task):
    q, p, _ = emb
    terms = router.compute_loss_from_embeddings(task, [q, p])
    assert terms[f"{task}/infonce"].item() == pytest.approx(ref_infonce(q, p), rel=1e-9)
    assert terms[f"{task}/triplet"].item() == pytest.approx(ref_triplet(q, p), rel=1e-9)


def test_triplet_explicit_negative_and_vqa_multi_margin(emb):
    q, p, n = emb
    router = ViPyloQwenRouterLoss(torch.nn.Linear(1, 1), margin=0.2, vqa_multi_margin=0.5)
    ocr = router.compute_loss_from_embeddings("ocr", [q, p, n])
    assert ocr["ocr/infonce"].item() == pytest.approx(ref_infonce(q, p, n), rel=1e-9)
    assert ocr["ocr/triplet"].item() == pytest.approx(ref_triplet(q, p, n, 0.2), rel=1e-9)
    multi = router.compute_loss_from_embeddings("vqa_multi", [q, p, n])
    assert multi["vqa_multi/triplet"].item() == pytest.approx(ref_triplet(q, p, n, 0.5), rel=1e-9)


def test_weights_and_matryoshka(emb):
    q, p, _ = emb
    router = ViPyloQwenRouterLoss(
        torch.nn.Linear(1, 1), weights={"instr": {"cosine": 2.5}}, matryoshka_dims=[8, 4], matryoshka_weights=[1.0, 0.5]
    )
    terms = router.compute_loss_from_embeddings("instr", [q, p])
    assert set(terms) == {"instr/infonce", "instr/cosine", "instr/infonce@4", "instr/cosine@4"}
    assert terms["instr/cosine"].item() == pytest.approx(2.5 * sum(1 - cos(q[i], p[i]) for i in range(6)) / 6)
    q4, p4 = q[:, :4], p[:, :4]
    assert terms["instr/infonce@4"].item() == pytest.approx(0.5 * ref_infonce(q4, p4), rel=1e-9)
    assert terms["instr/cosine@4"].item() == pytest.approx(1.25 * sum(1 - cos(q4[i], p4[i]) for i in range(6)) / 6)
    with pytest.raises(ValueError, match="unknown term"):
        ViPyloQwenRouterLoss(torch.nn.Linear(1, 1), weights={"instr": {"mse": 1.0}})


def test_bad_inputs_are_named(router, emb):
    q, p, _ = emb
    with pytest.raises(ValueError, match="Unknown task"):
        router.compute_loss_from_embeddings("nope", [q, p])
    with pytest.raises(ValueError, match="batch sizes"):
        router.compute_loss_from_embeddings("instr", [q, p[:3]])
    assert task_of_dataset("ocr+neg") == "ocr"


class Embedder(torch.nn.Module):
    """A stand-in SentenceTransformer: a linear map of ``features["x"]`` to ``sentence_embedding``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(5, 8)

    def forward(self, features):
        return {"sentence_embedding": torch.nn.functional.normalize(self.linear(features["x"]), dim=-1)}


@pytest.mark.parametrize("task,columns", [("text_pair", 2), ("instr", 2), ("ocr", 3), ("vqa_multi", 2)])
def test_cached_equals_plain_loss_and_gradients(task, columns):
    generator = torch.Generator().manual_seed(1)
    features = [
        {"x": torch.randn(8, 5, generator=generator), "attention_mask": torch.ones(8, 3, dtype=torch.long)}
        for _ in range(columns)
    ]
    labels = torch.rand(8, generator=generator) if task == "text_pair" else None
    results = []
    for mini_batch_size in (None, 3):
        model = Embedder()
        router = ViPyloQwenRouterLoss(model, mini_batch_size=mini_batch_size)
        loss_fn = router.task_losses([task])[task]
        assert isinstance(loss_fn, CachedTaskLoss if mini_batch_size else TaskLoss)
        terms = loss_fn([dict(f) for f in features], labels)
        total = torch.stack(list(terms.values())).sum()
        total.backward()
        results.append(({k: v.item() for k, v in terms.items()}, model.linear.weight.grad.clone()))
    (plain_terms, plain_grad), (cached_terms, cached_grad) = results
    assert plain_terms.keys() == cached_terms.keys()
    for key in plain_terms:
        assert cached_terms[key] == pytest.approx(plain_terms[key], rel=1e-5, abs=1e-7)
    assert plain_grad.abs().sum() > 0
    torch.testing.assert_close(cached_grad, plain_grad, rtol=1e-4, atol=1e-6)
