"""Load check of a release folder, run by :func:`vipyloqwen_tools.release.assemble.verify` in a fresh interpreter.

Standalone on purpose: it imports nothing from this repository, so the only viPyloQwen code it can run is
the code shipped in the folder (loaded by transformers into ``HF_MODULES_CACHE`` as ``transformers_modules``).

    HF_HUB_OFFLINE=1 HF_MODULES_CACHE=$(mktemp -d) python -I vipyloqwen_tools/release/verify_child.py \\
        --folder build/release --tasks text_pair,instr,ocr,vqa_multi,vqa_single --report report.json

Checks: SentenceTransformer and AutoModel both load with trust_remote_code=True from the folder's own code;
the shipped task registry and the ST prompts match the expected tasks; one item per task and one per modality
(text, image, text+image, multi-image) embeds to a finite, unit-norm vector of ``embed_dim`` floats; the two
loading paths agree within ``--tolerance``; optionally (``--reference``) the checkpoint the folder was built
from gives the same AutoModel embeddings. Writes a JSON report; exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

MODULE_NAMES = (
    "tasks_vipyloqwen",
    "configuration_vipyloqwen",
    "modeling_vipyloqwen",
    "processing_vipyloqwen",
    "images_vipyloqwen",
    "items_vipyloqwen",
    "prefetch_vipyloqwen",
)


def make_images(seed: int = 0) -> list[Any]:
    """Small deterministic RGB test images of different sizes and aspect ratios."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    sizes = [(64, 48), (40, 90), (120, 56), (33, 33)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def build_items(tasks: dict[str, Any]) -> list[dict[str, Any]]:
    """One item per task (modality from the registry's ``query`` field) and one per modality (no task)."""
    a, b, c, d = make_images()
    items = []
    for name, spec in tasks.items():
        if "image" in spec.query:
            images: Any = [b, c] if "multi" in name else a
            text = f"Trong ảnh có gì? ({name})"
        else:
            images, text = None, f"Hà Nội là thủ đô của Việt Nam. ({name})"
        # Texts differ per task: an untrained checkpoint gives every prefix token the same embedding row.
        items.append({"name": f"task:{name}", "task": name, "text": text, "images": images})
    items += [
        {"name": "modality:text", "task": None, "text": "Phở bò Nam Định", "images": None},
        {"name": "modality:image", "task": None, "text": None, "images": d},
        {"name": "modality:text+image", "task": None, "text": "Biển số xe này là gì?", "images": c},
        {"name": "modality:multi-image", "task": None, "text": "So sánh ba ảnh.", "images": [a, b, d]},
    ]
    return items


def st_input(item: dict[str, Any]) -> Any:
    """The Sentence-Transformers input for an item: str, PIL image, or {"image": ..., "text": ...}."""
    if item["images"] is None:
        return item["text"]
    if item["text"] is None and not isinstance(item["images"], list):
        return item["images"]
    value = {"image": item["images"]}
    if item["text"] is not None:
        value["text"] = item["text"]
    return value


