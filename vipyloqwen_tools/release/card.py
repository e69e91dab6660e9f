"""The model card (README.md) of a release: which one, and how it is written.

Three kinds, chosen by :func:`choose_card_kind`:

- ``repository``: the maintainers' release of ``erax-ai/viPyloQwen`` (or ``--repository-card``): the repository's
  README.md with the tasks table refreshed from the registry, the evaluation tables given and the repo id in its
  code blocks (:func:`repository_card`);
- ``fine-tune``: any other repo id: a card written for the model being released from its checkpoint's facts
  (:mod:`.facts`: base model, embedding size, Matryoshka widths, limits, tasks and rows trained) with the repo id
  in every snippet and none of the maintainers' claims (training data, sizes, citation) (:func:`fine_tune_card`);
- ``given``: ``--card FILE``, your own card, released as written (the release check still checks it).

Evaluation tables come from MTEB result folders (:mod:`.results`: one definition of the means, stand-in data
marked) under the model name they were filed under (``run_mteb.py --name``).

Example::

    >>> facts = checkpoint_facts("runs/mine/final", base_model="erax-ai/viPyloQwen")
    >>> card = fine_tune_card(facts, "me/my-embedder", eval_dir="runs/mteb")
    >>> card.splitlines()[0]
    '---'
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from configuration_vipyloqwen import MAX_IMAGES_PER_ITEM, TASKS
from vipyloqwen_tools.release.facts import CheckpointFacts, FactsError
from vipyloqwen_tools.release.readme import replace_block, tasks_table

DEFAULT_REPO_ID = "erax-ai/viPyloQwen"
# The source repository: the tools the card names (scripts/, train_st.py, eval/, ...) live there, not on the Hub.
SOURCE_REPOSITORY = "https://github.com/EraX-AI/viPyloQwen"
CARD_KINDS = ("repository", "fine-tune", "given")
# The front matter a fine-tune card inherits when not told otherwise: the base model family's languages and licence.
DEFAULT_LANGUAGES = ("vi", "en", "zh")
DEFAULT_LICENSE = "apache-2.0"
TAGS = ("sentence-transformers", "feature-extraction", "multimodal", "image-text-retrieval", "qwen2-vl", "custom_code")
CODE_BLOCK = re.compile(r"(```[a-z]*\n)(.*?)(```)", re.S)


def choose_card_kind(repo_id: str, card: str | Path | None = None, repository_card: bool = False) -> str:
    """``given`` with ``--card``; ``repository`` for the maintainers' repo id or ``--repository-card``; else
    ``fine-tune``."""
    if card is not None and repository_card:
        raise ValueError("--card and --repository-card: give one card")
    if card is not None:
        return "given"
    return "repository" if repository_card or repo_id == DEFAULT_REPO_ID else "fine-tune"


def eval_section(eval_dir: Path) -> str:
    """Markdown tables of the MTEB results under ``eval_dir`` (:mod:`.results` reads the MTEB layout)."""
    from vipyloqwen_tools.release.results import comparison_tables, load_models

    return comparison_tables(load_models([eval_dir]))


def build_card(readme: str, eval_dir: Path | None = None) -> str:
    """The repository card: ``readme`` with the tasks table refreshed from the registry and, when ``eval_dir`` is
    given, the evaluation tables between ``<!-- eval:start -->`` / ``<!-- eval:end -->`` (a new "Evaluation"
    section before "Citation", or at the end, when the README has no such markers)."""
    card = replace_block(readme, "tasks", tasks_table())
    if eval_dir is None:
        return card
    tables = eval_section(Path(eval_dir)).rstrip("\n") + "\n"
    if "<!-- eval:start -->" in card:
        return replace_block(card, "eval", tables)
    section = f"## Evaluation\n\n<!-- eval:start -->\n{tables}<!-- eval:end -->\n\n"
    if "\n## Citation" in card:
        head, tail = card.split("\n## Citation", 1)
        return f"{head.rstrip()}\n\n{section}## Citation{tail}"
    return f"{card.rstrip()}\n\n{section}"


def repository_card(readme: str, repo_id: str, eval_dir: Path | None = None) -> str:
    """:func:`build_card` with ``repo_id`` in place of the maintainers' id in every code block."""
    card = build_card(readme, eval_dir)
    if repo_id == DEFAULT_REPO_ID:
        return card
    maintainers = re.compile(rf"(?<![\w/.-]){re.escape(DEFAULT_REPO_ID)}(?![\w.-])")
    return CODE_BLOCK.sub(lambda m: m[1] + maintainers.sub(repo_id, m[2]) + m[3], card)


