"""The release's model card: written for a fine-tune from its checkpoint's facts (the repo id in every snippet, its
real sizes, none of the maintainers' claims), the maintainers' card kept for their release, your own card released
as written and checked; the facts and the limits the release check reads."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from vipyloqwen_tools.checkpoint.limits import InferenceLimits
from vipyloqwen_tools.release.assemble import ReleaseError, assemble, static_problems
from vipyloqwen_tools.release.card import DEFAULT_REPO_ID, build_card
from vipyloqwen_tools.release.facts import checkpoint_facts, find_train_config, hub_id_of

ROOT = Path(__file__).resolve().parent.parent
REPO_ID = "me/my-embedder"
BASE = "someone/base-embedder"
RECORD = {
    "model": BASE,
    "train_file": "/home/me/data/mine.jsonl",
    "max_steps": -1,
    "num_train_epochs": 3,
    "global_step": 42,
    "per_device_train_batch_size": 8,
    "gradient_accumulation_steps": 2,
    "world_size": 1,
    "learning_rate": 5e-5,
    "lr_scheduler_type": "cosine",
    "precision_used": "bf16",
    "limits": {
        "inference": {"max_text_tokens": 8192, "max_image_tokens": 64, "min_image_tokens": 4},
        "training": {"max_text_tokens": 1024, "max_image_tokens": 16, "min_image_tokens": 4},
    },
    "rows": {
        "per_dataset": {"ocr": 30, "ocr+neg": 6, "text_pair": 50},
        "rows_in": 92,
        "trained": 86,
        "held_out_for_eval": 4,
        "rejected": 2,
    },
    "evaluation": {"kind": "eval_split", "file": None, "eval_split": 0.05, "rows": {"ocr": 2, "text_pair": 2}},
}


@pytest.fixture()
def run_folder(tiny_checkpoint, tmp_path) -> Path:
    """A run folder: final/ (the tiny checkpoint) and the run's train_config.json beside it."""
    run = tmp_path / "runs" / "mine"
    shutil.copytree(tiny_checkpoint, run / "final")
    (run / "train_config.json").write_text(json.dumps(RECORD), encoding="utf-8")
    return run


def _code(card: str) -> list[str]:
    return re.findall(r"```[a-z]*\n(.*?)```", card, re.S)


def test_fine_tune_card_from_the_checkpoints_facts(run_folder, tmp_path, capsys):
    out = assemble(run_folder / "final", tmp_path / "release", repo_id=REPO_ID)
    assert "model card: fine-tune (written for me/my-embedder)" in capsys.readouterr().out
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and f"base_model: {BASE}\n" in card and "base_model_relation: finetune" in card
    assert "# my-embedder" in card and f"fine-tune of [{BASE}](https://huggingface.co/{BASE})" in card
    assert f'SentenceTransformer("{REPO_ID}", trust_remote_code=True)' in card
    assert f'AutoModel.from_pretrained("{REPO_ID}", trust_remote_code=True' in card
    assert "| embedding size | 32 (L2-normalised; cosine similarity) |" in card and "32-dimensional" in card
    assert "| Matryoshka widths trained | none (full width only) |" in card
    assert "| text tokens per item | 8,192 (longer text is truncated) |" in card
    assert "| image tokens per image | 4-64" in card
    assert "| `text_pair` | 50 |" in card and "| `ocr` | 36 |" in card and "| all | 86 |" in card
    assert "- Data: `mine.jsonl`, 92 rows: 86 trained, 4 held out for evaluation, 2 rejected by the validator." in card
    assert "42 optimizer steps (3 epoch(s)), 8 rows per device x 2 accumulation x 1 process(es)" in card
    assert "Trained at 1,024 text tokens per item and 16 image tokens per image" in card
    assert "on 4 rows held out of the training data (--eval-split 0.05), never trained on." in card
    assert "No benchmark results were given for this release." in card
    # none of the maintainers' claims, and no other model in any code block
    for claim in ("11 million", "1024-dimensional", "@misc", "## Citation", "TRAIN_11M", "/home/me", DEFAULT_REPO_ID):
        assert claim not in card, claim
    assert all(DEFAULT_REPO_ID not in block for block in _code(card))
    assert static_problems(out, repo_id=REPO_ID, base_limits=InferenceLimits(8192, 64, 4)) == []


def test_matryoshka_widths_and_limits_come_from_the_checkpoint(run_folder, tmp_path):
    final = run_folder / "final"
    config = json.loads((final / "config.json").read_text(encoding="utf-8"))
    (final / "config.json").write_text(json.dumps({**config, "matryoshka_dimensions": [32, 16, 8]}), "utf-8")
    facts = checkpoint_facts(final)
    assert facts.matryoshka_dims == [32, 16, 8] and facts.limits == InferenceLimits(8192, 64, 4)
    assert facts.parameters == 9_888_128 and facts.base_model == BASE
    assert facts.rows_per_task() == {"text_pair": 50, "ocr": 36}  # registry order, +neg added to its task
    assert facts.base_limits() == InferenceLimits(8192, 64, 4)
    card = (assemble(final, tmp_path / "release", repo_id=REPO_ID) / "README.md").read_text(encoding="utf-8")
    assert "| Matryoshka widths trained | 32, 16, 8 |" in card


def test_maintainers_release_keeps_todays_card(tiny_checkpoint, tmp_path):
    out = assemble(tiny_checkpoint, tmp_path / "release", repo_id=DEFAULT_REPO_ID)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert (out / "README.md").read_text(encoding="utf-8") == build_card(readme)


