"""Export a merged model directory to one GGUF file for llama.cpp, Ollama and LM Studio, with llama.cpp's converter.

    python tools/export_gguf.py --model_dir models/lawgpt-demo                      # → models/lawgpt-demo.gguf (q8_0)
    python tools/export_gguf.py --model_dir models/lawgpt-legal --outtype f16 --output models/lawgpt-legal-f16.gguf
    python tools/export_gguf.py --model_dir models/lawgpt-demo --verify              # + read back, compare logits
    llama-quantize models/lawgpt-legal-f16.gguf models/lawgpt-legal-q4_k_m.gguf Q4_K_M   # k-quants: llama.cpp's tool

The converter (``convert_hf_to_gguf.py`` from the pinned llama-cpp-python sdist on PyPI, fetched once into
.cache/llama_cpp/, never built) does the work; utils/export/gguf.py only stages the tokenizer files it reads.
--outtype f32, f16, bf16 or q8_0 (the types it writes without compiled tools). The file carries the tokenizer
(grown vocabulary included), BOS/EOS and the tokenizer's chat_template (the template the model was trained with,
written by finetune.py/merge_lora.py); every token, the special ids and the template are checked in the written
file, and --verify also reads it back with transformers (token ids and logits against the model directory).
Provenance goes to ``<output>.run_info.json``; an Ollama Modelfile (our template as Ollama's Go TEMPLATE) to
``<output without .gguf>.Modelfile``. Give a merged model (merge_lora.py), not an adapter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from utils.common.entry import run_entry  # noqa: E402
from utils.export.gguf import (  # noqa: E402
    CACHE_DIR,
    CONVERTER_PACKAGE,
    CONVERTER_SHA256,
    OUTTYPES,
    ExportError,
    ollama_modelfile,
    run_converter,
)
from utils.export.gguf_check import check_metadata, verify  # noqa: E402
from utils.model.chat_template import CHAT  # noqa: E402
from utils.model.loader import read_run_info  # noqa: E402
from utils.model.prompter import Prompter, TemplateError  # noqa: E402

# What --verify accepts. f32 is exact (max abs logit difference 0.0 measured): 1e-4 absolute. The lossy types are
# bounded relative to the largest logit, because their error scales with the weights: measured max abs difference /
# max abs logit on the QUICK demo model (Gemma-3-270M, logits up to 51) f16 0.09%, bf16 0.64%, q8_0 2.1%; on
# the tiny test model q8_0 1.8%. The bounds leave room above those and stay far below a wrong tensor layout (~100%).
ABSOLUTE_TOLERANCE = {"f32": 1e-4}
RELATIVE_TOLERANCE = {"f16": 0.005, "bf16": 0.02, "q8_0": 0.05}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", type=Path, required=True, help="merged model directory (safetensors + tokenizer)")
    p.add_argument("--output", type=Path, help="the .gguf file (default: <model_dir>.gguf)")
    p.add_argument("--outtype", choices=OUTTYPES, default="q8_0",
                   help="f32 (exact), f16, bf16 or q8_0 (default: %(default)s; half of f16's size, fastest on CPU)")
    p.add_argument("--verify", action="store_true",
                   help="read the file back with transformers: same token ids and logits (within --tolerance)")
    p.add_argument("--tolerance", type=float, help="max abs logit difference for --verify (default: f32 1e-4; f16 0.5%%, "
                   "bf16 2%%, q8_0 5%% of the largest logit)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    p.add_argument("--cache_dir", type=Path, default=CACHE_DIR, help="where the converter is kept (default %(default)s)")
    args = p.parse_args(argv)
    if args.output is None:
        args.output = args.model_dir.with_name(args.model_dir.name + ".gguf")
    if args.output.suffix != ".gguf":
        p.error(f"--output {args.output}: the file name must end in .gguf")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if not args.model_dir.is_dir():
        raise ExportError(f"--model_dir {args.model_dir}: no such directory")
    if (args.model_dir / "adapter_config.json").is_file():
        raise ExportError(f"--model_dir {args.model_dir} is a LoRA adapter: merge it first "
                          f"(python merge_lora.py --lora_model {args.model_dir} --output_dir models/<name>)")
    if args.output.exists() and not args.overwrite:
        raise ExportError(f"--output {args.output} exists: pass --overwrite to replace it")
    print(f"[export_gguf] {args.model_dir} → {args.output} ({args.outtype}) with {CONVERTER_PACKAGE}'s "
          "convert_hf_to_gguf.py", flush=True)
    result = run_converter(args.model_dir, args.output, args.outtype, args.cache_dir)
    for note in result.notes:
        print(f"[export_gguf] staged: {note}", flush=True)
    size_mb = args.output.stat().st_size / 1e6
    print(f"[export_gguf] converted in {result.seconds:.0f}s: {size_mb:.0f} MB", flush=True)
    facts, problems = check_metadata(args.model_dir, args.output)
    print(f"[export_gguf] {facts['tokens']} tokens ({facts['user_defined_tokens']} user-defined), tokenizer "
          f"{facts['tokenizer_model']}, BOS {facts['bos_token_id']} EOS {facts['eos_token_id']}, chat template "
          f"{'carried' if facts['chat_template'] else 'none (the model has none: a base model?)'}", flush=True)
    for warning in facts["warnings"]:
        print(f"[export_gguf] WARNING: {warning}", file=sys.stderr, flush=True)
    if problems:
        raise ExportError(f"{args.output} does not carry the model's tokenizer: " + "; ".join(problems))
    info = {
        "stage": "export_gguf", "model_dir": str(args.model_dir), "output": str(args.output), "outtype": args.outtype,
        "size_bytes": args.output.stat().st_size, "converter": CONVERTER_PACKAGE, "converter_sdist_sha256": CONVERTER_SHA256,
        "staged": result.notes, "metadata": facts, "seconds": round(result.seconds, 1),
        "prompt_template": read_run_info(args.model_dir).get("prompt_template"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if args.verify:
        check = verify(args.model_dir, args.output)
        limit = args.tolerance if args.tolerance is not None else ABSOLUTE_TOLERANCE.get(
            args.outtype, RELATIVE_TOLERANCE.get(args.outtype, 0.0) * check["max_abs_logit"])
        info["verify"] = {**check, "tolerance": limit}
        print(f"[export_gguf] read back with transformers: token ids equal on {sum(check['token_ids_equal'])}/"
              f"{len(check['token_ids_equal'])} legal texts; max abs logit diff {check['max_abs_logit_diff']:.3g} "
              f"(tolerance {limit:.3g}; logits up to {check['max_abs_logit']:.3g}), same argmax on "
              f"{check['argmax_agreement']:.1%} of {check['tokens_compared']} positions", flush=True)
        if not all(check["token_ids_equal"]) or not check["max_abs_logit_diff"] <= limit:
            write_run_info_file(args.output, info)
            raise ExportError(f"{args.output} does not reproduce {args.model_dir} (details in "
                              f"{run_info_path(args.output)})")
    info["modelfile"] = write_modelfile(args.model_dir, args.output, info["prompt_template"])
    write_run_info_file(args.output, info)
    print(f"[export_gguf] saved {args.output}", flush=True)
    return info


def write_modelfile(model_dir: Path, output: Path, template: str | None) -> str | None:
    """``<name>.Modelfile`` for Ollama beside the file, when the model was trained with one of our templates."""
    if template in (None, CHAT):
        print(f"[export_gguf] no Modelfile: the model has {'no template of ours' if template is None else 'its own chat template'}"
              " (write Ollama's TEMPLATE by hand, docs/gguf.md)", flush=True)
        return None
    try:
        text = ollama_modelfile(Prompter(template, default_system=read_run_info(model_dir).get("system_prompt")),
                                output.name)
    except (ExportError, TemplateError) as e:
        print(f"[export_gguf] WARNING: no Modelfile: {e}", file=sys.stderr, flush=True)
        return None
    path = output.with_suffix(".Modelfile")
    path.write_text(text, encoding="utf-8")
    print(f"[export_gguf] Ollama: ollama create <name> -f {path}", flush=True)
    return str(path)


def run_info_path(output: Path) -> Path:
    return output.with_name(output.name + ".run_info.json")


def write_run_info_file(output: Path, info: dict) -> None:
    """``<output>.run_info.json`` (a file output has no directory to put run_info.json in), written atomically."""
    path = run_info_path(output)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(info, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(run_entry("export_gguf", main))
