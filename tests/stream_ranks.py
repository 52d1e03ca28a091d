"""Test helper: which blocks each rank of ``train_clm.py --streaming`` trains on, under torchrun on CPU.

    torchrun --nproc_per_node=2 tests/stream_ranks.py OUT.json EPOCHS train_clm-arguments…

Parses train_clm's arguments, sets its data up exactly as ``train_clm.main`` does (:func:`train_clm.training_data`,
then the Trainer of :func:`utils.training.trainer.make_trainer`), and walks the Trainer's own training dataloader for EPOCHS
passes (``set_epoch`` as the Trainer calls it). Each rank writes ``OUT.json.rank<N>``: per pass, the blocks it got
(input_ids without padding).
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(out: str, epochs: int, argv: list[str]) -> None:
    import train_clm
    from utils.common.datafiles import expand_paths
    from utils.training.setup import prepare_model
    from utils.training.trainer import make_trainer

    model_args, lora_args, data_args, legacy, training = train_clm.parse(argv)
    files = expand_paths(data_args.data_path, train_clm.DOC_SUFFIXES)
    prepared = prepare_model(model_args, lora_args, training)
    train_ds, eval_ds, _ = train_clm.training_data(files, prepared.tokenizer, data_args, legacy, training)
    trainer = make_trainer(prepared, training, train_ds, eval_ds)
    loader = trainer.get_train_dataloader()
    passes = []
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        seen = []
        for batch in loader:
            for ids, mask in zip(batch["input_ids"].tolist(), batch["attention_mask"].tolist()):
                seen.append([t for t, m in zip(ids, mask) if m])
        passes.append(seen)
    Path(f"{out}.rank{training.process_index}").write_text(json.dumps(passes), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3:])
