"""Run a benchmark (default "VN-MMEB (vie, v1)") for peer models through mteb's own model loaders, and ours
through eval/run_mteb.py, into ONE results folder, then print ONE comparison table (eval/compare.py).

Peers are mteb model names (``mteb.get_model(name)`` builds them with mteb's wrapper for that model). The dry run
lists, for each peer: whether mteb's registry knows it (its ModelMeta: revision, loader, modalities), the mteb
extras it needs and which of their packages are missing here, whether its weights are in the local Hugging Face
cache, and so whether ``mteb.get_model`` can load it now.

Examples::

    python eval/run_peers.py --dry-run
    python eval/run_peers.py --ours erax-ai/viPyloQwen --output runs/vn_mmeb --batch-size 16
    python eval/run_peers.py --peers Alibaba-NLP/gme-Qwen2-VL-2B-Instruct --data-root tests/fixtures/vn_mmeb \\
        --output runs/vn_mmeb_fixtures
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: Peers: multimodal embedders that mteb 2.26 ships loaders for (checked against mteb.get_model_metas()).
#: GME, Qwen3-VL-Embedding, jina-embeddings-v4 and VLM2Vec (v1 and v2) all exist under these names.
DEFAULT_PEERS: tuple[str, ...] = (
    "Alibaba-NLP/gme-Qwen2-VL-2B-Instruct",
    "Alibaba-NLP/gme-Qwen2-VL-7B-Instruct",
    "Qwen/Qwen3-VL-Embedding-2B",
    "Qwen/Qwen3-VL-Embedding-8B",
    "jinaai/jina-embeddings-v4",
    "TIGER-Lab/VLM2Vec-Full",
    "VLM2Vec/VLM2Vec-V2.0",
    "jinaai/jina-clip-v2",
    "nomic-ai/nomic-embed-multimodal-3b",
)


@dataclass
class PeerStatus:
    """What the dry run found for one peer."""

    name: str
    known: bool
    revision: str | None = None
    loader: str | None = None
    modalities: list[str] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    weights_cached: bool = False
    loadable: bool = False
    note: str = ""


def _weights_cached(name: str, revision: str | None) -> bool:
    """Whether a snapshot of the model (of ``revision`` when it is a commit) is in the Hub cache."""
    from huggingface_hub import constants

    snapshots = Path(constants.HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return False
    if revision and len(revision) == 40:
        return (snapshots / revision).is_dir()
    return any(snapshots.iterdir())


def _requirement_text(req: str) -> str:
    """A requirement string without its environment marker (keeps an "(installed: x)" note)."""
    spec, _, rest = req.partition(";")
    note = rest[rest.index("(installed") :] if "(installed" in rest else ""
    return f"{spec.strip()} {note}".strip()


def check_peer(name: str) -> PeerStatus:
    """Whether mteb can load ``name`` here: registry entry, dependencies, weights."""
    import mteb
    from mteb.models.model_meta import ModelMeta

    known = {m.name: m for m in mteb.get_model_metas()}
    if name not in known:
        from difflib import get_close_matches

        close = get_close_matches(name, list(known), n=3, cutoff=0.6)
        note = "not in mteb's model registry" + (f" (close: {', '.join(close)})" if close else "")
        return PeerStatus(name=name, known=False, note=note)
    meta = known[name]
    loader = getattr(meta.loader, "__name__", type(meta.loader).__name__) if meta.loader else None
    status = PeerStatus(name=name, known=True, revision=meta.revision, loader=loader, modalities=list(meta.modalities))
    try:  # mteb's own requirement check (ModelMeta._check_requirements uses exactly these two steps)
        status.extras = meta._resolve_extras_groups()
        missing = ModelMeta._missing_dependencies(status.extras) if status.extras else []
        # 'pkg<1; extra == "x" (installed: 2)' -> 'pkg<1 (installed: 2)', once each
        status.missing = list(dict.fromkeys(_requirement_text(m) for m in missing))
    except Exception as err:  # noqa: BLE001 - report, do not fail the listing
        status.note = f"could not check dependencies: {type(err).__name__}: {err}"
    status.weights_cached = _weights_cached(name, meta.revision)
    status.loadable = loader is not None and not status.missing
    if loader is None:
        status.note = "mteb has metadata but no loader (results only)"
    elif status.missing:
        status.note = f"install: pip install 'mteb[{','.join(status.extras)}]'"
    if not status.weights_cached:
        status.note = (status.note + "; " if status.note else "") + "weights not cached (needs Hub access)"
    return status


def dry_run_table(statuses: Sequence[PeerStatus]) -> str:
    """The dry run as a markdown table."""
    lines = [
        "| peer | in mteb registry | revision | loader | extras | missing packages | weights cached | can load now "
        "| note |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in statuses:
        lines.append(
            f"| `{s.name}` | {'yes' if s.known else 'no'} | {(s.revision or '-')[:12]} | {s.loader or '-'} | "
            f"{', '.join(s.extras) or '-'} | {', '.join(s.missing) or '-'} | {'yes' if s.weights_cached else 'no'} | "
            f"{'yes' if s.loadable and s.weights_cached else 'no'} | {s.note} |"
        )
    return "\n".join(lines)


def benchmark_tasks(benchmark: str, data_root: str | None) -> list:
    """Fresh task instances of the benchmark (VN-MMEB or any mteb benchmark), on local copies when given."""
    import mteb

    from eval import vn_mmeb

    tasks = list(
        vn_mmeb.get_benchmark(benchmark).tasks
        if benchmark == vn_mmeb.BENCHMARK_NAME
        else mteb.get_benchmark(benchmark).tasks
    )
    if data_root:
        vn_mmeb.localize(tasks, data_root)
    return tasks


def run_peer(name: str, benchmark: str, output: Path, batch_size: int, data_root: str | None, overwrite: bool) -> str:
    """Evaluate one peer with mteb's loader into ``output``; returns a one-line outcome."""
    import mteb
    from mteb.cache import ResultCache

    model = mteb.get_model(name)
    result = mteb.evaluate(
        model,
        benchmark_tasks(benchmark, data_root),
        encode_kwargs={"batch_size": batch_size},
        cache=ResultCache(cache_path=str(output)),
        overwrite_strategy="always" if overwrite else "only-missing",
        raise_error=False,
        co2_tracker=False,
    )
    failed = [str(e.task_name) for e in result.exceptions] if result.exceptions else []
    return f"{name}: {len(result.task_results)} task(s) done" + (f", failed: {', '.join(failed)}" if failed else "")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    from eval.vn_mmeb import BENCHMARK_NAME

    parser = argparse.ArgumentParser(
        prog="run_peers.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--benchmark", default=BENCHMARK_NAME)
    parser.add_argument("--peers", nargs="*", default=list(DEFAULT_PEERS), help="mteb model names (none: only --ours)")
    parser.add_argument("--ours", help="our checkpoint (folder or Hub id), run through eval/run_mteb.py")
    parser.add_argument("--name", help="our results' name, org/name (run_mteb.py --name; default: its default)")
    parser.add_argument("--output", help="the one results folder (results/ + compare.md; default: a new temp folder)")
    parser.add_argument("--data-root", help="local dataset copies in their published layouts (see run_mteb.py)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="only list the peers and whether mteb can load them")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 ok, 1 a peer could not be run, 2 bad arguments."""
    args = build_parser().parse_args(argv)
    statuses = [check_peer(name) for name in args.peers]
    print(dry_run_table(statuses))
    output = Path(args.output) if args.output else Path(tempfile.mkdtemp(prefix="vipyloqwen-peers-"))
    print(f"results folder: {output}")
    if args.dry_run:
        output.mkdir(parents=True, exist_ok=True)
        (output / "peers_dry_run.json").write_text(
            json.dumps([asdict(s) for s in statuses], indent=2) + "\n", encoding="utf-8"
        )
        return 0
    rc = 0
    if args.ours:
        from eval import run_mteb

        argv_ours = [
            "--model",
            args.ours,
            "--benchmark",
            args.benchmark,
            "--output",
            str(output),
            "--batch-size",
            str(args.batch_size),
            "--no-progress",
        ]
        argv_ours += ["--data-root", args.data_root] if args.data_root else []
        argv_ours += ["--name", args.name] if args.name else []
        argv_ours += ["--overwrite"] if args.overwrite else []
        rc = max(rc, min(run_mteb.main(argv_ours), 1))
    for status in statuses:
        if not status.known:
            print(f"skip {status.name}: {status.note}")
            rc = 1
            continue
        try:
            print(run_peer(status.name, args.benchmark, output, args.batch_size, args.data_root, args.overwrite))
        except Exception as err:  # noqa: BLE001 - one peer failing must not stop the others
            print(f"{status.name}: FAILED to load or run: {type(err).__name__}: {err}")
            rc = 1
    from eval import compare

    try:
        text = compare.compare([output], benchmark=args.benchmark)
    except (FileNotFoundError, ValueError) as err:
        print(f"no table: {err}", file=sys.stderr)
        return 1
    (output / "compare.md").write_text(text + "\n", encoding="utf-8")
    print(text)
    return rc


if __name__ == "__main__":
    sys.exit(main())
