"""GGUF export with llama.cpp's own converter, so llama.cpp, Ollama and LM Studio run what we trained.

The converter is ``convert_hf_to_gguf.py`` (+ its ``conversion/`` package and ``gguf-py``) as shipped in the
``llama-cpp-python`` source distribution on PyPI: fetched once with ``pip download --no-deps --no-binary :all:``
(version and sha256 pinned below), unpacked into ``.cache/llama_cpp/`` and run as a subprocess with our own
Python. Nothing is compiled. Its Python needs are ours: torch, numpy, sentencepiece, safetensors, transformers
(its requirements file pins older versions of transformers, numpy and protobuf; the pinned ones of this project
convert LLaMA and Gemma-3 exactly — tests/test_gguf_export.py) and its own gguf-py.

Output types without compiled tools: ``f32``, ``f16``, ``bf16`` (casts) and ``q8_0`` (gguf-py quantizes Q8_0 in
numpy). The k-quants (Q4_K_M …) need llama.cpp's compiled ``llama-quantize`` and are left to it.

What we add is only a staging directory (links to the model's files) that gives the converter the tokenizer
layout it reads (see :func:`stage`):

- transformers 5 keeps added tokens (a grown vocabulary added with ``add_tokens``, chat markers) only in
  tokenizer.json, while the converter's sentencepiece path reads them from ``tokenizer_config.json``'s
  ``added_tokens_decoder`` (transformers 4's layout): without it they become ``[PAD…]`` tokens. We write it back.
- A sentencepiece-style tokenizer saved without ``tokenizer.model`` (Gemma rebuilt from GGUF, as our demo
  model is) would be exported by the converter as a GPT-2 byte-level BPE, which tokenises Chinese wrongly
  (transformers cannot even load it back). We write the ``tokenizer.model`` the converter expects from
  tokenizer.json: the same pieces, merge order as scores, special/added/byte types.
- Our Jinja chat template writes a space after a textual BOS for a LLaMA sentencepiece tokenizer, because
  transformers' tokenizer would otherwise drop the first piece's ``▁``; llama.cpp adds that ``▁`` itself after any
  special token, so with the space it would feed the model one ``▁`` token more than training did. The file gets
  the same template without that space (:func:`gguf_chat_template`): llama.cpp then tokenises a rendered prompt to
  exactly our ids (tested). Any other template is carried unchanged.

utils/export/gguf_check.py reads the written file back and compares it with the model directory.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from utils.common.datafiles import files_sha256
from utils.common.errors import LawgptError
from utils.common.paths import REPO_ROOT

CONVERTER_PACKAGE = "llama-cpp-python==0.3.36"
# PyPI files never change: another hash means another file, not a newer one.
CONVERTER_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
CACHE_DIR = REPO_ROOT / ".cache" / "llama_cpp"
# What we take out of the sdist: the converter, its model classes, gguf-py, the licence (MIT).
_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "LICENSE")
OUTTYPES = ("f32", "f16", "bf16", "q8_0")
_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")
# sentencepiece piece types (sentencepiece_model.proto)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6


class ExportError(LawgptError, RuntimeError):
    """The converter cannot be fetched, or the model cannot be exported or verified as asked."""


# ---------------------------------------------------------------- the converter (fetched once)


def download_sdist(cache_dir: Path = CACHE_DIR) -> Path:
    """The pinned llama-cpp-python sdist in ``cache_dir`` (``pip download`` when missing), hash-checked."""
    name, version = CONVERTER_PACKAGE.split("==")
    pattern = f"{name.replace('-', '_')}-{version}.tar.gz"
    cache_dir.mkdir(parents=True, exist_ok=True)
    if not (cache_dir / pattern).is_file():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", CONVERTER_PACKAGE,
               "-d", str(cache_dir)]
        print(f"[gguf] fetching llama.cpp's converter once (~75 MB): {' '.join(cmd)}", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ExportError(f"pip download {CONVERTER_PACKAGE} failed (exit {done.returncode}): "
                              f"{done.stderr.strip()[-600:]}")
        if not (cache_dir / pattern).is_file():
            raise ExportError(f"pip download {CONVERTER_PACKAGE} left no {pattern} in {cache_dir}")
    sdist = cache_dir / pattern
    digest = files_sha256([sdist])
    if digest != CONVERTER_SHA256:
        raise ExportError(f"{sdist}: sha256 {digest} is not the pinned {CONVERTER_SHA256}; delete it and rerun")
    return sdist


def converter_dir(cache_dir: Path = CACHE_DIR) -> Path:
    """The unpacked converter (``convert_hf_to_gguf.py`` inside), unpacked from the sdist on first use."""
    version = CONVERTER_PACKAGE.split("==")[1]
    target = cache_dir / f"llama.cpp-{version}"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    sdist = download_sdist(cache_dir)
    prefix = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache_dir))
    try:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(prefix)
                       and any(m.name[len(prefix):].startswith(part) for part in _MEMBERS) and (m.isfile() or m.isdir())]
            if not any(m.name.endswith("/convert_hf_to_gguf.py") for m in members):
                raise ExportError(f"{sdist}: no vendor/llama.cpp/convert_hf_to_gguf.py inside")
            for member in members:
                member.name = member.name[len(prefix):]
            # the "data" filter refuses links and paths out of tmp (Python >= 3.10.12 has it)
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=members, **safe)
        os.replace(tmp, target)  # atomic: a half-unpacked converter is never used
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ---------------------------------------------------------------- staging the tokenizer layout


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ExportError(f"{path}: cannot read it as JSON: {e}") from e


def sentencepiece_style(tokenizer_json: dict) -> bool:
    """A BPE with byte fallback whose spaces are ``▁`` (converted from sentencepiece: LLaMA, Gemma), not byte-level."""
    model = tokenizer_json.get("model") or {}
    text = json.dumps([tokenizer_json.get("normalizer"), tokenizer_json.get("pre_tokenizer")], ensure_ascii=False)
    return model.get("type") == "BPE" and bool(model.get("byte_fallback")) and ("▁" in text or "Metaspace" in text)


def _adds_dummy_prefix(tokenizer_json: dict) -> bool:
    text = json.dumps([tokenizer_json.get("normalizer"), tokenizer_json.get("pre_tokenizer")], ensure_ascii=False)
    return '"Prepend"' in text or re.search(r'"prepend_scheme": "(first|always)"', text) is not None


def sentencepiece_from_tokenizer_json(tokenizer_json: dict, out_file: Path) -> int:
    """Write a sentencepiece ``tokenizer.model`` with the pieces of a sentencepiece-style tokenizer.json.

    Scores follow sentencepiece's BPE convention (higher merges first): a piece scores minus the rank of the
    first merge that builds it, pieces no merge builds (single characters) score below every merged piece.
    llama.cpp's tokenizer merges the highest-scoring pair first, so it applies the merges in tokenizer.json's
    order. Returns the number of pieces.
    """
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    model = tokenizer_json["model"]
    by_id = {i: piece for piece, i in model["vocab"].items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ExportError("tokenizer.json: the model's vocabulary ids are not 0..n-1; cannot write tokenizer.model")
    added = {a["id"]: a for a in tokenizer_json.get("added_tokens", [])}
    first_rank: dict[str, int] = {}
    for rank, merge in enumerate(model.get("merges", [])):
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        first_rank.setdefault(left + right, rank)
    unmerged = len(first_rank)
    proto = sp_pb2.ModelProto()
    for i in range(len(by_id)):
        piece, score, kind = by_id[i], 0.0, NORMAL
        if i in added:
            kind = CONTROL if added[i].get("special") else USER_DEFINED
        elif piece == model.get("unk_token"):
            kind = UNKNOWN
        elif _BYTE_PIECE.match(piece):
            kind = BYTE
        elif piece in first_rank:
            score = -float(first_rank[piece])
        else:
            unmerged += 1
            score = -float(unmerged)
        proto.pieces.append(sp_pb2.ModelProto.SentencePiece(piece=piece, score=score, type=kind))
    proto.trainer_spec.model_type = sp_pb2.TrainerSpec.BPE
    proto.trainer_spec.vocab_size = len(by_id)
    proto.trainer_spec.byte_fallback = True
    unk = [i for i in range(len(by_id)) if proto.pieces[i].type == UNKNOWN]
    proto.trainer_spec.unk_id = unk[0] if unk else 0
    proto.normalizer_spec.name = "identity"
    proto.normalizer_spec.add_dummy_prefix = _adds_dummy_prefix(tokenizer_json)
    proto.normalizer_spec.remove_extra_whitespaces = False
    proto.normalizer_spec.escape_whitespaces = True
    out_file.write_bytes(proto.SerializeToString())
    return len(by_id)


def _sentencepiece_size(model_file: Path) -> int:
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    proto = sp_pb2.ModelProto()
    proto.ParseFromString(model_file.read_bytes())
    return len(proto.pieces)


def gguf_chat_template(model_dir: Path, tokenizer) -> str | None:
    """The chat template the file carries: the tokenizer's, except the space after BOS (module docstring)."""
    from utils.model.chat_template import CHAT, bos_prefix, jinja_template
    from utils.model.loader import read_run_info
    from utils.model.prompter import Prompter, TemplateError

    template = getattr(tokenizer, "chat_template", None)
    info = read_run_info(model_dir)
    name, system = info.get("prompt_template"), info.get("system_prompt")
    if not template or not name or name == CHAT:
        return template
    try:
        prefix = bos_prefix(tokenizer)
        if prefix is None or not prefix.endswith(" "):
            return template
        if template != jinja_template(Prompter(name, default_system=system), prefix):
            return template  # not the one we wrote (edited by hand?): leave it alone
        return jinja_template(Prompter(name, default_system=system), tokenizer.bos_token)
    except TemplateError:
        return template


