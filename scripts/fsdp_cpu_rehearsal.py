"""Rehearse the FSDP2 path of train_st.py on CPU processes (gloo), which accelerate itself will not run.

accelerate 1.15 switches ``AcceleratorState`` to ``DistributedType.FSDP`` only on accelerators; on CPU it keeps
``MULTI_CPU`` and ``train_st.py`` refuses the FSDP config (see docs/training-internals.md, "FSDP2 and DeepSpeed
on CPU"). torch's FSDP2 (``fully_shard``) does run on CPU over gloo, so this wrapper forces the state to FSDP (every
time it is re-created) and then runs ``train_st.main``: sharding, training, the FSDP checkpoint files, ``--resume``
and the export of the gathered weights all go through the real code. A rehearsal tool, not a way to train::

    accelerate launch --config_file configs/accelerate/fsdp-4gpu.yaml --num_processes 2 --mixed_precision no \\
        scripts/fsdp_cpu_rehearsal.py --config configs/tiny-cpu.yaml --output-dir runs/fsdp-cpu --max-steps 4 \\
        --save-steps 2
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import accelerate.state as accelerate_state  # noqa: E402
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin  # noqa: E402

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

import train_st  # noqa: E402

if __name__ == "__main__":
    sys.exit(train_st.main(sys.argv[1:]))
