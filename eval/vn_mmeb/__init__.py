"""VN-MMEB: Vietnamese multimodal embedding tasks for mteb 2.x (t2i, i2t, it2t; nDCG@10, nDCG@5 for pages).

One adapter per dataset reads the dataset's published files at a pinned revision and checks them
(:mod:`eval.vn_mmeb.layout`); one builder per task kind turns them into mteb splits (:mod:`eval.vn_mmeb.builders`);
the it2t tasks rank hard candidate lists (:mod:`eval.vn_mmeb.candidates`) and have text-only baselines. The
benchmark "VN-MMEB (vie, v1)" adds mteb's XM3600 and WIT caption <-> image tasks (vi subsets).
Importing the package registers the tasks with mteb (``mteb.get_task("KTVICT2IRetrieval")`` works).

Example::

    import mteb
    from eval.vn_mmeb import get_benchmark, localize
    bench = get_benchmark("VN-MMEB (vie, v1)")
    localize(bench.tasks, "tests/fixtures/vn_mmeb")   # the offline stand-ins
"""

from .base import VNMMEBTask
from .benchmark import (
    BENCHMARK_NAME,
    MTEB_TASKS,
    TASK_CLASSES,
    TEXT_ONLY_BASELINES,
    dataset_table,
    get_benchmark,
    get_tasks,
    localize,
    query_prompt_tasks,
    register,
)
from .layout import LayoutError

register()

__all__ = [
    "BENCHMARK_NAME",
    "MTEB_TASKS",
    "TASK_CLASSES",
    "TEXT_ONLY_BASELINES",
    "LayoutError",
    "VNMMEBTask",
    "dataset_table",
    "get_benchmark",
    "get_tasks",
    "localize",
    "query_prompt_tasks",
    "register",
]