def stage(model_dir: Path, staging: Path) -> list[str]:
    """``staging``: links to ``model_dir``'s files plus the tokenizer files the converter reads (module docstring).

    Returns one line per change made, for the log.
    """
    from utils.model.loader import load_tokenizer

    notes = []
    tokenizer_file = model_dir / "tokenizer.json"
    tokenizer_json = _read_json(tokenizer_file) if tokenizer_file.is_file() else None
    sp_model = model_dir / "tokenizer.model"
    write_sp = tokenizer_json is not None and not sp_model.is_file() and sentencepiece_style(tokenizer_json)
    for item in model_dir.iterdir():
        if item.name not in ("tokenizer_config.json",) and not (write_sp and item.name == "tokenizer.model"):
            os.symlink(item.resolve(), staging / item.name)
    if write_sp:
        pieces = sentencepiece_from_tokenizer_json(tokenizer_json, staging / "tokenizer.model")
        notes.append(f"tokenizer.model written from tokenizer.json ({pieces} pieces; the converter would otherwise "
                     "treat this sentencepiece-style tokenizer as GPT-2 byte-level BPE)")
    config_file = model_dir / "tokenizer_config.json"
    config = _read_json(config_file) if config_file.is_file() else {}
    uses_sp = sp_model.is_file() or write_sp
    if tokenizer_json is not None and uses_sp and "added_tokens_decoder" not in config:
        base = _sentencepiece_size(staging / "tokenizer.model")
        extra = {str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
                                if k in a}
                 # the pieces a sentencepiece model lacks, and non-special added tokens inside it (Gemma's "\n\n",
                 # "<b>"): the converter would read those as normal pieces, llama.cpp must match them whole
                 for a in tokenizer_json.get("added_tokens", []) if a["id"] >= base or not a.get("special")}
        if extra:
            config["added_tokens_decoder"] = extra
            notes.append(f"{len(extra)} added tokens ({sum(int(k) >= base for k in extra)} beyond tokenizer.model's "
                         f"{base} pieces) listed in tokenizer_config.json's added_tokens_decoder, where the converter "
                         "reads them")
    tokenizer = load_tokenizer(model_dir)
    template = gguf_chat_template(model_dir, tokenizer)
    if template != getattr(tokenizer, "chat_template", None):
        config["chat_template"] = template  # read before chat_template.jinja by the converter
        notes.append("chat template: the space after BOS that transformers' LLaMA tokenizer needs is left out, "
                     "llama.cpp adds that ▁ itself")
    if config or config_file.is_file():
        (staging / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=2),
                                                       encoding="utf-8")
    return notes


