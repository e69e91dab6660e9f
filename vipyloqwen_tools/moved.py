"""Old import paths of modules that moved, kept working for one release (each import warns).

``vipyloqwen_tools.build`` became :mod:`vipyloqwen_tools.checkpoint` (a package called ``build`` is taken for build
output by common tools: ``.gitignore`` templates, packaging, editors); its ``checkpoint_files`` module became
:mod:`vipyloqwen_tools.checkpoint.files`; ``vipyloqwen_tools.index_search`` became
:mod:`vipyloqwen_tools.index.search`. The old dotted names resolve to the new modules themselves (the same module
objects, so ``isinstance`` and monkeypatching behave), through an import hook rather than a folder of copies.

Example::

    >>> import warnings
    >>> with warnings.catch_warnings(record=True):
    ...     from vipyloqwen_tools.build.export import save_checkpoint  # works, warns DeprecationWarning
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# old dotted name -> new dotted name; a submodule of an old package maps by prefix
MOVED = {
    "vipyloqwen_tools.build.checkpoint_files": "vipyloqwen_tools.checkpoint.files",
    "vipyloqwen_tools.build": "vipyloqwen_tools.checkpoint",
    "vipyloqwen_tools.index_search": "vipyloqwen_tools.index.search",
}


def new_name(old: str) -> str | None:
    """The module that ``old`` names now, or ``None`` when ``old`` did not move."""
    for before, after in MOVED.items():
        if old == before or old.startswith(before + "."):
            return after + old[len(before) :]
    return None


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:  # the target module is already executed
        pass


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds an old dotted name of :data:`MOVED` and hands back the new module, with a DeprecationWarning."""

    def find_spec(self, fullname, path=None, target=None):
        target_name = new_name(fullname)
        if target_name is None:
            return None
        warnings.warn(
            f"{fullname} moved to {target_name}; the old path will be removed in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        target_spec = importlib.util.find_spec(target_name)
        if target_spec is None:
            return None
        spec = importlib.util.spec_from_loader(
            fullname, _AliasLoader(target_name), is_package=target_spec.submodule_search_locations is not None
        )
        return spec


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (``vipyloqwen_tools/__init__.py`` calls this)."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
