"""VN-MMEB: Vietnamese multimodal embedding tasks for mteb 2.x (t2i, i2t, it2t; nDCG@10, nDCG@5 for pages).

One adapter per dataset reads the dataset's published files and checks them (:mod:`eval.vn_mmeb.layout`); the
benchmark "VN-MMEB (vie, v1)" adds mteb's XM3600T2IRetrieval and WITT2IRetrieval (vi subsets).
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
    "LayoutError",
    "VNMMEBTask",
    "dataset_table",
    "get_benchmark",
    "get_tasks",
    "localize",
    "query_prompt_tasks",
    "register",
]
