"""The task registry is a standard-library module: the item rules load and run with transformers and torch blocked,
and configuration_vipyloqwen re-exports the very same objects."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO, child_env

import configuration_vipyloqwen
import tasks_vipyloqwen

# A child process whose imports of transformers / torch raise (a sys.meta_path finder asked first), then reads items.
WITHOUT_MODEL_LIBRARIES = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("transformers", "torch"):
            raise ImportError(f"blocked import of {name}")
        return None

sys.meta_path.insert(0, Blocked())
from items_vipyloqwen import build_messages, split_item
from tasks_vipyloqwen import TASKS

messages = build_messages(text=["<ocr>  Biển số?", ""], task=None)
parsed = [split_item(m, f"item {i + 1}") for i, m in enumerate(messages)]
assert [(p.task, p.text) for p in parsed] == [("ocr", "Biển số?"), (None, "")], parsed
try:
    split_item([{"role": "user", "content": [{"type": "image", "image": "x.png"}] * 6}], "item 7")
except ValueError as error:
    assert str(error) == "item 7: 6 images, at most 5 per item", error
else:
    raise AssertionError("six images were accepted")
try:
    import transformers  # noqa: F401
except ImportError:
    pass
else:
    raise AssertionError("the blocker did not block")
loaded = sorted(name for name in sys.modules if name.split(".")[0] in ("transformers", "torch"))
print("OK", len(TASKS), loaded)
"""


def test_items_read_without_transformers_or_torch():
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_MODEL_LIBRARIES],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=child_env(),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "OK 5 []"


def test_configuration_re_exports_the_registry_objects():
    for name in tasks_vipyloqwen.__all__:
        assert getattr(configuration_vipyloqwen, name) is getattr(tasks_vipyloqwen, name), name