def run(folder: Path, expected_tasks: list[str], tolerance: float, reference: Path | None) -> dict[str, Any]:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel

    report: dict[str, Any] = {"problems": [], "items": [], "timings_s": {}}
    problems = report["problems"]
    start = time.perf_counter()
    st = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
    report["timings_s"]["load_sentence_transformers"] = round(time.perf_counter() - start, 2)
    start = time.perf_counter()
    model = AutoModel.from_pretrained(str(folder), trust_remote_code=True, dtype=torch.float32).eval()
    report["timings_s"]["load_automodel"] = round(time.perf_counter() - start, 2)

    # The code that ran must be the folder's, from the (empty at start) module cache, not an installed copy.
    modules_cache = Path(os.environ["HF_MODULES_CACHE"]).resolve()
    code_module = sys.modules[type(model).__module__]
    if not type(model).__module__.startswith("transformers_modules."):
        problems.append(f"AutoModel class {type(model).__module__} is not the folder's remote code")
    elif not Path(code_module.__file__).resolve().is_relative_to(modules_cache):
        problems.append(f"remote code ran from {code_module.__file__}, outside HF_MODULES_CACHE {modules_cache}")
    for name in MODULE_NAMES:
        if name in sys.modules:
            problems.append(f"top-level module {name} was imported from {sys.modules[name].__file__}")
    st_model = st[0].model
    if type(st_model).__module__ != type(model).__module__:
        problems.append(f"SentenceTransformer built {type(st_model).__module__}, AutoModel {type(model).__module__}")

    config_module = sys.modules[type(model.config).__module__]
    tasks = config_module.TASKS
    if list(tasks) != expected_tasks:
        problems.append(f"shipped task registry {list(tasks)} != expected {expected_tasks}")
    if st.prompts != config_module.st_prompts():
        problems.append(f"ST prompts {st.prompts} != registry prompts {config_module.st_prompts()}")
    embed_dim = model.config.embed_dim
    report["embed_dim"] = embed_dim

    items = build_items(tasks)
    st_rows, am_rows = [], []
    start = time.perf_counter()
    for item in items:
        st_emb = st.encode([st_input(item)], prompt_name=item["task"], convert_to_tensor=True).float().cpu()
        am_emb = model.encode(text=[item["text"]], images=[item["images"]], task=item["task"])
        diff = (st_emb - am_emb).abs().max().item()
        norm = am_emb.norm(dim=-1).item()
        entry = {"name": item["name"], "st_vs_automodel_max_abs_diff": diff, "norm": norm}
        report["items"].append(entry)
        if tuple(am_emb.shape) != (1, embed_dim) or tuple(st_emb.shape) != (1, embed_dim):
            shapes = f"{tuple(st_emb.shape)} / {tuple(am_emb.shape)}"
            problems.append(f"{item['name']}: shapes {shapes}, want (1, {embed_dim})")
        if not (torch.isfinite(st_emb).all() and torch.isfinite(am_emb).all()):
            problems.append(f"{item['name']}: non-finite embedding")
        if abs(norm - 1.0) > 1e-4:
            problems.append(f"{item['name']}: embedding norm {norm:.6f}, want 1")
        if not diff <= tolerance:
            problems.append(f"{item['name']}: SentenceTransformer vs AutoModel differ by {diff:.3g} > {tolerance:g}")
        st_rows.append(st_emb)
        am_rows.append(am_emb)
    report["timings_s"]["encode_items"] = round(time.perf_counter() - start, 2)
    embeddings = torch.cat(am_rows)
    distinct = torch.cdist(embeddings, embeddings) + torch.eye(len(items)) * 10
    if distinct.min().item() < 1e-6:
        i, j = divmod(int(distinct.argmin()), len(items))
        problems.append(f"different test items {items[i]['name']} and {items[j]['name']} gave the same embedding")

    if reference is not None:
        start = time.perf_counter()
        ref = AutoModel.from_pretrained(str(reference), trust_remote_code=True, dtype=torch.float32).eval()
        ref_rows = [ref.encode(text=[i["text"]], images=[i["images"]], task=i["task"]) for i in items]
        ref_diff = (torch.cat(ref_rows) - embeddings).abs().max().item()
        report["reference_max_abs_diff"] = ref_diff
        report["timings_s"]["reference"] = round(time.perf_counter() - start, 2)
        if not ref_diff <= tolerance:
            problems.append(f"release embeddings differ from the checkpoint's ({reference}) by {ref_diff:.3g}")
    report["max_abs_diff"] = max(e["st_vs_automodel_max_abs_diff"] for e in report["items"])
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", required=True, type=Path, help="release folder to load")
    parser.add_argument("--tasks", required=True, help="comma-separated expected registry keys, in order")
    parser.add_argument("--report", required=True, type=Path, help="where to write the JSON report")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max abs difference allowed (default 1e-5)")
    parser.add_argument("--reference", type=Path, default=None, help="checkpoint to compare AutoModel embeddings to")
    args = parser.parse_args(argv)
    try:
        report = run(args.folder, args.tasks.split(","), args.tolerance, args.reference)
    except Exception as exc:  # the report carries the failure; the parent refuses the folder
        failure = f"loading or encoding failed: {type(exc).__name__}: {exc}"
        report = {"problems": [failure], "traceback": traceback.format_exc()}
    args.report.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0 if not report["problems"] else 1


if __name__ == "__main__":
    sys.exit(main())