def _count(value: int) -> str:
    return f"{value:,}"


def _front_matter(base_model: str, license: str, languages: list[str]) -> str:
    data = {
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "language": list(languages),
        "license": license,
        "base_model": base_model,
        "base_model_relation": "finetune",
        "tags": list(TAGS),
    }
    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + "---\n"


def _training_section(facts: CheckpointFacts) -> list[str]:
    record = facts.train_config
    if record is None:
        return [
            "No training record (`train_config.json`) was given with this checkpoint, so this card states nothing "
            "about its training data.",
        ]
    rows = record.get("rows") or {}
    per_task = facts.rows_per_task()
    lines = []
    if per_task:
        lines += ["| task | rows trained |", "| --- | ---: |"]
        lines += [f"| `{task}` | {_count(count)} |" for task, count in per_task.items()]
        lines += [f"| all | {_count(sum(per_task.values()))} |", ""]
    data = Path(str(record.get("train_file", "?"))).name  # the file's name only: a path names the training machine
    if rows:
        lines.append(
            f"- Data: `{data}`, {_count(rows.get('rows_in', 0))} rows: {_count(rows.get('trained', 0))} trained, "
            f"{_count(rows.get('held_out_for_eval', 0))} held out for evaluation, {_count(rows.get('rejected', 0))} "
            "rejected by the validator."
        )
    else:
        lines.append(f"- Data: `{data}`.")
    world = record.get("world_size", 1)
    batch = record.get("per_device_train_batch_size")
    accumulation = record.get("gradient_accumulation_steps")
    length = (
        f"{record['max_steps']} steps (--max-steps)"
        if (record.get("max_steps") or -1) > 0
        else f"{record.get('num_train_epochs')} epoch(s)"
    )
    done = f"{_count(record['global_step'])} optimizer steps" if "global_step" in record else "optimizer steps"
    lines.append(
        f"- Schedule: {done} ({length}), {batch} rows per device x {accumulation} accumulation x {world} "
        f"process(es) per step, learning rate {record.get('learning_rate')} ({record.get('lr_scheduler_type')}), "
        f"precision {record.get('precision_used', record.get('precision'))}."
    )
    trained = (record.get("limits") or {}).get("training")
    if trained:
        lines.append(
            f"- Trained at {_count(trained['max_text_tokens'])} text tokens per item and "
            f"{_count(trained['max_image_tokens'])} image tokens per image; the model keeps the inference limits "
            "above."
        )
    evaluation = record.get("evaluation") or {}
    evaluated = sum((evaluation.get("rows") or {}).values())
    if evaluation.get("kind") == "eval_split":
        lines.append(
            f"- Evaluated during training on {_count(evaluated)} rows held out of the training data "
            f"(--eval-split {evaluation.get('eval_split')}), never trained on."
        )
    elif evaluation.get("kind") == "eval_file":
        lines.append(f"- Evaluated during training on `{evaluation.get('file')}` ({_count(evaluated)} rows).")
    elif evaluation.get("kind") == "none":
        lines.append("- No evaluation during training.")
    return lines


