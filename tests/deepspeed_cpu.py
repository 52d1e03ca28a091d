"""Test helper: train_clm.py / finetune.py under torchrun on CPU with DeepSpeed ZeRO (``DS_ACCELERATOR=cpu``, gloo).

On a GPU, accelerate starts DeepSpeed's communication when it sets up the process group (``PartialState``, for a
process that is not ``cpu``). On a machine without CUDA our LawTrainingArguments sets ``use_cpu`` (so that torchrun's
processes form one group) and accelerate skips that step; ZeRO-3, which partitions the model while it loads, before
the Trainer starts DeepSpeed, then sees a world of one process ("train_batch_size is not equal to micro_batch_per_gpu
* gradient_acc_step * world_size 4 != 2 * 1 * 1"). This helper starts it as accelerate does on a GPU, then runs the
scripts' entry points unchanged: everything after that is the code of a GPU run (ZeRO-3 loading, DeepSpeed's engine
and optimizer partitioning, the Trainer's DeepSpeed steps and saving).

    DS_ACCELERATOR=cpu torchrun --nproc_per_node=2 tests/deepspeed_cpu.py train_clm '["--base_model", …]' [SCRIPT ARGV_JSON …]

Runs go one after another in the same process group; each as its script's entry point (an error is one line on
stderr and exit status 1). Rank 0 prints the exit statuses as one JSON line on stdout.
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    import deepspeed

    import finetune
    import train_clm
    from utils.common.entry import run_entry

    scripts = {"train_clm": train_clm, "finetune": finetune}
    if not argv or len(argv) % 2:
        raise SystemExit("usage: deepspeed_cpu.py SCRIPT ARGV_JSON [SCRIPT ARGV_JSON …]")
    deepspeed.init_distributed(dist_backend="gloo")
    statuses = [run_entry(name, lambda s=scripts[name], a=args: s.main(*s.parse(json.loads(a))))
                for name, args in zip(argv[::2], argv[1::2])]
    if os.environ.get("RANK", "0") == "0":
        print(json.dumps(statuses), flush=True)
    return 0


if __name__ == "__main__":
    from utils.common.entry import exit_process

    exit_process(main(sys.argv[1:]))  # a torchrun rank: no interpreter teardown (see exit_process)
