"""Write one of our prompt templates into a model's tokenizer as its Jinja chat_template.

    python tools/write_chat_template.py --model_dir models/base_models/gemma-3-270m --template law_template \
        --output_dir models/gemma-3-270m-law        # a copy (weights linked, not copied); or in place without it
    vllm serve models/gemma-3-270m-law               # or: transformers serve models/gemma-3-270m-law

finetune.py and merge_lora.py already do this for every model they save; this tool is for a model that was
trained elsewhere with one of our templates, or a base model you want to serve in our format (the benchmark
serves the demo base this way to `transformers serve`). ``apply_chat_template(messages,
add_generation_prompt=True)`` on the result renders the BOS token and then exactly what utils/model/prompter.py
renders (tests/test_chat_template.py). A model directory's run_info.json is updated to name the template.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from utils.common.entry import run_entry  # noqa: E402
from utils.model.chat_template import CHAT, write_chat_template  # noqa: E402
from utils.model.loader import load_tokenizer, read_run_info, write_run_info  # noqa: E402
from utils.model.prompter import TemplateError  # noqa: E402

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "chat_template.json", "run_info.json")


def link_copy(source: Path, target: Path) -> None:
    """``target`` as a copy of ``source`` in which large files are symlinks and tokenizer files are real copies."""
    if target.exists():
        raise FileExistsError(f"--output_dir {target} exists: choose a new directory")
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.is_file() and item.name in TOKENIZER_FILES:
            shutil.copy2(item, target / item.name)
        else:
            os.symlink(item.resolve(), target / item.name)


def main(argv: list[str] | None = None) -> int:
    """The command line: exit status 0, or 1 with one line on stderr (utils/common/entry.py)."""
    return run_entry("write_chat_template", lambda: _run(argv))


def _run(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True, help="model (or tokenizer) directory")
    parser.add_argument("--template", default="law_template", help="law_template, alpaca, law_rag or a .json path")
    parser.add_argument("--system_prompt", default=None, help="the system text the model was trained with, if not "
                                                               "the template's")
    parser.add_argument("--output_dir", default=None, help="write a linked copy here instead of changing --model_dir")
    args = parser.parse_args(argv)
    if args.template == CHAT:
        raise TemplateError("--template chat is the tokenizer's own template: there is nothing to write")
    source = Path(args.model_dir)
    tokenizer = load_tokenizer(source, padding_side="right")
    target = Path(args.output_dir) if args.output_dir else source
    if args.output_dir:
        link_copy(source, target)
    write_chat_template(tokenizer, args.template, args.system_prompt)
    tokenizer.save_pretrained(str(target))
    info = read_run_info(target)
    if info or args.output_dir:
        write_run_info(target, {**info, "prompt_template": args.template, "system_prompt": args.system_prompt})
    print(f"[write_chat_template] {target}: chat_template = {args.template} (Jinja)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