def fine_tune_card(
    facts: CheckpointFacts,
    repo_id: str,
    eval_dir: str | Path | None = None,
    license: str = DEFAULT_LICENSE,
    languages: list[str] | tuple[str, ...] = DEFAULT_LANGUAGES,
) -> str:
    """The card of a fine-tune, written from ``facts`` (see the module docstring). Raises
    :class:`~vipyloqwen_tools.release.facts.FactsError` when the base model's Hub id is unknown."""
    if not facts.base_model:
        model = (facts.train_config or {}).get("model")
        said = f" (train_config.json says model {model!r}, not a Hub id)" if model else ""
        raise FactsError(
            f"the card needs the Hub id of the model {repo_id} was fine-tuned from (its base_model){said}: pass "
            "--base-model ORG/NAME"
        )
    base = facts.base_model
    name = repo_id.split("/")[-1]
    widths = ", ".join(str(d) for d in facts.matryoshka_dims) if facts.matryoshka_dims else "none (full width only)"
    limits = facts.limits
    card = [
        _front_matter(base, license, list(languages)),
        f"# {name}",
        "",
        f"`{repo_id}` is a fine-tune of [{base}](https://huggingface.co/{base}), trained with the "
        f"[viPyloQwen]({SOURCE_REPOSITORY}) training code: one embedding model for text, images and text with "
        f"1-{MAX_IMAGES_PER_ITEM} images, {facts.embed_dim}-dimensional vectors. This card was written from the "
        "checkpoint's own files and its training record; every number below is this checkpoint's.",
        "",
        '**Use the model** (`pip install "sentence-transformers>=6.2,<7" "transformers>=5.23,<6" torch pillow`):',
        "",
        "```python",
        "from sentence_transformers import SentenceTransformer",
        f'model = SentenceTransformer("{repo_id}", trust_remote_code=True)',
        'print(model.similarity(model.encode(["Xe hơi màu đỏ"]), model.encode(["Chiếc ô tô đỏ", "Con mèo ngủ"])))',
        "```",
        "",
        "## Model",
        "",
        "| | |",
        "| --- | --- |",
        f"| base model | [{base}](https://huggingface.co/{base}) |",
        f"| embedding size | {facts.embed_dim} (L2-normalised; cosine similarity) |",
        f"| Matryoshka widths trained | {widths} |",
        f"| parameters | {_count(facts.parameters)} |",
        f"| text tokens per item | {_count(limits.max_text_tokens)} (longer text is truncated) |",
        f"| image tokens per image | {limits.min_image_tokens}-{_count(limits.max_image_tokens)} (one token = a "
        "28x28 pixel area) |",
        f"| images per item | 1-{MAX_IMAGES_PER_ITEM} |",
        "",
        "## Tasks",
        "",
        "Five task prefixes tell the model what kind of input it sees (`prompt_name=` in Sentence-Transformers, "
        "`task=` in `AutoModel.encode`); plain queries and documents carry none.",
        "",
        "<!-- tasks:start -->",
        tasks_table().rstrip("\n"),
        "<!-- tasks:end -->",
        "",
        "## Training",
        "",
        *_training_section(facts),
        "",
        "## Usage",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModel",
        "",
        f'model = AutoModel.from_pretrained("{repo_id}", trust_remote_code=True, dtype=torch.float32)',
        f'emb = model.encode(text=["Xe hơi màu đỏ", "Chiếc ô tô đỏ"], task="{next(iter(TASKS))}")  # [2, '
        f"{facts.embed_dim}]",
        "```",
        "",
        "## Evaluation",
        "",
    ]
    if eval_dir is not None:
        from vipyloqwen_tools.release.results import find_revision_folders, load_models

        names = ", ".join(f"`{model.name}`" for model in load_models(find_revision_folders(eval_dir)))
        card += [f"MTEB main scores (x100) of {names}, as filed by `eval/run_mteb.py`:", "", eval_section(eval_dir)]
    else:
        card.append("No benchmark results were given for this release.")
    return "\n".join(card).rstrip("\n") + "\n"


__all__ = [
    "CARD_KINDS",
    "DEFAULT_LANGUAGES",
    "DEFAULT_LICENSE",
    "DEFAULT_REPO_ID",
    "SOURCE_REPOSITORY",
    "build_card",
    "choose_card_kind",
    "eval_section",
    "fine_tune_card",
    "repository_card",
]
