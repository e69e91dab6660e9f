"""Rows that cannot be trained when their batch is built: dropped and recorded, or a clear stop; never a crash.

Validation opened every image once (and checked its size against the model's rules), but a 15-day run builds its
batches long after: an image deleted, truncated or changed since then is found only when its batch is built, and
so is any other row the collator cannot preprocess. :class:`BadRowGuard` catches that per row:

- the training dataset is wrapped (:class:`GuardedRows`): a row whose image fails to open, or breaks a size rule
  of the model's image path (:func:`~vipyloqwen_tools.data.arrow.open_image`), comes back as a :class:`BadRow`
  marker (dataset, row, image, reason) instead of an exception in the dataloader;
- a batch the collator (tokeniser, image processor) refuses with a ValueError / OSError is collated again row by
  row: the rows that fail alone are :class:`BadRow` markers too (``kind="preprocess"``); if none fails alone the
  error is not a row's and is raised as it is;
- the collator (:class:`GuardedCollator`) finds the row's JSONL line (:func:`~vipyloqwen_tools.data.arrow.row_source`)
  and makes the validate-once cache entry learn it (:func:`~vipyloqwen_tools.data.learned.remember`), then:
  with ``--skip-bad-rows`` drops it from the batch, appends it to the rejects file (file, line, reason, raw line)
  and counts it; without it raises :class:`~vipyloqwen_tools.data.DataError` naming the file, the line and the
  image and suggesting ``--skip-bad-rows``: the run stops before the optimizer step of that batch. A resumed run
  loads the entry with the row among its bad lines, so it is refused at its start (without the flag) or drops the
  row (with it): no crash loop.
- :meth:`BadRowGuard.totals` gives the end-of-run account: rows in = trained + rejected (at validation + at batch
  time), logged by the training run.

Sentence-Transformers' model card reads the first 100 rows of every dataset when the trainer is created (dataset
statistics); :func:`model_card_without_unreadable_rows` keeps an unreadable image there from stopping the run
before step 1 (the row is handled when its batch is built, as any other).

Example::

    >>> guard = BadRowGuard(report, train_file, rejects, skip=True)
    >>> loader = guard.wrap_loader(loader)      # in the trainer's dataloader
    >>> collator = guard.collator(collator)
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, Dataset

from vipyloqwen_tools.data import DataError, ValidationReport
from vipyloqwen_tools.data.arrow import ImageReadError, read_line_at, row_source
from vipyloqwen_tools.data.learned import image_stats, recall, remember
from vipyloqwen_tools.train.trace import ROW_COLUMN

logger = logging.getLogger("vipyloqwen.train")
MIN_ROWS = 2  # in-batch negatives: a batch needs two rows


@dataclass
class BadRow:
    """A row of the training data that could not be used while its batch was built. ``kind``: ``unreadable`` (an
    image does not read), ``unusable`` (an image reads but breaks a size rule), ``preprocess`` (the collator
    refused the row; ``image`` then lists the row's images)."""

    dataset: str
    index: int  # the row's index in the train file's dataset (what row_source reads)
    image: str
    reason: str
    position: int | None = None  # its index in the trained dataset (differs when --eval-split held rows out)
    kind: str = "unreadable"


WHEN = {
    "unreadable": "unreadable when its batch was built",
    "unusable": "unusable when its batch was built",
    "preprocess": "failed preprocessing when its batch was built",
}


class GuardedRows(Dataset):
    """The trainer's ``ConcatDataset`` of the per-task datasets; a row with an unreadable image -> :class:`BadRow`."""

    def __init__(self, inner, names: list[str]) -> None:
        self.inner, self.names = inner, list(names)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        try:
            return self.inner[index]
        except ImageReadError as error:
            which = bisect.bisect_right(self.inner.cumulative_sizes, index)
            local = index - (self.inner.cumulative_sizes[which - 1] if which else 0)
            kind = "unusable" if error.unusable else "unreadable"
            # Row ids (train/trace.py) are the rows' indices in the file's dataset, taken before --eval-split
            # selected the rows to train: the line is found from them, not from the position here.
            row_id = self.inner.datasets[which].with_format(None)[local].get(ROW_COLUMN, local)
            return BadRow(self.names[which], int(row_id), error.path, error.reason, position=local, kind=kind)

    def position_of(self, dataset: str, row_id: int) -> int:
        """The position in a trained dataset of the row with row id ``row_id`` (they differ when --eval-split held
        rows out); read only for a row the collator refused."""
        data = self.inner.datasets[self.names.index(dataset)].with_format(None)
        return data[ROW_COLUMN].index(row_id) if ROW_COLUMN in data.column_names else row_id

    def stored_row(self, dataset: str, index: int) -> dict[str, Any]:
        """The row at position ``index`` of a trained dataset, as stored (image paths, not images)."""
        return self.inner.datasets[self.names.index(dataset)].with_format(None)[index]


class GuardedCollator:
    """Wraps the trainer's collator: takes :class:`BadRow` markers out of the batch (see the module docstring)."""

    def __init__(self, inner, guard: BadRowGuard) -> None:
        self.inner, self.guard = inner, guard

    def __getattr__(self, name: str):
        if name in ("inner", "guard"):  # during unpickling
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __call__(self, features: list[Any]) -> dict[str, Any]:
        bad = [row for row in features if isinstance(row, BadRow)]
        good = [row for row in features if not isinstance(row, BadRow)]
        batch = None
        if good and (not bad or self.guard.skip):  # without --skip-bad-rows a bad row stops the run anyway
            try:
                batch = self.inner([dict(row) for row in good])  # copies: the inner collators take columns out
            except DataError:
                raise
            except (ValueError, OSError) as error:
                failing = self._failing_alone(good)
                if not failing:
                    raise  # no row fails on its own: not a data problem of a row
                logger.warning("a batch failed preprocessing (%s); rows that fail alone: %d", error, len(failing))
                refused = {(row.dataset, row.index) for row in failing}
                good = [row for row in good if (row["dataset_name"], int(row[ROW_COLUMN])) not in refused]
                bad += failing
        if not bad:
            return batch
        records = [self.guard.learn(row) for row in bad]
        if not self.guard.skip:
            raise DataError(self.guard.stop_message(records))
        if len(good) < MIN_ROWS:
            raise DataError(
                f"a batch of dataset {bad[0].dataset!r} keeps {len(good)} usable row(s) of {len(features)}: "
                "too few to train on (in-batch negatives need 2); is an image folder missing? Unusable: "
                + "; ".join(f"line {r['line']}: {r['images_failed']}" for r in records)
            )
        return batch if batch is not None else self.inner(good)  # batch: collated from exactly these good rows

    def _failing_alone(self, rows: list[dict[str, Any]]) -> list[BadRow]:
        """The rows of a refused batch that the collator refuses on their own (each collated alone)."""
        failing = []
        for row in rows:
            try:
                self.inner([dict(row)])
            except DataError:
                raise
            except (ValueError, OSError) as error:
                name, row_id = row["dataset_name"], int(row[ROW_COLUMN])
                position = self.guard.rows.position_of(name, row_id)
                images = self.guard.row_images(name, position)
                failing.append(
                    BadRow(name, row_id, ", ".join(images) or "(none)", str(error), position, kind="preprocess")
                )
        return failing


class BadRowGuard:
    """What the run needs to handle unreadable rows: the report (its cache entry), the train file, the rejects file."""

    def __init__(self, report: ValidationReport, train_file: str | Path, rejects: str | Path, skip: bool) -> None:
        self.report = report
        self.train_file = str(Path(train_file).resolve())
        self.rejects = Path(rejects)
        self.skip = skip
        self.entry = Path(report.cache_entry) if report.cache_entry else None
        self.known_at_start = {record["line"] for record in recall(self.entry)} if self.entry else set()
        self.rows: GuardedRows | None = None
        self.held_out = 0  # good rows held out for evaluation (--eval-split): neither trained nor rejected

    # ---------------------------------------------------------------- wiring
    def wrap_loader(self, loader: DataLoader, names: list[str]) -> DataLoader:
        """The same DataLoader (sampler, collator, workers) over :class:`GuardedRows` of its dataset."""
        self.rows = GuardedRows(loader.dataset, names)
        options = dict(
            batch_sampler=loader.batch_sampler,
            collate_fn=loader.collate_fn,
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
            persistent_workers=loader.persistent_workers,
            timeout=loader.timeout,
            worker_init_fn=loader.worker_init_fn,
        )
        if loader.num_workers:
            options["prefetch_factor"] = loader.prefetch_factor
        return DataLoader(self.rows, **options)

    def collator(self, inner) -> GuardedCollator:
        return GuardedCollator(inner, self)

    # ---------------------------------------------------------------- one bad row
    def row_images(self, dataset: str, index: int) -> list[str]:
        """Every image path of the row at position ``index`` of a trained dataset (query, positive, negatives), as
        stored."""
        stored = self.rows.stored_row(dataset, index)
        sides = [stored.get(side) or {} for side in ("anchor", "positive")] + list(stored.get("negatives") or [])
        return [image for side in sides for image in side.get("images") or []]

    def learn(self, row: BadRow) -> dict[str, Any]:
        """Find the row's line, make the cache entry learn it, and (with --skip-bad-rows) write it to the rejects."""
        line, offset = row_source(self.entry / "arrow", row.dataset, row.index)
        images = self.row_images(row.dataset, row.index if row.position is None else row.position)
        failed = (
            f"images {images}: {row.reason}" if row.kind == "preprocess" else f"image {row.image!r}: {row.reason}"
        )
        record = {
            "line": line,
            "dataset": row.dataset,
            "index": row.index,
            "task": row.dataset.split("+")[0],
            "images": images,
            "images_failed": failed,
            "reason": f"{WHEN[row.kind]}: {failed}",
            "raw": read_line_at(self.train_file, offset),
            "check": "preprocess" if row.kind == "preprocess" else "images",
        }
        if row.kind == "preprocess":  # learned.apply_learned keeps it bad while its images are unchanged
            record["image_stats"] = image_stats(images)
        new = remember(self.entry, record)
        if new and self.skip:
            with self.rejects.open("a", encoding="utf-8") as handle:  # one line per write, locked: ranks append
                fcntl.flock(handle, fcntl.LOCK_EX)
                entry = {"file": self.train_file, "line": line, "reason": record["reason"], "raw": record["raw"]}
                handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
                fcntl.flock(handle, fcntl.LOCK_UN)
            logger.warning(
                "%s: line %d dropped from its batch: %s; written to %s", self.train_file, line, record["reason"],
                self.rejects,
            )  # fmt: skip
        return record

    def locate(self, dataset: str, indices: list[int]) -> list[str]:
        """``file:line`` of rows of a training dataset (the guard names a non-finite step's rows so)."""
        return [f"{self.train_file}:{row_source(self.entry / 'arrow', dataset, int(i))[0]}" for i in indices]

    def stop_message(self, records: list[dict[str, Any]]) -> str:
        lines = "\n".join(f"  {self.train_file}: line {r['line']}: {r['images_failed']}" for r in records)
        return (
            f"{len(records)} row(s) of the batch being built cannot be used (the data changed after it was "
            f"validated, or the collator refused them); the run stops before the next optimizer step:\n{lines}\n"
            f"The data cache learned the row(s) ({self.entry}). Restore the image(s) and --resume, or --resume with "
            "--skip-bad-rows to drop such rows (written to the rejects file, counted); steps since the last "
            "checkpoint are trained again."
        )

    # ---------------------------------------------------------------- end of run
    def totals(self) -> dict[str, int]:
        """``{"rows_in", "trained", "held_out_for_eval", "rejected", "rejected_at_validation",
        "rejected_at_batch_time"}`` of this run.

        Rows in = good + bad lines of the file = trained + held out (``--eval-split``) + rejected; rejected at
        validation = the report's bad lines (rows learned by an earlier run included); at batch time = rows this run
        found unreadable (read back from the cache entry, so the rows every rank and dataloader worker found are
        counted once)."""
        new = {record["line"] for record in recall(self.entry)} - self.known_at_start if self.entry else set()
        late_now = new - {bad.line for bad in self.report.bad}
        at_validation = len(self.report.bad)
        rows_in = self.report.total
        rejected = at_validation + len(late_now)
        return {
            "rows_in": rows_in,
            "trained": rows_in - rejected - self.held_out,
            "held_out_for_eval": self.held_out,
            "rejected": rejected,
            "rejected_at_validation": at_validation,
            "rejected_at_batch_time": len(late_now),
        }

    def log_totals(self) -> dict[str, int]:
        totals = self.totals()
        logger.info(
            "rows in: %d = %d trained + %s%d rejected (%d at validation, %d unreadable at batch time)%s",
            totals["rows_in"],
            totals["trained"],
            f"{self.held_out} held out for evaluation + " if self.held_out else "",
            totals["rejected"],
            totals["rejected_at_validation"],
            totals["rejected_at_batch_time"],
            f"; rejects in {self.rejects}" if totals["rejected"] and self.skip else "",
        )
        return totals


@contextlib.contextmanager
def model_card_without_unreadable_rows(model, loss):
    """Around Sentence-Transformers' model-card set-up (``add_model_card_callback``): an unreadable image among the
    rows it reads for its dataset statistics leaves those statistics out instead of stopping the run before step 1.
    (The callback is registered before it reads; the losses, set after the statistics, are set here.)
    """
    try:
        yield
    except ImageReadError as error:
        from sentence_transformers.base.model_card import get_losses

        model.model_card_data.set_losses(get_losses(loss))
        logger.warning(
            "model card: dataset statistics left out (%s); the row is handled when its batch is built", error
        )


__all__ = ["BadRow", "BadRowGuard", "GuardedCollator", "GuardedRows", "model_card_without_unreadable_rows"]
