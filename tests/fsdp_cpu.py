"""Test helper: train_clm.py / finetune.py under torchrun on CPU with FSDP really sharding the model.

accelerate 1.15 keeps a ``FullyShardedDataParallelPlugin`` only for accelerator process groups (the FSDP branch of
``AcceleratorState.__init__`` lists MULTI_GPU, MULTI_NPU, MULTI_XPU, … but not MULTI_CPU): in CPU processes it
drops the plugin without a word and the Trainer wraps the model in DDP (our train_and_save refuses that run).
torch's FSDP2 itself works on CPU over gloo, so this helper opens that one gate — a CPU process group given an FSDP
plugin is FSDP — and then runs the scripts' ``main()`` unchanged. Everything after the gate is the code of a GPU run:
accelerate's FSDP2 preparation (``fully_shard`` per decoder layer, DTensor parameters), the Trainer's FSDP steps and
checkpoints, the full-state-dict gather on save and our AdapterTrainer's saving.

    torchrun --nproc_per_node=2 tests/fsdp_cpu.py train_clm '["--base_model", …]' [finetune '[…]' …]

Several runs go one after another in the same process group (one torchrun start for all: it is most of the time),
each as its script's entry point (an error is one line on stderr and exit status 1); ``SCRIPT:closed`` runs one with
the gate shut, as a plain CPU torchrun is. Rank 0 prints the exit statuses as one JSON line on stdout.
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


GATE = {"open": False}


def install_cpu_fsdp_gate() -> None:
    from accelerate import state
    from accelerate.utils import DistributedType

    init = state.AcceleratorState.__init__

    def patched(self, *args, fsdp_plugin=None, **kwargs):
        init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if GATE["open"] and fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.fsdp_plugin = fsdp_plugin
            self.distributed_type = DistributedType.FSDP
            # every later AcceleratorState() copies PartialState's fields over its own: keep them in step
            state.PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    state.AcceleratorState.__init__ = patched


def main(argv: list[str]) -> int:
    import finetune
    import train_clm
    from utils.common.entry import run_entry

    scripts = {"train_clm": train_clm, "finetune": finetune}
    if not argv or len(argv) % 2:
        raise SystemExit("usage: fsdp_cpu.py SCRIPT[:closed] ARGV_JSON [SCRIPT ARGV_JSON …]")
    install_cpu_fsdp_gate()
    statuses = []
    for spec, args in zip(argv[::2], argv[1::2]):
        name, _, closed = spec.partition(":")
        GATE["open"] = closed != "closed"
        script = scripts[name]
        statuses.append(run_entry(name, lambda s=script, a=args: s.main(*s.parse(json.loads(a)))))
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(statuses), flush=True)
    return 0


if __name__ == "__main__":
    from utils.common.entry import exit_process

    exit_process(main(sys.argv[1:]))  # a torchrun rank: no interpreter teardown (see exit_process)
