"""tools/export_gguf.py: llama.cpp's converter on a merged tiny model with a grown vocabulary, read back.

The converter comes from the pinned llama-cpp-python sdist on PyPI (fetched once into .cache/llama_cpp/, ~75 MB,
~1 min); the tests skip, saying so, only when PyPI cannot be reached. The llama.cpp runtime test runs only where
llama-cpp-python is installed (benchmarks/bench_cpu_engines.py; not a requirement).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tools import export_gguf
from utils.export import gguf as G
from utils.export import gguf_check as C
from utils.model.loader import load_tokenizer, write_run_info

SP_WORDS = ["入户盗窃", "劳动合同法", "民间借贷", "用人单位", "诈骗罪名"]  # appended to tokenizer.model
ADDED_WORD, ADDED_SPECIAL = "危险驾驶罪", "<|legal_sep|>"  # added with add_tokens: tokenizer.json only
LEGAL = "甲入户盗窃后又犯危险驾驶罪，用人单位依照劳动合同法支付工资；民间借贷纠纷与诈骗罪名。"
LEGAL_SP = "甲入户盗窃后，用人单位依照劳动合同法支付工资；民间借贷纠纷与诈骗罪名。"  # the appended pieces only
MESSAGES = [{"role": "user", "content": LEGAL_SP}]


@pytest.fixture(scope="module")
def converter():
    try:
        return G.converter_dir()
    except G.ExportError as e:
        probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "llama-cpp-python"],
                               capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"PyPI unreachable, llama.cpp's converter cannot be fetched: {e}")
        raise


@pytest.fixture(scope="module")
def merged(tiny_model_dir, tmp_path_factory):
    """merge_lora.py's output for an adapter on a grown vocabulary: sentencepiece pieces + added tokens + template."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    import merge_lora
    from utils.model import vocabulary as vocab

    work = tmp_path_factory.mktemp("gguf")
    base_tokenizer = load_tokenizer(tiny_model_dir)
    extended = work / "extended-base"
    extended.mkdir()
    pieces = vocab.bpe_reachable_pieces(base_tokenizer, SP_WORDS)
    vocab.merge_sentencepiece(tiny_model_dir / "tokenizer.model", pieces, work / "merged.model")
    tokenizer = vocab.save_sentencepiece_tokenizer(tiny_model_dir, base_tokenizer, work / "merged.model", extended)
    tokenizer.add_tokens([ADDED_WORD])
    tokenizer.add_tokens([ADDED_SPECIAL], special_tokens=True)
    tokenizer.save_pretrained(str(extended))
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():  # new rows unlike any old one, so a row at a wrong id shows in the logits
        model.get_input_embeddings().weight[2000:].normal_(0, 0.5)
        model.get_output_embeddings().weight[2000:].normal_(0, 0.5)
    model.save_pretrained(str(extended))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    peft_model.save_pretrained(str(work / "adapter"))
    write_run_info(work / "adapter", {"base_model": str(extended), "prompt_template": "law_template"})
    merge_lora.main(lora_model=str(work / "adapter"), output_dir=str(work / "merged"))
    out = work / "merged"
    assert (out / "tokenizer.model").is_file() and len(load_tokenizer(out)) == 2000 + len(pieces) + 2
    return out


def _export(model_dir: Path, output: Path, outtype: str, *extra: str) -> dict:
    return export_gguf.main(["--model_dir", str(model_dir), "--output", str(output), "--outtype", outtype, *extra])


