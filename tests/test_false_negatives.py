"""False-negative masking in the router loss (vipyloqwen_tools/train/false_negatives.py, losses.py).

- rows sharing one correct answer: every in-batch candidate is a correct answer, so InfoNCE and the triplet are 0;
- a batch without duplicates gives exactly (bit for bit) the loss of the implementation before masking, kept here
  as a frozen reference (:func:`reference_terms`);
- the mask rules one by one (same positive, same query, explicit negative equal to the positive, text_pair rows under
  the threshold, padded slots, the margin rule);
- two gloo processes with duplicates across them: the ranks' mean loss is the one-process loss of all rows.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vipyloqwen_tools.data.identity import NO_DOCUMENT
from vipyloqwen_tools.train.false_negatives import identity_masks
from vipyloqwen_tools.train.losses import ViPyloQwenRouterLoss


def _router(**kwargs) -> ViPyloQwenRouterLoss:
    return ViPyloQwenRouterLoss(torch.nn.Linear(1, 1), **kwargs)


def _unit(rows: int, dim: int = 16, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return F.normalize(torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=dtype), dim=-1)


# --------------------------------------------------------------------------- the implementation before masking
def _cos(a, b):
    return F.normalize(a, p=2, dim=-1) @ F.normalize(b, p=2, dim=-1).T


def reference_terms(task, anchors, positives, negatives, labels, temperature=0.07, margin=0.2, threshold=0.5):
    """The loss terms as ``losses.py`` computed them before false negatives were masked (one process, one width;
    the embeddings re-normalised at that width first, as the Matryoshka cut does)."""
    anchors, positives = F.normalize(anchors, p=2, dim=-1), F.normalize(positives, p=2, dim=-1)
    negatives = None if negatives is None else F.normalize(negatives, p=2, dim=-1)

    def infonce(rows):
        documents = [positives] + ([negatives] if negatives is not None else [])
        targets = torch.arange(anchors.size(0))
        q2d = _cos(anchors, torch.cat(documents)) / temperature
        d2q = _cos(positives, anchors) / temperature
        per_row = 0.5 * (
            F.cross_entropy(q2d, targets, reduction="none") + F.cross_entropy(d2q, targets, reduction="none")
        )
        weights = rows.to(per_row.dtype)
        return (per_row * weights).sum() / weights.sum().clamp(min=1.0 / 1024)

    def triplet():
        positive_cos = F.cosine_similarity(anchors, positives, dim=-1)
        if negatives is not None:
            negative_cos = F.cosine_similarity(anchors, negatives, dim=-1)
        else:
            similarities = _cos(anchors, positives)
            own = torch.arange(anchors.size(0))
            similarities = similarities.index_put((own, own), torch.tensor(float("-inf"), dtype=similarities.dtype))
            negative_cos = similarities.max(dim=1).values
        return F.relu(negative_cos - positive_cos + margin).mean()

    if task == "text_pair":
        scores = labels.to(anchors.dtype)
        cos = F.cosine_similarity(anchors, positives, dim=-1)
        return {"infonce": infonce(scores >= threshold), "mse": F.mse_loss(cos, scores)}
    everyone = torch.ones(anchors.size(0), dtype=torch.bool)
    if task == "instr":
        return {"infonce": infonce(everyone), "cosine": (1.0 - F.cosine_similarity(anchors, positives, dim=-1)).mean()}
    return {"infonce": infonce(everyone), "triplet": triplet()}


def _distinct_keys(rows: int, columns: int) -> torch.Tensor:
    return torch.arange(1, rows * columns + 1, dtype=torch.long).view(rows, columns) * 7919


@pytest.mark.parametrize("task", ["text_pair", "instr", "ocr", "vqa_single", "vqa_multi"])
@pytest.mark.parametrize("explicit", [False, True])
def test_no_duplicates_is_bit_identical_to_the_loss_before_masking(task, explicit):
    rows = 12
    anchors, positives = _unit(rows, seed=1), _unit(rows, seed=2)
    negatives = _unit(rows, seed=3) if explicit else None
    labels = torch.rand(rows, generator=torch.Generator().manual_seed(4)) if task == "text_pair" else None
    columns = [anchors, positives] + ([negatives] if explicit else [])
    keys = _distinct_keys(rows, len(columns))
    terms = _router().compute_loss_from_embeddings(task, columns, labels, keys)
    reference = reference_terms(task, anchors, positives, negatives, labels)
    for term, value in reference.items():
        assert torch.equal(terms[f"{task}/{term}"], value), (term, terms[f"{task}/{term}"].item(), value.item())
    router = _router()
    router.compute_loss_from_embeddings(task, columns, labels, keys)
    assert router.last_stats[f"{task}/masked"].item() == 0


def test_rows_sharing_one_answer_have_no_infonce_and_no_triplet():
    """48 vqa_single rows, different questions and images, the same answer "Có" (the issue's case, batch 8)."""
    rows = 8
    anchors = _unit(rows, seed=5).requires_grad_()
    positives = _unit(1, seed=6).repeat(rows, 1).requires_grad_()  # one document: one embedding
    keys = torch.stack([torch.arange(100, 100 + rows), torch.full((rows,), 42)], dim=1)
    router = _router()
    terms = router.compute_loss_from_embeddings("vqa_single", [anchors, positives], None, keys)
    assert terms["vqa_single/infonce"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["vqa_single/triplet"].item() == 0.0
    # every other row's positive (query -> documents) and every other anchor (documents -> queries) is masked
    assert router.last_stats["vqa_single/masked"].item() == 2 * rows * (rows - 1)
    assert router.last_stats["vqa_single/candidates"].item() == 2 * rows * (rows - 1)
    torch.stack(list(terms.values())).sum().backward()  # the graph stays connected, with zero gradients
    assert torch.count_nonzero(anchors.grad) == 0
    unmasked = _router(mask_false_negatives=False).compute_loss_from_embeddings(
        "vqa_single", [anchors, positives], None, keys
    )
    assert unmasked["vqa_single/infonce"].item() > 1.0  # what training did before: log(8) for equal candidates
    assert unmasked["vqa_single/triplet"].item() == pytest.approx(0.2)  # the "hardest negative" is the positive


def test_the_mask_rules():
    # rows: 0 and 1 share the positive (key 20); 2 and 3 share the query (key 12); row 4's explicit negative is the
    # positive of row 0 (a correct answer of row 0, a plain negative for row 4); row 5's negative is padding.
    keys = torch.tensor(
        [[10, 20, 30], [11, 20, 31], [12, 22, 32], [12, 23, 33], [14, 24, 20], [15, 25, NO_DOCUMENT]], dtype=torch.long
    )
    rows = torch.ones(6, dtype=torch.bool)
    masks = identity_masks(keys, rows, lambda t: t, 0)
    n = 6
    documents = keys[:, 1:].T.reshape(-1)
    q2d = masks.q2d
    assert not q2d[torch.arange(n), torch.arange(n)].any()  # never the target
    assert q2d[0, 1] and q2d[1, 0]  # same positive
    assert q2d[2, 3] and q2d[3, 2]  # same query: the other row's positive is a correct answer too
    assert q2d[0, n + 4] and not q2d[4, n + 4]  # row 4's negative (key 20) is a correct answer of rows 0 and 1 only
    assert q2d[:, n + 5].all() and masks.padding[n + 5]  # padding is never a candidate
    plain = ~q2d & (documents[None, :] != NO_DOCUMENT)
    assert plain[4, :n].all()  # row 4 has no duplicates: every other positive stays a negative (its own: the target)
    assert masks.d2q[0, 1] and masks.d2q[1, 0]  # p_0 answers q_1 (they share the positive)
    assert masks.d2q[2, 3] and masks.d2q[3, 2]  # the same query
    assert not masks.d2q[4].any()
    assert masks.explicit[:, 0].tolist() == [False, False, False, False, False, True]


def test_an_explicit_negative_equal_to_the_positive_is_masked():
    """Row 0's explicit negative is its positive: masked in InfoNCE, and its triplet falls back to the hardest
    in-batch negative; rows 1 and 2 share a positive and their explicit negatives are it too: no valid negative at
    all, so no triplet term."""
    rows = 6
    anchors, positives, negatives = _unit(rows, seed=7), _unit(rows, seed=8), _unit(rows, seed=9)
    positives[2] = positives[1]
    keys = _distinct_keys(rows, 3)
    keys[0, 2] = keys[0, 1]
    keys[2, 1] = keys[1, 1]
    keys[1, 2] = keys[2, 2] = keys[1, 1]
    router = _router()
    terms = router.compute_loss_from_embeddings("ocr", [anchors, positives, negatives], None, keys)
    positive_cos = F.cosine_similarity(anchors, positives, dim=-1)
    hardest = F.cosine_similarity(anchors, negatives, dim=-1)
    in_batch = (anchors @ positives.T)[0, 1:].max()  # row 0: the most similar other positive
    hardest[0] = in_batch
    per_row = F.relu(hardest - positive_cos + 0.2)
    # rows 1 and 2: explicit masked, in-batch: each other's positive is the same document, the rest stay negatives
    for row in (1, 2):
        others = [j for j in range(rows) if j not in (1, 2)]
        per_row[row] = F.relu((anchors[row] @ positives[others].T).max() - positive_cos[row] + 0.2)
    assert terms["ocr/triplet"].item() == pytest.approx(per_row.mean().item(), rel=1e-6)
    assert router.last_stats["ocr/masked"].item() >= 3
    # two rows sharing one answer, their explicit negatives that answer too: no valid negative, no term
    pair = _unit(2, seed=30)
    same = _unit(1, seed=31).repeat(2, 1)
    keys = torch.tensor([[1, 5, 5], [2, 5, 5]])
    alone = _router().compute_loss_from_embeddings("ocr", [pair, same, same], None, keys)
    assert alone["ocr/triplet"].item() == 0.0 and alone["ocr/infonce"].item() == pytest.approx(0.0, abs=1e-6)


def test_the_hardest_explicit_negative_of_several():
    rows = 5
    anchors, positives = _unit(rows, seed=10), _unit(rows, seed=11)
    negatives = [_unit(rows, seed=12 + k) for k in range(3)]
    keys = _distinct_keys(rows, 5)
    terms = _router().compute_loss_from_embeddings("vqa_multi", [anchors, positives, *negatives], None, keys)
    hardest = torch.stack([F.cosine_similarity(anchors, n, dim=-1) for n in negatives], dim=1).max(dim=1).values
    expected = F.relu(hardest - F.cosine_similarity(anchors, positives, dim=-1) + 0.2).mean()
    assert terms["vqa_multi/triplet"].item() == pytest.approx(expected.item(), rel=1e-6)
    # every explicit negative of every row is an InfoNCE candidate: 5 positives + 3 x 5 negatives
    router = _router()
    router.compute_loss_from_embeddings("vqa_multi", [anchors, positives, *negatives], None, keys)
    assert router.last_candidates["documents"] == rows * 4


def test_text_pair_rows_under_the_threshold_are_not_correct_answers():
    # rows 0 and 1 share the query; row 1 is a 0.1-scored pair: its document does not answer the query
    keys = torch.tensor([[10, 20], [10, 21], [12, 22]], dtype=torch.long)
    masks = identity_masks(keys, torch.tensor([True, False, True]), lambda t: t, 0)
    assert not masks.q2d[0, 1]  # row 1's document stays a negative of the shared query
    assert masks.q2d[1, 0]  # row 0's document is a correct answer of the query (row 1 is not trained anyway)


def test_the_margin_rule_masks_candidates_above_the_positive():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    positives = torch.tensor([[0.8, 0.6], [0.0, 1.0], [0.6, 0.8]])  # row 0: cos 0.8 to its positive
    # row 0's query scores 1.0 with nothing else, but row 2's positive (0.6, 0.8) scores 0.6 and row 1's 0.0;
    # make row 1's positive score above row 0's own pair by more than 0.1:
    positives[1] = torch.tensor([1.0, 0.0])
    keys = _distinct_keys(3, 2)
    router = _router(false_negative_margin=0.1)
    router.compute_loss_from_embeddings("instr", [anchors, positives], None, keys)
    assert router.last_stats["instr/masked_margin"].item() >= 1
    plain = _router()
    plain.compute_loss_from_embeddings("instr", [anchors, positives], None, keys)
    assert plain.last_stats["instr/masked_margin"].item() == 0


def _two_rank_data() -> dict[str, torch.Tensor]:
    """8 rows on 2 ranks: rank 0's row 0 and rank 1's row 5 share the positive; rank 1's row 6 has rank 0's row 1's
    query."""
    keys = _distinct_keys(8, 3)
    keys[5, 1] = keys[0, 1]
    keys[6, 0] = keys[1, 0]
    return {
        "q": _unit(8, seed=20, dtype=torch.float64),
        "p": _unit(8, seed=21, dtype=torch.float64),
        "n": _unit(8, seed=22, dtype=torch.float64),
        "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.9, 0.95, 0.8, 0.75], dtype=torch.float64),
        "keys": keys,
    }


def gloo_prepare(folder) -> None:
    """The inputs of :func:`gloo_worker` (conftest ``gloo_pair``)."""
    torch.save(_two_rank_data(), folder / "data.pt")


def gloo_worker(rank: int, folder: str) -> None:
    """In each of the 2 gloo processes: its 4 rows' loss terms, masked counts and anchor gradients, per task."""
    data = torch.load(f"{folder}/data.pt")
    mine = slice(4 * rank, 4 * rank + 4)
    results = {}
    for task in ("vqa_single", "text_pair"):
        q = data["q"][mine].clone().requires_grad_()
        router = ViPyloQwenRouterLoss(torch.nn.Linear(1, 1), gather_across_devices=True)
        terms = router.compute_loss_from_embeddings(
            task, [q, data["p"][mine], data["n"][mine]], data["scores"][mine], data["keys"][mine]
        )
        torch.stack(list(terms.values())).sum().backward()
        results[task] = {k: v.item() for k, v in terms.items()}
        results[task]["stats"] = {k: v.item() for k, v in router.last_stats.items()}
        results[task]["grad"] = q.grad
    torch.save(results, f"{folder}/data.pt.rank{rank}")


@pytest.mark.slow
def test_two_processes_mask_duplicates_across_ranks(gloo_pair):
    """The ranks' mean loss and gradients are the one-process ones of all 8 rows; the counts are the global batch's."""
    folder = gloo_pair[__name__]
    data = torch.load(folder / "data.pt")
    ranks = [torch.load(folder / f"data.pt.rank{r}") for r in range(2)]
    for task in ("vqa_single", "text_pair"):
        q = data["q"].clone().requires_grad_()
        router = _router()
        full = router.compute_loss_from_embeddings(task, [q, data["p"], data["n"]], data["scores"], data["keys"])
        torch.stack(list(full.values())).sum().backward()
        infonce = f"{task}/infonce"
        assert (ranks[0][task][infonce] + ranks[1][task][infonce]) / 2 == pytest.approx(full[infonce].item(), rel=1e-9)
        for rank in ranks:  # the counts are the global batch's, on every rank
            assert rank[task]["stats"] == {k: v.item() for k, v in router.last_stats.items()}
        assert router.last_stats[f"{task}/masked"].item() > 0
        if task == "text_pair":  # mse is a per-rank mean, as DDP averages it: the gradients differ by design
            continue
        grads = torch.cat([ranks[0][task]["grad"], ranks[1][task]["grad"]]) / 2
        torch.testing.assert_close(grads, q.grad, rtol=1e-7, atol=1e-10)


@pytest.mark.slow
def test_training_on_rows_sharing_one_answer_logs_zero_infonce_and_triplet(tmp_path):
    """The issue's measurement as a new user would run it: 48 vqa_single rows, different questions and images, the
    same correct answer "Có", batch 8, learning rate 1e-9. Before masking: infonce 2.61 and triplet 0.200 (the
    margin: the "hardest negative" was the positive itself). Now both are 0 on the first step and the masked
    candidates are logged."""
    from conftest import make_image, tiny_run_config, write_jsonl

    from vipyloqwen_tools.train.run import train

    (tmp_path / "img").mkdir()
    rows = []
    for i in range(48):
        make_image(56, 56, seed=i).save(tmp_path / "img" / f"{i}.png")
        rows.append({"task": "vqa_single", "query": {"text": f"Câu hỏi số {i}?", "images": [f"img/{i}.png"]},
                     "positive": "Có"})  # fmt: skip
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    settings = dict(max_steps=1, per_device_train_batch_size=8, learning_rate=1e-9, max_length=64,
                    max_image_tokens=16, save_steps=100)  # fmt: skip
    masked = train(tiny_run_config(tmp_path / "masked", data, **settings))["log_history"][0]
    assert masked["vqa_single/infonce"] == pytest.approx(0.0, abs=1e-4)
    assert masked["vqa_single/triplet"] == pytest.approx(0.0, abs=1e-4)
    assert masked["vqa_single/masked"] == 2 * 8 * 7  # every other row's answer and every other question
    before = train(tiny_run_config(tmp_path / "before", data, mask_false_negatives=False, **settings))["log_history"]
    assert before[0]["vqa_single/triplet"] == pytest.approx(0.2, abs=1e-4)  # what training did before
    assert before[0]["vqa_single/infonce"] > 1.0 and before[0]["vqa_single/masked"] == 2 * 8 * 7  # counted, not masked
