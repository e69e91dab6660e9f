"""Train viPyloQwen with prefix-routed multi-loss on SentenceTransformerTrainer, or validate a data file.

    python train_st.py --config configs/tiny-cpu.yaml                        # train (CPU, tiny model)
    python train_st.py --config configs/vipyloqwen-2b.yaml --output-dir runs/2b --save-steps 1000
    python train_st.py --config configs/tiny-cpu.yaml --resume               # continue from the last checkpoint
    python train_st.py validate data/sample/train.jsonl                      # per-task counts + every bad line
    python train_st.py validate big.jsonl --num-proc 32 --cache-dir runs/2b/.data-cache   # validate once, train reuses
    python train_st.py plan --config configs/vipyloqwen-2b.yaml --architecture qwen2-vl-2b \\
        --accelerate-config configs/accelerate/fsdp-4gpu.yaml --device-memory-gb 94   # predicted peak memory per GPU
    accelerate launch --config_file configs/accelerate/fsdp-4gpu.yaml train_st.py --config configs/vipyloqwen-2b.yaml

Every setting of :class:`vipyloqwen_tools.train.config.TrainConfig` is a YAML key and a ``--flag`` (dashes for
underscores); flags override the YAML. Output: ``<output_dir>/final`` (Hub-layout checkpoint: loads with
SentenceTransformer / AutoModel and trust_remote_code=True), ``training_curves.png``, ``log_history.json``,
``checkpoint-<step>/`` folders, and ``rejects-train.jsonl`` with --skip-bad-rows.

Exit status: 0 trained and exported; 2 refused before the first step (bad data, memory plan, a --resume with changed
settings, without a complete checkpoint or with --max-steps below its step, an output folder another run holds) or
a row unusable at batch time without --skip-bad-rows; 3 stopped by a fault (diverged, a checkpoint or the export that
could not be written, e.g. a full disk): the last complete checkpoint is kept; 4 stopped on SIGTERM / SIGUSR1 after
saving a complete checkpoint (--resume continues, nothing lost). See docs/faults.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from vipyloqwen_tools.checkpoint.finite import NonFiniteWeightsError  # noqa: E402
from vipyloqwen_tools.checkpoint.user_errors import ModelSourceError, check_model_source, report  # noqa: E402
from vipyloqwen_tools.data import (  # noqa: E402
    IMAGE_PATH_RULE,
    DataError,
    image_folder,
    validate_file,
    write_rejects,
)
from vipyloqwen_tools.plan.planner import MemoryPlanError  # noqa: E402
from vipyloqwen_tools.train.checkpoints import CheckpointSaveError, NoCompleteCheckpointError  # noqa: E402
from vipyloqwen_tools.train.config import TrainConfig  # noqa: E402
from vipyloqwen_tools.train.flag_help import HELP  # noqa: E402
from vipyloqwen_tools.train.guard import NonFiniteTrainingError  # noqa: E402
from vipyloqwen_tools.train.resume_check import ResumeMismatchError  # noqa: E402
from vipyloqwen_tools.train.run import train  # noqa: E402
from vipyloqwen_tools.train.run_lock import OutputDirLockedError  # noqa: E402
from vipyloqwen_tools.train.stop_signal import EXIT_STOPPED, StopRequested  # noqa: E402


def _flag_type(field: dataclasses.Field):
    hints = typing.get_type_hints(TrainConfig)
    hint = hints[field.name]
    text = str(hint)
    if hint is bool:
        return "bool"
    if "dict" in text or "list" in text:
        return json.loads
    for kind in (int, float, str):
        if hint is kind or text.startswith(f"{kind.__name__} |") or text == f"{kind.__name__} | None":
            return kind
    return str


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML config (keys = the flags below, underscores)")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = _flag_type(field)
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        help_text = f"{HELP[field.name]} (default: {default!r})".replace("%", "%%")
        if kind == "bool":
            parser.add_argument(
                flag, dest=field.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(flag, dest=field.name, type=kind, default=None, help=help_text)
    return parser


def build_validate_parser() -> argparse.ArgumentParser:
    """``train_st.py validate``'s flags."""
    parser = argparse.ArgumentParser(prog="train_st.py validate", description="Check every line of JSONL files.")
    parser.add_argument("files", nargs="+", type=Path, help="JSONL files in the training schema (docs/training.md)")
    parser.add_argument(
        "--image-root",
        type=Path,
        default=None,
        help="folder relative image paths are read from (default: each JSONL file's own folder); train with the "
        "same --image-root",
    )
    parser.add_argument("--no-check-images", action="store_true", help="skip opening the images")
    parser.add_argument("--num-proc", type=int, default=None, help="worker processes (default: the machine's cores)")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="also build the per-task Arrow datasets and cache them with the report (validate once: a training "
        "run with --data-cache-dir set to the same folder reuses them)",
    )
    parser.add_argument("--rejects", type=Path, default=None, help="write the bad lines to this JSONL file")
    return parser