def test_repository_card_for_another_repo_id_names_it_in_every_code_block(tiny_checkpoint, tmp_path):
    repo = "erax-ai/viPyloQwen-staging"
    out = assemble(tiny_checkpoint, tmp_path / "release", repo_id=repo, repository_card_=True)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert all(DEFAULT_REPO_ID + '"' not in block and f"{DEFAULT_REPO_ID} " not in block for block in _code(card))
    assert f'SentenceTransformer("{repo}", trust_remote_code=True)' in card
    assert not [p for p in static_problems(out, repo_id=repo) if "README.md" in p]


def test_your_own_card_is_released_as_written_and_checked(run_folder, tmp_path, capsys):
    from vipyloqwen_tools.release.readme import tasks_table

    mine = tmp_path / "card.md"
    text = (
        "---\nlicense: mit\nlibrary_name: sentence-transformers\npipeline_tag: sentence-similarity\n"
        f"base_model: {BASE}\nlanguage: [vi]\n---\n\n# Mine\n\n```python\nfrom sentence_transformers import "
        f'SentenceTransformer\nmodel = SentenceTransformer("{REPO_ID}", trust_remote_code=True)\n```\n\n'
        f"<!-- tasks:start -->\n{tasks_table()}<!-- tasks:end -->\n"
    )
    mine.write_text(text, encoding="utf-8")
    out = assemble(run_folder / "final", tmp_path / "release", repo_id=REPO_ID, card=mine)
    assert (out / "README.md").read_text(encoding="utf-8") == text
    assert f"model card: given (your {mine})" in capsys.readouterr().out
    assert static_problems(out, repo_id=REPO_ID) == []
    # checked: a snippet loading another model, a command naming the maintainers' model, no tasks table
    wrong = text.replace(f'SentenceTransformer("{REPO_ID}"', 'SentenceTransformer("other/model"')
    wrong = wrong.replace("<!-- tasks:start -->", "```bash\npython eval/run_mteb.py --model erax-ai/viPyloQwen\n```\n")
    wrong = re.sub(r"\n\| prompt_name.*<!-- tasks:end -->\n", "\n", wrong, flags=re.S)
    (out / "README.md").write_text(wrong, encoding="utf-8")
    problems = [p for p in static_problems(out, repo_id=REPO_ID) if p.startswith("README.md")]
    assert "README.md: a snippet loads 'other/model', not the released 'me/my-embedder'" in problems
    assert (
        "README.md: a code block names erax-ai/viPyloQwen, not the released me/my-embedder: "
        "'python eval/run_mteb.py --model erax-ai/viPyloQwen'"
    ) in problems
    assert (
        "README.md: no <!-- tasks:start --> ... <!-- tasks:end --> table (the task prefixes a user needs): add the "
        "two marker lines and run python -m vipyloqwen_tools.release.readme --readme CARD to fill them"
    ) in problems


def test_card_errors_name_the_option_that_fixes_them(run_folder, tiny_checkpoint, tmp_path):
    final = run_folder / "final"
    with pytest.raises(ReleaseError) as error:
        assemble(final, tmp_path / "a", repo_id=REPO_ID, card=tmp_path / "card.md", repository_card_=True)
    assert str(error.value) == "--card and --repository-card: give one card"
    with pytest.raises(ReleaseError) as error:
        assemble(final, tmp_path / "b", repo_id=REPO_ID, card=tmp_path / "nope.md")
    assert str(error.value) == f"--card {tmp_path / 'nope.md'}: no such file"
    with pytest.raises(ReleaseError) as error:
        assemble(final, tmp_path / "c", repo_id=REPO_ID, train_config=tmp_path / "nope.json")
    assert str(error.value) == f"--train-config {tmp_path / 'nope.json'}: no such file"
    (run_folder / "train_config.json").write_text(json.dumps({**RECORD, "model": "tiny"}), encoding="utf-8")
    with pytest.raises(ReleaseError) as error:
        assemble(final, tmp_path / "d", repo_id=REPO_ID)
    assert str(error.value) == (
        "the card needs the Hub id of the model me/my-embedder was fine-tuned from (its base_model) "
        "(train_config.json says model 'tiny', not a Hub id): pass --base-model ORG/NAME"
    )
    card = assemble(final, tmp_path / "e", repo_id=REPO_ID, base_model=BASE) / "README.md"
    assert f"base_model: {BASE}" in card.read_text(encoding="utf-8")
    # without a training record the card says so and states no training facts
    card = assemble(tiny_checkpoint, tmp_path / "f", repo_id=REPO_ID, base_model=BASE) / "README.md"
    assert "No training record (`train_config.json`) was given with this checkpoint" in card.read_text("utf-8")


def test_base_model_and_training_record_are_found(tmp_path):
    assert hub_id_of("tiny") is None and hub_id_of(None) is None
    assert hub_id_of("erax-ai/viPyloQwen") == "erax-ai/viPyloQwen"
    snapshot = "/root/.cache/huggingface/hub/models--erax-ai--viPyloQwen/snapshots/0123abcd"
    assert hub_id_of(snapshot) == "erax-ai/viPyloQwen"
    (tmp_path / "build" / "init").mkdir(parents=True)
    assert hub_id_of(str(tmp_path / "build" / "init")) is None  # a local folder could hold anything
    for name in ("final", "checkpoint-12", "other"):
        (tmp_path / "run" / name).mkdir(parents=True)
    (tmp_path / "run" / "train_config.json").write_text("{}")
    assert find_train_config(tmp_path / "run" / "final") == tmp_path / "run" / "train_config.json"
    assert find_train_config(tmp_path / "run" / "checkpoint-12") == tmp_path / "run" / "train_config.json"
    assert find_train_config(tmp_path / "run" / "other") is None