@pytest.mark.parametrize("outtype,tolerance", [("f32", 1e-4), ("q8_0", 0.5)])  # q8_0: 0.28 measured
def test_export_reads_back_with_the_same_tokens_and_logits(converter, merged, tmp_path, outtype, tolerance):
    out = tmp_path / f"lawgpt-{outtype}.gguf"
    info = _export(merged, out, outtype, "--verify")
    check = info["verify"]
    assert check["token_ids_equal"] == [True] * len(C.SAMPLE_TEXTS)
    assert check["max_abs_logit_diff"] <= tolerance, check
    if outtype == "f32":
        assert check["max_abs_logit_diff"] == 0.0  # the same float32 numbers, only moved
    else:  # measured on this model: 0.28 of logits up to 16, argmax unchanged at 98% of the positions
        assert check["argmax_agreement"] >= 0.9 and check["tolerance"] == pytest.approx(0.05 * check["max_abs_logit"])
    meta = info["metadata"]
    tokenizer = load_tokenizer(merged)
    assert meta["tokens"] == len(tokenizer) and meta["tokenizer_model"] == "llama"
    assert (meta["eos_token_id"], meta["bos_token_id"]) == (tokenizer.eos_token_id, tokenizer.bos_token_id)
    assert meta["chat_template"] and info["prompt_template"] == "law_template"
    assert json.loads(out.with_name(out.name + ".run_info.json").read_text(encoding="utf-8"))["outtype"] == outtype
    modelfile = Path(info["modelfile"]).read_text(encoding="utf-8")  # our template, as Ollama's TEMPLATE
    assert f"FROM ./{out.name}\n" in modelfile and 'PARAMETER stop "### 问题:"' in modelfile

    stored = C.read_metadata(out)
    assert stored["general.name"] == "Merged"  # named after the model directory, as the converter does
    # the template the model was trained with, less the space after BOS that only transformers' tokenizer needs
    want = tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    got = tokenizer.apply_chat_template(MESSAGES, chat_template=stored["tokenizer.chat_template"], tokenize=False,
                                        add_generation_prompt=True)
    assert want.startswith(tokenizer.bos_token + " ") and got == tokenizer.bos_token + want[len(tokenizer.bos_token) + 1:]
    assert any("space after BOS" in note for note in info["staged"])
    assert len(meta["warnings"]) == 1 and repr(ADDED_WORD) in meta["warnings"][0]  # llama.cpp's ▁ after added tokens
    tokens, types = stored["tokens"], stored["token_types"]
    assert types[tokens.index("入户盗窃")] == 1 and tokens.index("入户盗窃") >= 2000  # appended piece: a normal piece
    assert types[tokens.index(ADDED_WORD)] == 4 and types[tokens.index(ADDED_SPECIAL)] == 3  # user-defined, control
    if outtype == "f32":  # the new words are single tokens in the exported tokenizer too
        from transformers import AutoTokenizer

        gguf_tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file=out.name)
        for word in SP_WORDS + [ADDED_WORD]:
            assert len(gguf_tokenizer.tokenize(word)) <= 2, word  # ▁ + word at most
        assert gguf_tokenizer(LEGAL)["input_ids"] == tokenizer(LEGAL)["input_ids"]


@pytest.fixture(scope="module")
def vocab_files(converter, merged, tmp_path_factory):
    """Vocabulary-only exports: {"tokenizer.model": (model, gguf), "tokenizer.json only": (model, gguf)}."""
    work = tmp_path_factory.mktemp("gguf-vocab")
    no_sp = work / "no-sp"
    shutil.copytree(merged, no_sp)
    (no_sp / "tokenizer.model").unlink()  # as Gemma rebuilt from GGUF (our demo model) has it
    files = {}
    for kind, model in (("tokenizer.model", merged), ("tokenizer.json only", no_sp)):
        out = work / f"{model.name}.gguf"
        result = G.run_converter(model, out, "f32", extra_args=("--vocab-only",))
        files[kind] = (model, out, result.notes)
    return files


def test_tokenizer_json_only_model_gets_a_sentencepiece_vocabulary(vocab_files):
    """Staged from tokenizer.json, the vocabulary is sentencepiece's (not GPT-2's byte level); the ids stay the same."""
    model, out, notes = vocab_files["tokenizer.json only"]
    assert any("tokenizer.model written from tokenizer.json" in note for note in notes)
    facts, problems = C.check_metadata(model, out)
    assert problems == [] and facts["tokenizer_model"] == "llama"
    from transformers import AutoTokenizer

    tokenizer, gguf_tokenizer = load_tokenizer(model), AutoTokenizer.from_pretrained(str(out.parent), gguf_file=out.name)
    for text in (*C.SAMPLE_TEXTS, LEGAL):
        assert gguf_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"], text


def test_without_staging_the_converter_loses_the_added_tokens(converter, merged, tmp_path):
    """Why utils/gguf_export.stage exists, and that check_metadata notices: transformers 5 keeps added tokens in
    tokenizer.json only, the converter reads them from tokenizer_config.json."""
    out = tmp_path / "unstaged.gguf"
    subprocess.run([sys.executable, str(converter / "convert_hf_to_gguf.py"), str(merged), "--vocab-only",
                    "--outfile", str(out)], check=True, capture_output=True)
    _, problems = C.check_metadata(merged, out)
    assert "2 token(s) differ" in problems[0] and "'[PAD2013]'" in problems[0]
    assert problems[1:] == ["tokenizer.chat_template in the file is not the tokenizer's chat_template"]  # space kept