def validate_main(argv: list[str]) -> int:
    args = build_validate_parser().parse_args(argv)
    status = 0
    for path in args.files:
        try:
            report = validate_file(
                path,
                check_images=not args.no_check_images,
                num_proc=args.num_proc,
                cache_dir=args.cache_dir,
                image_root=args.image_root,
            )
        except (DataError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(report.summary())
        print(f"images: relative paths read from {image_folder(path, args.image_root)} ({IMAGE_PATH_RULE})")
        print(report.check_invariant() + (" (from the validate-once cache)" if report.cached else ""))
        if args.rejects is not None and report.bad:
            print(f"bad lines written to {write_rejects(report, args.rejects)}")
        status = status or (1 if report.bad else 0)
    return status


def plan_main(argv: list[str]) -> int:
    """``train_st.py plan``: the memory plan of a config (see vipyloqwen_tools/plan/planner.py); exit 1 if it does not
    fit or the data file has bad lines."""
    from vipyloqwen_tools.train.plan_command import plan_command

    return plan_command(argv, build_parser())


def check_inputs(config: TrainConfig, config_path: Path | None) -> None:
    """The model and the data files, checked before any process group, dataset or model is set up: a wrong path
    fails in one line naming the setting and the fix (every process checks; one prints)."""
    where = f" or in {config_path}" if config_path else ""
    if config.model != "tiny":
        check_model_source(config.model, f"model (--model{where})")
    for name in ("train_file", "eval_file"):
        path = getattr(config, name)
        if path and not Path(path).is_file():
            flag = "--" + name.replace("_", "-")
            raise FileNotFoundError(f"{name} {path}: no such file; set {flag}{where}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "validate":
        return validate_main(argv[1:])
    if argv and argv[0] == "plan":
        return plan_main(argv[1:])
    args = vars(build_parser().parse_args(argv))
    config_path = args.pop("config")
    try:
        config = TrainConfig.from_yaml(config_path, **args)
    except ValueError as error:  # a setting out of range or in conflict: one line naming it, no traceback
        return report(error)
    try:
        check_inputs(config, config_path)
        result = train(config)
    except (
        DataError,
        MemoryPlanError,
        ModelSourceError,
        FileNotFoundError,
        NoCompleteCheckpointError,
        ResumeMismatchError,
        OutputDirLockedError,
    ) as error:
        return report(error)  # refused before the first step; one line, from the first process only under torchrun
    except (NonFiniteTrainingError, NonFiniteWeightsError, CheckpointSaveError) as error:
        return report(error, 3)  # stopped by a fault during training; the last complete checkpoint is kept
    except StopRequested as error:
        return report(error, EXIT_STOPPED)  # SIGTERM / SIGUSR1: a complete checkpoint was saved
    if "final_dir" in result:
        print(f"final checkpoint: {result['final_dir']}")
        print(f"curves: {result['plot']}")
    if "metrics" in result:
        print("eval: " + ", ".join(f"{k}={v:.3f}" for k, v in result["metrics"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
