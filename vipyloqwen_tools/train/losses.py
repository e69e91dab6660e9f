"""The prefix router loss: one loss module that maps each registry task to its loss terms.

Task -> terms (``configuration_vipyloqwen.TASKS[task].loss`` names the recipe):

- ``infonce+mse`` (text_pair): symmetric InfoNCE over the rows whose ``score >= score_threshold`` (a
  0.1-scored pair is not a positive; its texts stay in the batch as candidates) + MSE between
  ``cos(anchor, positive)`` and the score over all rows.
- ``infonce+cosine`` (instr): symmetric InfoNCE + ``mean(1 - cos(anchor, positive))``.
- ``infonce+triplet`` (ocr, vqa_single, vqa_multi): symmetric InfoNCE + triplet margin loss on cosine
  distance, ``relu(margin - (1 - cos(a, p)) ... )`` written out as ``relu(cos(a, n) - cos(a, p) + margin)``.
  The negative ``n`` is the hardest of the row's explicit negatives (columns 3...) when it has valid ones, else the
  hardest in-batch negative (the most similar other row's positive). ``vqa_multi`` has its own margin.

Symmetric InfoNCE (temperature ``T``) is the mean of two cross-entropies: anchor -> all positives (+ every
explicit negative of every row) and positive -> all anchors, the logits being cosines divided by ``T``. With
``gather_across_devices`` the candidates of every process are gathered first (ST's
``all_gather_with_grad``; padded when the processes hold different row counts after a row was dropped at batch
time, :mod:`~vipyloqwen_tools.train.gather`), so each process's anchors see the whole global batch.

False negatives (:mod:`~vipyloqwen_tools.train.false_negatives`): with the rows' identity keys (``keys``, from the
data), a candidate that is the same document as a correct answer of the row is masked in both InfoNCE directions,
never picked as the triplet's hardest negative, and an explicit negative equal to the positive is masked too; a row
left without a valid negative has no triplet term. ``false_negative_margin`` also masks candidates scoring above
the row's own pair by that margin. The counts of one batch are in :attr:`ViPyloQwenRouterLoss.last_stats`
(``<task>/masked``, ``<task>/masked_margin``, ``<task>/candidates``; the trainer logs them). Without duplicates
(and without a margin hit) the loss is bit-identical to the unmasked one.

Every term is multiplied by its weight (default 1) and returned in a dict keyed ``"<task>/<term>"``; the
trainer sums them and logs each. With ``matryoshka_dims`` the terms are computed at every dimension
(embeddings truncated and re-normalised, as ST's ``MatryoshkaLoss`` does) and the smaller dimensions'
terms are keyed ``"<task>/<term>@<dim>"``.

The trainer is given one per-dataset loss per training dataset (ST's DatasetDict + loss dict routing):
``router.task_losses(dataset_names)``. With ``mini_batch_size`` set, each of them is a GradCache loss
(ST's ``CachedLossMixin``): same loss and gradients, memory bounded by the mini-batch.

Example::

    >>> router = ViPyloQwenRouterLoss(model, temperature=0.07, margin=0.2)
    >>> terms = router.compute_loss_from_embeddings("instr", [anchor_emb, positive_emb], labels=None)
    >>> sorted(terms)
    ['instr/cosine', 'instr/infonce']
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from sentence_transformers.base.losses.gradcache import CachedLossMixin
from torch import Tensor, nn

from configuration_vipyloqwen import TASKS
from vipyloqwen_tools.train.false_negatives import IdentityMasks, above_margin, identity_masks
from vipyloqwen_tools.train.gather import gather_rows, rows_before

# Term names per loss recipe (the registry's TaskSpec.loss).
RECIPE_TERMS: dict[str, tuple[str, ...]] = {
    "infonce+mse": ("infonce", "mse"),
    "infonce+cosine": ("infonce", "cosine"),
    "infonce+triplet": ("infonce", "triplet"),
}
# Counts logged per task beside the terms (not added to the loss): candidates masked as correct answers (both
# InfoNCE directions), masked by the margin rule, and every in-batch candidate compared (the share's denominator).
STAT_NAMES = ("masked", "masked_margin", "candidates")


def task_of_dataset(name: str) -> str:
    """The registry task of a training dataset name (``ocr`` and ``ocr+neg`` are both ``ocr``)."""
    task = name.split("+", 1)[0]
    if task not in TASKS:
        raise ValueError(f"dataset {name!r} names no registry task; valid: {', '.join(TASKS)}")
    return task


def _cos_matrix(a: Tensor, b: Tensor) -> Tensor:
    return F.normalize(a, p=2, dim=-1) @ F.normalize(b, p=2, dim=-1).T


class ViPyloQwenRouterLoss(nn.Module):
    """Maps each task to its loss terms; see the module docstring for the formulas.

    Args:
        model: the SentenceTransformer being trained.
        temperature: InfoNCE temperature (logits are cosine / temperature). Default 0.07.
        score_threshold: text_pair rows with ``score >= score_threshold`` are InfoNCE positives. Default 0.5.
        margin: triplet margin on cosine distance for ocr and vqa_single (and vqa_multi unless set). Default 0.2.
        vqa_multi_margin: triplet margin for vqa_multi (default: ``margin``).
        weights: ``{task: {term: weight}}``; missing entries weigh 1.
        matryoshka_dims: optional dims (e.g. ``[1024, 768, 512, 256, 128]``) to train at; the first must be the
            full embedding width or smaller.
        matryoshka_weights: one weight per dim (default 1 each).
        gather_across_devices: gather InfoNCE candidates from every process (needs torch.distributed).
        mini_batch_size: if set, the per-dataset losses are GradCache losses with this mini-batch size.
        mask_false_negatives: mask candidates that are correct answers (needs the batch's identity keys); False
            trains on them as before and still counts them.
        false_negative_margin: also mask candidates with ``s_ij > s_ii + margin`` (None: off).

    Example::

        >>> router = ViPyloQwenRouterLoss(model, mini_batch_size=8)
        >>> trainer = SentenceTransformerTrainer(model, args, train_dataset=datasets,
        ...                                      loss=router.task_losses(datasets.keys()))
    """

    def __init__(
        self,
        model: nn.Module,
        temperature: float = 0.07,
        score_threshold: float = 0.5,
        margin: float = 0.2,
        vqa_multi_margin: float | None = None,
        weights: Mapping[str, Mapping[str, float]] | None = None,
        matryoshka_dims: Sequence[int] | None = None,
        matryoshka_weights: Sequence[float] | None = None,
        gather_across_devices: bool = False,
        mini_batch_size: int | None = None,
        mask_false_negatives: bool = True,
        false_negative_margin: float | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        for name, value in (("margin", margin), ("vqa_multi_margin", vqa_multi_margin)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.temperature = float(temperature)
        self.score_threshold = float(score_threshold)
        self.margins = {task: float(margin) for task, spec in TASKS.items() if spec.loss == "infonce+triplet"}
        if vqa_multi_margin is not None:
            self.margins["vqa_multi"] = float(vqa_multi_margin)
        self.weights = self._check_weights(weights or {})
        self.matryoshka_dims = [int(d) for d in matryoshka_dims] if matryoshka_dims else None
        if self.matryoshka_dims and any(d <= 0 for d in self.matryoshka_dims):
            raise ValueError(f"matryoshka_dims must be positive, got {self.matryoshka_dims}")
        if matryoshka_weights is not None and (
            not self.matryoshka_dims or len(matryoshka_weights) != len(self.matryoshka_dims)
        ):
            raise ValueError("matryoshka_weights needs matryoshka_dims and one weight per dim")
        self.matryoshka_weights = (
            [float(w) for w in matryoshka_weights] if matryoshka_weights else [1.0] * len(self.matryoshka_dims or [])
        )
        self.gather_across_devices = gather_across_devices
        if mini_batch_size is not None and mini_batch_size <= 0:
            raise ValueError(f"mini_batch_size must be a positive integer, got {mini_batch_size}")
        self.mini_batch_size = mini_batch_size
        if false_negative_margin is not None and not false_negative_margin >= 0:
            raise ValueError(f"false_negative_margin must be >= 0 or None, got {false_negative_margin}")
        self.mask_false_negatives = bool(mask_false_negatives)
        self.false_negative_margin = None if false_negative_margin is None else float(false_negative_margin)
        self.batch_keys: Tensor | None = None  # set by the trainer around each batch (:meth:`keys_for_batch`)
        self.last_stats: dict[str, Tensor] = {}

    @staticmethod
    def _check_weights(weights: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
        checked: dict[str, dict[str, float]] = {}
        for task, terms in weights.items():
            if task not in TASKS:
                raise ValueError(f"weights: unknown task {task!r}; valid: {', '.join(TASKS)}")
            valid = RECIPE_TERMS[TASKS[task].loss]
            for term, value in terms.items():
                if term not in valid:
                    raise ValueError(f"weights[{task!r}]: unknown term {term!r}; valid: {', '.join(valid)}")
                if value < 0:
                    raise ValueError(f"weights[{task!r}][{term!r}] must be >= 0, got {value}")
            checked[task] = {term: float(value) for term, value in terms.items()}
        return checked

    def weight(self, task: str, term: str) -> float:
        return self.weights.get(task, {}).get(term, 1.0)

    # ------------------------------------------------------------------ maths
    def _gather(self, tensor: Tensor, with_grad: bool = True) -> Tensor:
        if not self.gather_across_devices:
            return tensor
        return gather_rows(tensor, with_grad)  # the ranks may hold different counts (a row dropped at batch time)

    def _distributed(self) -> bool:
        return self.gather_across_devices and torch.distributed.is_available() and torch.distributed.is_initialized()

    def _masked_mean(self, per_row: Tensor, weights: Tensor) -> Tensor:
        """``sum(per_row * weights) / count``; under a process group the count is the mean over the ranks, so the
        ranks' average (what DDP optimises) is the global masked mean. An empty selection gives 0 (graph kept)."""
        count = weights.sum()
        if self._distributed():
            # DDP averages the ranks' losses (and gradients). For the global masked mean sum_all / count_all when
            # the ranks select different numbers of rows, each rank divides its sum by the mean count over the ranks.
            world = torch.distributed.get_world_size()
            total = count.detach().clone()
            torch.distributed.all_reduce(total)
            count = total / world
        return (per_row * weights).sum() / count.clamp(min=1.0 / 1024)

    def _count(self, stats: dict[str, Tensor] | None, name: str, mask: Tensor | None, rows: Tensor) -> None:
        if stats is not None and mask is not None:
            stats[name] = stats[name] + (mask & rows[:, None]).sum()

    def symmetric_infonce(
        self,
        anchors: Tensor,
        positives: Tensor,
        negatives: Sequence[Tensor] | Tensor | None,
        rows: Tensor,
        masks: IdentityMasks | None = None,
        stats: dict[str, Tensor] | None = None,
    ) -> Tensor:
        """Mean of anchor->documents and positive->anchors cross-entropies over the local ``rows`` (bool mask).

        Candidates are gathered across processes when enabled; ``rows`` marks which local rows are positive pairs.
        ``negatives``: the explicit negative columns (each ``[B, D]``). ``masks``: the batch's identity masks
        (:func:`~vipyloqwen_tools.train.false_negatives.identity_masks`); masked candidates get no logit (-inf).
        ``stats``: counts are added to it (see :data:`STAT_NAMES`).
        """
        batch = anchors.size(0)
        offset = rows_before(batch, anchors.device) if self.gather_across_devices else 0
        all_anchors = self._gather(anchors)
        all_positives = self._gather(positives)
        if isinstance(negatives, Tensor):
            negatives = [negatives]
        documents = [all_positives] + [self._gather(negative) for negative in negatives or ()]
        targets = torch.arange(offset, offset + batch, device=anchors.device)
        cos_q2d = _cos_matrix(anchors, torch.cat(documents))
        cos_d2q = _cos_matrix(positives, all_anchors)
        # Diagnostic (the training trace reads it): candidates each row was compared with, after the gather.
        self.last_candidates = {"documents": int(cos_q2d.size(1)), "anchors": int(cos_d2q.size(1))}
        own = torch.arange(batch, device=anchors.device)
        margin_q2d = above_margin(cos_q2d, cos_q2d[own, targets], self.false_negative_margin)
        margin_d2q = above_margin(cos_d2q, cos_d2q[own, targets], self.false_negative_margin)
        for margin in (margin_q2d, margin_d2q):
            if margin is not None:
                margin[own, targets] = False
        q2d_mask = d2q_mask = None
        if masks is not None:
            real = ~masks.padding[None, :]
            self._count(stats, "masked", masks.q2d & real, rows)
            self._count(stats, "masked", masks.d2q, rows)
            if self.mask_false_negatives:
                q2d_mask, d2q_mask = masks.q2d, masks.d2q
            else:  # today's in-batch loss: only padded slots (copies, not documents) are left out
                q2d_mask = masks.padding[None, :].expand_as(cos_q2d).clone()
                q2d_mask[own, targets] = False
        if margin_q2d is not None:  # counted where not masked already
            self._count(stats, "masked_margin", margin_q2d if q2d_mask is None else margin_q2d & ~q2d_mask, rows)
            self._count(stats, "masked_margin", margin_d2q if d2q_mask is None else margin_d2q & ~d2q_mask, rows)
            q2d_mask = margin_q2d if q2d_mask is None else q2d_mask | margin_q2d
            d2q_mask = margin_d2q if d2q_mask is None else d2q_mask | margin_d2q
        if stats is not None:
            slots = (
                torch.ones_like(cos_q2d, dtype=torch.bool)
                if masks is None
                else ~masks.padding[None, :].expand_as(cos_q2d)
            )
            compared = slots.sum(dim=1) - 1 + cos_d2q.size(1) - 1  # minus the target in each direction
            stats["candidates"] = stats["candidates"] + (compared * rows).sum()
        logits_q2d = cos_q2d / self.temperature
        logits_d2q = cos_d2q / self.temperature
        if q2d_mask is not None:
            logits_q2d = logits_q2d.masked_fill(q2d_mask, float("-inf"))
        if d2q_mask is not None:
            logits_d2q = logits_d2q.masked_fill(d2q_mask, float("-inf"))
        per_row = 0.5 * (
            F.cross_entropy(logits_q2d, targets, reduction="none")
            + F.cross_entropy(logits_d2q, targets, reduction="none")
        )
        return self._masked_mean(per_row, rows.to(per_row.dtype))

    def _hardest(self, candidates: Tensor, invalid: Tensor | None, positive_cos: Tensor) -> Tensor:
        """The most similar valid candidate per row (``-inf`` for a row without one); the margin rule applies."""
        margin_mask = above_margin(candidates, positive_cos, self.false_negative_margin)
        if margin_mask is not None:
            invalid = margin_mask if invalid is None else invalid | margin_mask
        if invalid is not None:
            candidates = candidates.masked_fill(invalid, float("-inf"))
        return candidates.max(dim=1).values

    def _in_batch_hardest(self, anchors: Tensor, positives: Tensor, masks: IdentityMasks | None, positive_cos: Tensor):
        batch = anchors.size(0)
        offset = rows_before(batch, anchors.device) if self.gather_across_devices else 0
        candidates = _cos_matrix(anchors, self._gather(positives))
        own = torch.arange(batch, device=anchors.device)
        candidates = candidates.index_put(
            (own, own + offset), torch.tensor(float("-inf"), dtype=candidates.dtype, device=anchors.device)
        )
        if candidates.size(1) < 2:
            raise ValueError("the hardest in-batch negative needs a batch of at least 2 rows")
        invalid = masks.q2d[:, : candidates.size(1)] if masks is not None and self.mask_false_negatives else None
        return self._hardest(candidates, invalid, positive_cos)

    def triplet(
        self,
        anchors: Tensor,
        positives: Tensor,
        negatives: Sequence[Tensor] | Tensor | None,
        margin: float,
        masks: IdentityMasks | None = None,
    ) -> Tensor:
        """``mean(relu(cos(a, n) - cos(a, p) + margin))``: n = the row's hardest valid explicit negative, else (none,
        or all masked) the hardest valid in-batch one; never a masked candidate (see the module docstring). Rows left
        without any valid negative are left out of the mean."""
        positive_cos = F.cosine_similarity(anchors, positives, dim=-1)
        if isinstance(negatives, Tensor):
            negatives = [negatives]
        if negatives:
            explicit = torch.stack([F.cosine_similarity(anchors, n, dim=-1) for n in negatives], dim=1)
            invalid = None
            if masks is not None:
                invalid = masks.explicit if self.mask_false_negatives else masks.explicit_padding
            negative_cos = self._hardest(explicit, invalid, positive_cos)
            if masks is not None:  # a collective under a process group: every rank computes it (one layout per step)
                fallback = self._in_batch_hardest(anchors, positives, masks, positive_cos)
                negative_cos = torch.where(torch.isfinite(negative_cos), negative_cos, fallback)
        else:
            negative_cos = self._in_batch_hardest(anchors, positives, masks, positive_cos)
        losses = F.relu(negative_cos - positive_cos + margin)
        valid = torch.isfinite(negative_cos)
        if not self._distributed() and bool(valid.all()):
            return losses.mean()
        # relu(-inf) = 0 with a zero gradient: a row without a valid negative adds nothing
        return self._masked_mean(torch.where(valid, losses, torch.zeros_like(losses)), valid.to(losses.dtype))

    def _rows(self, task: str, labels: Tensor | None, anchors: Tensor) -> tuple[Tensor, Tensor | None]:
        """The rows that are positive pairs, and text_pair's scores (checked)."""
        if TASKS[task].loss != "infonce+mse":
            return torch.ones(anchors.size(0), dtype=torch.bool, device=anchors.device), None
        if labels is None:
            raise ValueError("text_pair needs a score per row (column 'score')")
        dtype = torch.promote_types(anchors.dtype, torch.float32)
        scores = labels.to(anchors.device, dtype).view(-1)
        if scores.numel() != anchors.size(0):
            raise ValueError(f"text_pair: {scores.numel()} scores for {anchors.size(0)} rows")
        return scores >= self.score_threshold, scores

    def _terms_at(
        self,
        task: str,
        anchors: Tensor,
        positives: Tensor,
        negatives: list[Tensor],
        rows: Tensor,
        scores: Tensor | None,
        masks: IdentityMasks | None,
        stats: dict[str, Tensor] | None,
    ) -> dict:
        recipe = TASKS[task].loss
        infonce = self.symmetric_infonce(anchors, positives, negatives, rows, masks, stats)
        if recipe == "infonce+mse":
            cos = F.cosine_similarity(anchors, positives, dim=-1)
            return {"infonce": infonce, "mse": F.mse_loss(cos.to(scores.dtype), scores)}
        if recipe == "infonce+cosine":
            return {"infonce": infonce, "cosine": (1.0 - F.cosine_similarity(anchors, positives, dim=-1)).mean()}
        if recipe == "infonce+triplet":
            triplet = self.triplet(anchors, positives, negatives, self.margins[task], masks)
            return {"infonce": infonce, "triplet": triplet}
        raise ValueError(f"task {task!r}: no loss recipe {recipe!r}")

    def _identity(self, keys: Tensor | None, rows: Tensor, columns: int) -> IdentityMasks | None:
        if keys is None:
            return None
        keys = keys.to(rows.device)
        if keys.dim() != 2 or keys.size(0) != rows.size(0) or keys.size(1) != columns:
            raise ValueError(f"keys: expected [{rows.size(0)}, {columns}] (one per column), got {list(keys.shape)}")
        offset = rows_before(rows.size(0), rows.device) if self.gather_across_devices else 0
        return identity_masks(keys, rows, lambda t: self._gather(t, with_grad=False), offset)

    @contextlib.contextmanager
    def keys_for_batch(self, keys: Tensor | None):
        """The identity keys of the batch being computed (``[B, columns]``: query, positive, negatives), read by
        :meth:`forward` and the GradCache loss; the trainer sets them around each batch."""
        previous, self.batch_keys = self.batch_keys, keys
        try:
            yield
        finally:
            self.batch_keys = previous

    def compute_loss_from_embeddings(
        self, task: str, embeddings: Sequence[Tensor], labels: Tensor | None = None, keys: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The weighted loss terms of one single-task batch; its counts go to :attr:`last_stats`.

        Args:
            task: registry key or prefix token (``"ocr"`` / ``"<ocr>"``).
            embeddings: one ``[B, D]`` tensor per column: anchor, positive, explicit negatives (0 or more).
            labels: ``[B]`` scores in [0, 1] (text_pair only; ignored otherwise).
            keys: ``[B, columns]`` identity keys (:mod:`vipyloqwen_tools.data.identity`), one per column: what the
                false-negative masking compares; without them nothing is masked by identity.

        Returns:
            ``{"<task>/<term>": weighted scalar}`` (plus ``"<task>/<term>@<dim>"`` for smaller Matryoshka dims).

        Example::

            >>> router.compute_loss_from_embeddings("text_pair", [a, b], torch.tensor([0.9, 0.1]))
            {'text_pair/infonce': tensor(...), 'text_pair/mse': tensor(...)}
        """
        from configuration_vipyloqwen import resolve_task

        name = resolve_task(task)
        if name is None:
            raise ValueError(f"task {task!r} has no loss: give a registry task")
        if len(embeddings) < 2:
            raise ValueError(
                f"{name}: expected 2 or more embedding columns (anchor, positive, negatives...), got {len(embeddings)}"
            )
        sizes = {int(e.size(0)) for e in embeddings}
        if len(sizes) != 1:
            raise ValueError(f"{name}: columns have different batch sizes {sorted(sizes)}")
        anchors, positives, negatives = embeddings[0], embeddings[1], list(embeddings[2:])
        rows, scores = self._rows(name, labels, anchors)
        masks = self._identity(keys, rows, len(embeddings))
        stats = {stat: torch.zeros((), dtype=torch.long, device=anchors.device) for stat in STAT_NAMES}
        dims = self.matryoshka_dims or [anchors.size(-1)]
        dim_weights = self.matryoshka_weights if self.matryoshka_dims else [1.0]
        out: dict[str, Tensor] = {}
        for index, (dim, dim_weight) in enumerate(zip(dims, dim_weights, strict=False)):
            if dim > anchors.size(-1):
                raise ValueError(f"matryoshka dim {dim} exceeds the embedding width {anchors.size(-1)}")

            def cut(t: Tensor, dim: int = dim) -> Tensor:
                return F.normalize(t[..., :dim], p=2, dim=-1)

            terms = self._terms_at(
                name,
                cut(anchors),
                cut(positives),
                [cut(n) for n in negatives],
                rows,
                scores,
                masks,
                stats if index == 0 else None,  # counted at the full width
            )
            suffix = "" if index == 0 else f"@{dim}"
            for term, value in terms.items():
                out[f"{name}/{term}{suffix}"] = value * (self.weight(name, term) * dim_weight)
        if self._distributed():
            counts = torch.stack([stats[stat] for stat in STAT_NAMES])
            torch.distributed.all_reduce(counts)  # the global batch's counts
            stats = dict(zip(STAT_NAMES, counts, strict=True))
        self.last_stats = {f"{name}/{stat}": value.detach() for stat, value in stats.items()}
        return out

    # ------------------------------------------------------------------ routing
    def task_losses(self, dataset_names: Iterable[str]) -> dict[str, TaskLoss]:
        """One per-dataset loss per training dataset (``ocr`` and ``ocr+neg`` both route to ``ocr``)."""
        cls = CachedTaskLoss if self.mini_batch_size else TaskLoss
        return {name: cls(self, task_of_dataset(name)) for name in dataset_names}

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None, task: str) -> dict:
        from vipyloqwen_tools.train.distributed import embed_columns_once  # ST's embed_columns, DDP-safe

        embeddings = embed_columns_once(self.model, list(sentence_features))
        return self.compute_loss_from_embeddings(task, embeddings, labels, self.batch_keys)


class TaskLoss(nn.Module):
    """The router bound to one task: what ST's per-dataset loss routing calls for that dataset."""

    def __init__(self, router: ViPyloQwenRouterLoss, task: str) -> None:
        super().__init__()
        self.router = router
        self.task = task

    @property
    def model(self) -> nn.Module:
        return self.router.model

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> dict:
        return self.router(sentence_features, labels, self.task)

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "temperature": self.router.temperature,
            "score_threshold": self.router.score_threshold,
            "margins": self.router.margins,
            "weights": self.router.weights,
            "matryoshka_dims": self.router.matryoshka_dims,
            "gather_across_devices": self.router.gather_across_devices,
            "mask_false_negatives": self.router.mask_false_negatives,
            "false_negative_margin": self.router.false_negative_margin,
        }


class CachedTaskLoss(CachedLossMixin, TaskLoss):
    """GradCache variant of :class:`TaskLoss` (ST's ``CachedLossMixin``): embeddings are computed in mini-batches
    without graphs, the loss is back-propagated to the embeddings, then each mini-batch is re-embedded with
    gradients. Same loss and gradients as :class:`TaskLoss`; memory bounded by ``router.mini_batch_size``."""

    def __init__(self, router: ViPyloQwenRouterLoss, task: str) -> None:
        super().__init__(router, task)
        self.mini_batch_size = router.mini_batch_size
        self._last_terms: dict[str, Tensor] = {}

    def calculate_loss(self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False):
        embeddings = [torch.cat(chunks, dim=0) for chunks in reps]
        terms = self.router.compute_loss_from_embeddings(self.task, embeddings, labels, self.router.batch_keys)
        total = torch.stack(list(terms.values())).sum()
        self._last_terms = {name: value.detach() for name, value in terms.items()}
        if with_backward:
            total.backward()
            return total.detach()
        return total

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> dict:
        loss = self.forward_cached(list(sentence_features), labels)
        terms = dict(self._last_terms)
        if not loss.requires_grad:
            return terms
        # The GradCache hook sits on ``loss``: route the whole backward through the first term, whose value
        # stays that term's value; the others are reported as constants. Their sum equals ``loss``.
        first = next(iter(terms))
        terms[first] = terms[first] + (loss - loss.detach())
        return terms


__all__ = ["ViPyloQwenRouterLoss", "TaskLoss", "CachedTaskLoss", "RECIPE_TERMS", "STAT_NAMES", "task_of_dataset"]