@pytest.mark.parametrize("kind", ["tokenizer.model", "tokenizer.json only"])
def test_llama_cpp_tokenizes_like_transformers(vocab_files, kind):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (optional: the benchmark)")
    model, out, _ = vocab_files[kind]
    llm = llama_cpp.Llama(model_path=str(out), vocab_only=True, verbose=False)
    tokenizer = load_tokenizer(model)
    for text in (*C.SAMPLE_TEXTS, LEGAL_SP):
        assert llm.tokenize(text.encode(), add_bos=True) == tokenizer(text)["input_ids"], text
    # a prompt rendered with the file's template, tokenised as llama.cpp does, is the prompt our engine feeds
    want = tokenizer(tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True),
                     add_special_tokens=False)["input_ids"]
    rendered = tokenizer.apply_chat_template(MESSAGES, chat_template=llm.metadata["tokenizer.chat_template"],
                                             tokenize=False, add_generation_prompt=True)
    assert llm.tokenize(rendered.encode(), add_bos=False, special=True) == want
    assert llm.tokenize(rendered[len(tokenizer.bos_token):].encode(), add_bos=True, special=True) == want  # llama-server
    # llama-cpp-python's own chat handler (Llama builds it from the file's template when no chat_format is given)
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(template=llm.metadata["tokenizer.chat_template"], eos_token=tokenizer.eos_token,
                                    bos_token=tokenizer.bos_token)
    turns = [{"role": "user", "content": "酒驾撞人怎么判刑？"}, {"role": "assistant", "content": LEGAL_SP},
             {"role": "user", "content": "那么醉驾呢？"}]
    for messages in (MESSAGES, [{"role": "system", "content": "你是法律助手。"}, *MESSAGES], turns):
        want = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"]
        result = formatter(messages=messages)
        assert llm.tokenize(result.prompt.encode(), add_bos=not result.added_special, special=True) == want


def test_warnings_name_what_llama_cpp_splits_differently():
    assert C.overlapping(["上一级", "级人民政府", "刑法", "中华人民共和国刑法", "民法典"]) == ["上一级", "中华人民共和国刑法"]
    sentencepiece = {"tokenizer.ggml.model": "llama"}
    assert C.llama_cpp_warnings({**sentencepiece, "tokenizer.ggml.add_space_prefix": False}, ["刑法", "民法典"]) == []
    (space,) = C.llama_cpp_warnings(sentencepiece, ["刑法"])  # LLaMA: a dummy prefix
    assert "puts a ▁ before text" in space
    (overlap,) = C.llama_cpp_warnings({**sentencepiece, "tokenizer.ggml.add_space_prefix": False}, ["上一级", "级人民政府"])
    assert overlap.startswith("1 of 2 added tokens overlap others (e.g. '上一级')")


def test_refusals_are_one_line(merged, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(G.ExportError, match="LoRA adapter: merge it first"):
        _export(adapter, tmp_path / "x.gguf", "f16")
    existing = tmp_path / "exists.gguf"
    existing.write_bytes(b"GGUF")
    with pytest.raises(G.ExportError, match="pass --overwrite"):
        _export(merged, existing, "f16")
    with pytest.raises(SystemExit):
        _export(merged, tmp_path / "x.gguf", "q4_k_m")  # needs llama.cpp's compiled llama-quantize
    done = subprocess.run([sys.executable, str(Path(export_gguf.__file__)), "--model_dir", str(tmp_path / "none")],
                          capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0 and "no such directory" in done.stderr
    helped = subprocess.run([sys.executable, str(Path(export_gguf.__file__)), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--outtype {f32,f16,bf16,q8_0}" in helped.stdout


@pytest.mark.parametrize("template", ["law_template", "law_rag", "alpaca"])
def test_ollama_template_renders_our_prompts(tiny_model_dir, tmp_path, template):
    """The Modelfile's TEMPLATE, executed as Ollama does (tests/ollama_template.go), renders what our chat template
    renders less the BOS the runtime adds: one turn, a system message, multi-turn, both, an assistant prefill."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (apt-get install golang-go): the TEMPLATE is checked by executing it")
    from utils.model.chat_template import jinja_template
    from utils.model.prompter import Prompter

    prompter = Prompter(template)
    modelfile = G.ollama_modelfile(prompter, "lawgpt.gguf")
    (tmp_path / "template").write_text(modelfile.split('TEMPLATE """')[1].split('"""')[0], encoding="utf-8")
    binary = tmp_path / "render"
    subprocess.run([go, "build", "-o", str(binary), str(Path(__file__).with_name("ollama_template.go"))], check=True,
                   cwd=tmp_path)
    q1, a1, q2, system = "酒驾撞人怎么判刑？", "依照《刑法》第一百三十三条……", "那么醉驾呢？", "你是法律助手。"
    user = [{"role": "user", "content": q1}]
    turns = [*user, {"role": "assistant", "content": a1}, {"role": "user", "content": q2}]
    conversations = [user, [{"role": "system", "content": system}, *user], turns,
                     [{"role": "system", "content": system}, *turns], [*user, {"role": "assistant", "content": "依照"}]]
    done = subprocess.run([str(binary), str(tmp_path / "template")], input=json.dumps(conversations),
                          capture_output=True, text=True, check=True)
    tokenizer = load_tokenizer(tiny_model_dir)
    jinja = jinja_template(prompter, None)  # no BOS: Ollama's runtime adds it
    want = [tokenizer.apply_chat_template(c, chat_template=jinja, tokenize=False, add_generation_prompt=True)
            for c in conversations]
    assert json.loads(done.stdout) == want
    assert want[0] == prompter.generate_prompt(q1) and want[2] == prompter.generate_prompt(q2, history=[(q1, a1)])