# ---------------------------------------------------------------- export


@dataclass
class ExportResult:
    path: Path
    outtype: str
    notes: list[str]
    seconds: float


def run_converter(model_dir: Path, outfile: Path, outtype: str, cache_dir: Path = CACHE_DIR,
                  extra_args: tuple[str, ...] = ()) -> ExportResult:
    """``convert_hf_to_gguf.py`` on a staged copy of ``model_dir``, written atomically to ``outfile``."""
    import time

    if outtype not in OUTTYPES:
        raise ExportError(f"--outtype {outtype}: one of {', '.join(OUTTYPES)} (the k-quants need llama.cpp's "
                          "compiled llama-quantize: run it on the f16 file)")
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir}: no config.json: give a merged model directory (merge_lora.py --output_dir)")
    script = converter_dir(cache_dir) / "convert_hf_to_gguf.py"
    outfile.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = outfile.with_name(f".{outfile.name}.part-{os.getpid()}")
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="gguf-stage-") as tmp:
        staging = Path(tmp) / model_dir.resolve().name  # the converter names the model after its directory
        staging.mkdir()
        notes = stage(model_dir, staging)
        cmd = [sys.executable, str(script), str(staging), "--outfile", str(tmp_out), "--outtype", outtype, *extra_args]
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        env.pop("NO_LOCAL_GGUF", None)  # the converter's own gguf-py, the version it was written for
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not tmp_out.is_file():
        tmp_out.unlink(missing_ok=True)
        log = (done.stderr + done.stdout).strip().splitlines()
        raise ExportError(f"convert_hf_to_gguf.py failed (exit {done.returncode}) on {model_dir}:\n"
                          + "\n".join(log[-15:]))
    os.replace(tmp_out, outfile)
    return ExportResult(outfile, outtype, notes, time.time() - start)


