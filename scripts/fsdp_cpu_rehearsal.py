"""Rehearse the FSDP2 path of train_st.py on CPU processes (gloo), which accelerate itself will not run.

accelerate 1.15 switches ``AcceleratorState`` to ``DistributedType.FSDP`` only on accelerators; on CPU it keeps
``MULTI_CPU`` and ``train_st.py`` refuses the FSDP config (see docs/training-internals.md, "FSDP2 and DeepSpeed
on CPU"). torch's FSDP2 (``fully_shard``) does run on CPU over gloo, so this wrapper forces the state to FSDP (every
time it is re-created) and then runs ``train_st.py`` as ``__main__`` with this script's arguments: sharding,
training, the FSDP checkpoint files, ``--resume`` and the export of the gathered weights all go through the real
code. A rehearsal tool, not a way to train::

    accelerate launch --config_file configs/accelerate/fsdp-4gpu.yaml --num_processes 2 --mixed_precision no \\
        scripts/fsdp_cpu_rehearsal.py --config configs/tiny-cpu.yaml --output-dir runs/fsdp-cpu --max-steps 4 \\
        --save-steps 2
"""

from __future__ import annotations

import runpy
from pathlib import Path

import accelerate.state as accelerate_state
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

ROOT = Path(__file__).resolve().parent.parent

_init = accelerate_state.AcceleratorState.__init__
_plugin: dict[str, FullyShardedDataParallelPlugin] = {}


def _forced_init(self, *args, **kwargs) -> None:
    _init(self, *args, **kwargs)
    # Each AcceleratorState() re-syncs from PartialState (MULTI_CPU): force FSDP every time, with one plugin.
    if self.distributed_type == DistributedType.MULTI_CPU:
        plugin = _plugin.setdefault("fsdp", getattr(self, "fsdp_plugin", None) or FullyShardedDataParallelPlugin())
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = plugin


accelerate_state.AcceleratorState.__init__ = _forced_init

if __name__ == "__main__":
    # train_st.py is the repository's entry point, not an installed module: run it as `python train_st.py ...` runs.
    runpy.run_path(str(ROOT / "train_st.py"), run_name="__main__")