def ollama_modelfile(prompter, gguf_name: str) -> str:
    """An Ollama Modelfile for the exported file, with one of our templates written as a Go ``TEMPLATE``.

    Ollama executes Go templates, not the file's Jinja (docs/gguf.md). This one renders
    what the Jinja chat_template renders, less the BOS the runtime adds: the system message + newline (or the
    template's system text), each user turn as ``prompt_no_input``, each answer followed by a newline unless it
    is the last message. tests/test_gguf_export.py executes it with Go's text/template where Go is installed.
    """
    before, found, after = prompter.prompt_no_input.partition("{instruction}")
    literal = [prompter.system, before, after]
    if not found or any(c in text for text in literal for c in "{}") or any('"""' in t for t in literal) \
            or any(c in stop for stop in prompter.stop for c in '"\\\n'):
        raise ExportError(f"prompt template {prompter.name!r} cannot be written as an Ollama Modelfile (braces, "
                          '""" or a quote in its text or stop strings): write its TEMPLATE by hand')
    template = ("{{ if .System }}{{ .System }}\n{{ else }}" + prompter.system + "{{ end }}"
                '{{ range $i, $m := .Messages }}{{ if eq $m.Role "user" }}' + before + "{{ $m.Content }}" + after
                + '{{ else if eq $m.Role "assistant" }}{{ $m.Content }}{{ if gt (len (slice $.Messages $i)) 1 }}\n'
                "{{ end }}{{ end }}{{ end }}")
    return "\n".join([
        f"# Ollama Modelfile for {gguf_name} (prompt template {prompter.name!r}), written by tools/export_gguf.py.",
        "# ollama create lawgpt -f <this file> && ollama run lawgpt",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template}"""',
        *(f'PARAMETER stop "{stop}"' for stop in prompter.stop),
        "PARAMETER temperature 0",  # our engine's defaults: greedy, a mild repetition penalty
        "PARAMETER repeat_penalty 1.1",
    ]) + "\n"
