"""utils/model/chat_template.py: the tokenizer's own template (``chat``) and ours written into tokenizers as Jinja."""

from __future__ import annotations

import pytest

from utils.common.datafiles import IGNORE_INDEX, sft_example
from utils.model.chat_template import CHAT, ChatPrompter, bos_prefix, jinja_template, make_prompter, write_chat_template
from utils.model.prompter import Prompter, TemplateError

HISTORY = [("什么是盗窃罪？", "以非法占有为目的，窃取他人财物。"), ("数额较大怎么判？", "处三年以下有期徒刑。")]
CONVERSATIONS = {  # (history, system)
    "single": ([], None),
    "multi_turn": (HISTORY, None),
    "multi_turn_system": (HISTORY, "你是一名中国律师。"),
}
QUESTION = "入户盗窃如何处罚？"


def messages(history, system, question=QUESTION, answer=None) -> list[dict]:
    out = [{"role": "system", "content": system}] if system is not None else []
    for q, a in history:
        out += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    out.append({"role": "user", "content": question})
    return out + ([{"role": "assistant", "content": answer}] if answer is not None else [])


def byte_level_tokenizer(bos: bool):
    """A GPT-2-style byte-level tokenizer (no sentencepiece "▁" prefix), with or without an automatic BOS."""
    from tiny_model import statute_sample
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(statute_sample(limit=300), trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<bos>", "<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>")


@pytest.fixture(scope="module", params=["llama_sentencepiece", "byte_level_bos", "byte_level_no_bos"])
def tokenizer(request, tiny_model_dir):
    from utils.model.loader import load_tokenizer

    if request.param == "llama_sentencepiece":
        return load_tokenizer(tiny_model_dir)
    return byte_level_tokenizer(bos=request.param == "byte_level_bos")


@pytest.mark.parametrize("conversation", sorted(CONVERSATIONS))
@pytest.mark.parametrize("template", ["law_template", "alpaca", "law_rag"])
def test_our_templates_as_jinja_render_exactly_what_prompter_renders(tokenizer, template, conversation):
    history, system = CONVERSATIONS[conversation]
    write_chat_template(tokenizer, template)
    ours = Prompter(template).generate_prompt(QUESTION, history=history, system=system)
    rendered = tokenizer.apply_chat_template(messages(history, system), tokenize=False, add_generation_prompt=True)
    prefix = bos_prefix(tokenizer) or ""
    assert rendered == prefix + ours  # BOS (+ the space a sentencepiece tokenizer needs), then Prompter's text
    served = tokenizer.apply_chat_template(messages(history, system), add_generation_prompt=True, return_dict=True)
    assert served["input_ids"] == tokenizer(ours)["input_ids"]  # what a server feeds the model = what we trained on
    # a conversation ending with an answer renders the training text (Prompter with a label)
    full = tokenizer.apply_chat_template(messages(history, system, answer="答案"), tokenize=False)
    assert full == prefix + Prompter(template).generate_prompt(QUESTION, label="答案", history=history, system=system)


def test_bos_prefix_per_tokenizer_kind(tiny_model_dir):
    from utils.model.loader import load_tokenizer

    assert bos_prefix(load_tokenizer(tiny_model_dir)) == "<s> "  # sentencepiece: "▁" kept after a textual BOS
    assert bos_prefix(byte_level_tokenizer(bos=True)) == "<bos>"
    assert bos_prefix(byte_level_tokenizer(bos=False)) is None


def test_trained_system_prompt_is_the_jinja_default(tiny_model_dir):
    from utils.model.loader import load_tokenizer

    tokenizer = load_tokenizer(tiny_model_dir)
    write_chat_template(tokenizer, "law_template", system="你是律师。")
    rendered = tokenizer.apply_chat_template(messages([], None), tokenize=False, add_generation_prompt=True)
    assert rendered == "<s> " + Prompter("law_template", default_system="你是律师。").generate_prompt(QUESTION)
    assert rendered.startswith("<s> 你是律师。\n### 问题:")
    with pytest.raises(Exception, match="roles system"):
        tokenizer.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_jinja_literals_survive_quotes_backslashes_and_braces(tmp_path):
    path = tmp_path / "odd.json"
    path.write_text('{"system": "Say \\"it\'s\\" \\\\ {{x}} {{%y%}}\\n\\t", "prompt_input": "Q: {instruction} I: {input}\\n",'
                    '"prompt_no_input": "Q: {instruction} {{literal}}\\nA:", "response_split": "A:"}', encoding="utf-8")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    prompter = Prompter(str(path))
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)  # as transformers renders
    text = env.from_string(jinja_template(prompter, None)).render(messages=messages(HISTORY, None), bos_token="")
    assert text == prompter.generate_prompt(QUESTION, history=HISTORY)


# ---------------------------------------------------------------- the tokenizer's own template (chat)


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_chat_model_dir):
    from utils.model.loader import load_tokenizer

    return load_tokenizer(tiny_chat_model_dir, padding_side="right")


def test_chat_prompter_renders_the_tokenizers_template(chat_tokenizer):
    prompter = make_prompter(CHAT, chat_tokenizer)
    assert isinstance(prompter, ChatPrompter) and prompter.turn_end == "<|im_end|>\n"
    assert prompter.stop_token_ids == (chat_tokenizer.convert_tokens_to_ids("<|im_end|>"),)
    assert prompter.stop == [] and not prompter.needs_eos and not prompter.add_special_tokens
    prompt = prompter.generate_prompt(QUESTION, "张三深夜入户。", history=HISTORY[:1])
    assert prompt == chat_tokenizer.apply_chat_template(
        messages(HISTORY[:1], None, f"{QUESTION}\n\n张三深夜入户。"), tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful assistant.") and prompt.endswith("assistant\n")
    assert make_prompter(CHAT, chat_tokenizer, system="你是律师").generate_prompt("问").startswith(
        "<|im_start|>system\n你是律师<|im_end|>")


@pytest.mark.parametrize("system", [None, "你是律师"])
def test_chat_masking_trains_exactly_the_assistant_turns(chat_tokenizer, system):
    prompter = make_prompter(CHAT, chat_tokenizer, system=system)
    answer = "依据《刑法》第二百六十四条，处三年以上十年以下有期徒刑。"
    segments = prompter.segments(QUESTION, None, answer, HISTORY)
    ex = sft_example(chat_tokenizer, segments, 4096, add_eos_token=prompter.needs_eos,
                     add_special_tokens=prompter.add_special_tokens)
    ids, labels = ex["input_ids"], ex["labels"]
    rendered = chat_tokenizer.apply_chat_template(messages(HISTORY, system, answer=answer), tokenize=False)
    assert chat_tokenizer.decode(ids) == rendered.rstrip("\n")  # the whole conversation, nothing added
    trained = [chat_tokenizer.decode([t for t, lab in run]) for run in _runs(ids, labels, trained=True)]
    assert trained == [a + "<|im_end|>" for _, a in HISTORY] + [answer + "<|im_end|>"]
    masked = chat_tokenizer.decode([t for t, lab in zip(ids, labels) if lab == IGNORE_INDEX])
    assert all(q in masked for q, _ in HISTORY) and QUESTION in masked and "assistant\n" in masked
    assert not any(a in masked for _, a in HISTORY)
    # training with train_on_inputs keeps every token
    assert sft_example(chat_tokenizer, segments, 4096, train_on_inputs=True, add_eos_token=False,
                       add_special_tokens=False)["labels"] == ids


def _runs(ids, labels, trained: bool):
    """Maximal runs of consecutive (id, label) pairs that are trained (or masked)."""
    runs, current = [], []
    for pair in zip(ids, labels):
        if (pair[1] != IGNORE_INDEX) == trained:
            current.append(pair)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


def test_chat_without_a_template_names_the_model(tiny_model_dir):
    from utils.model.loader import load_tokenizer

    with pytest.raises(TemplateError, match=r"the tokenizer of models/x has no chat_template.*law_template"):
        make_prompter(CHAT, load_tokenizer(tiny_model_dir), where="models/x")


def test_a_template_that_rewrites_earlier_turns_cannot_be_masked(chat_tokenizer):
    import copy

    tokenizer = copy.deepcopy(chat_tokenizer)
    # like templates that drop earlier reasoning: the last assistant turn renders differently from earlier ones
    tokenizer.chat_template = (
        "{%- for m in messages %}{%- if m['role'] == 'assistant' and not loop.last %}{{ '<|im_start|>assistant\\n' + "
        "m['content'][:2] + '<|im_end|>\\n' }}{%- else %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
        "'<|im_end|>\\n' }}{%- endif %}{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
        "{%- endif %}")
    with pytest.raises(TemplateError, match="turn by turn"):
        make_prompter(CHAT, tokenizer).segments(QUESTION, None, "答案", HISTORY)


# Qwen3's behaviour, reduced: the last assistant turn opens with a think block (empty when there is no reasoning), and
# the generation prompt closes an empty one when enable_thinking is false.
THINKING_TEMPLATE = (
    "{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' }}{%- if m['role'] == 'assistant' and loop.last %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{{ m['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- if enable_thinking is defined and "
    "enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif %}{%- endif %}")


def test_a_thinking_template_trains_and_prompts_without_an_empty_think_block(chat_tokenizer):
    """Qwen3 on data without reasoning: every trained answer started with <think>\\n\\n</think> (LlamaFactory #9392).
    Rendered with enable_thinking false, the empty block is part of the (masked) prompt, never of the answer."""
    import copy

    tokenizer = copy.deepcopy(chat_tokenizer)
    tokenizer.chat_template = THINKING_TEMPLATE
    prompter = make_prompter(CHAT, tokenizer)
    segments = prompter.segments(QUESTION, None, "依据《刑法》第二百六十四条。")
    answers = [text for text, is_response in segments if is_response]
    assert answers == ["依据《刑法》第二百六十四条。<|im_end|>"] and "<think>" in segments[0][0]
    assert prompter.generate_prompt(QUESTION).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_a_think_block_is_never_shown_as_the_answer():
    from utils.inference.stopping import without_thinking

    assert without_thinking("<think>先想一想……</think>\n\n依据《刑法》第二百六十四条。") == "依据《刑法》第二百六十四条。"
    assert without_thinking("<think>still thinking") == ""  # mid-stream: nothing to show yet
    assert without_thinking("依据《刑法》。<think>x</think>") == "依据《刑法》。<think>x</think>"  # only a leading block


def test_engine_with_the_chat_template_stops_on_its_end_of_turn(tiny_chat_model_dir):
    from utils.inference.engine import Engine

    engine = Engine.from_pretrained(str(tiny_chat_model_dir), prompt_template=CHAT)
    end = engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert end in engine.batcher.eos_ids and engine.prompter.name == CHAT
    prompt = engine.prompt(QUESTION)
    assert engine.encode(prompt) == engine.tokenizer.apply_chat_template(
        messages([], None), add_generation_prompt=True, return_dict=True)["input_ids"]
    assert engine.encode(prompt)[0] != engine.tokenizer.bos_token_id  # ChatML has no BOS, none is added
    engine.close()


# ---------------------------------------------------------------- the format travels: finetune → merge → any server


@pytest.fixture(scope="module")
def merged(tiny_model_dir, tmp_path_factory):
    """finetune.py (law_template, 2 steps) then merge_lora.py on the tiny model; returns (adapter, merged) dirs."""
    import json

    import finetune
    import merge_lora

    work = tmp_path_factory.mktemp("roundtrip")
    data = work / "train.jsonl"
    rows = [{"instruction": QUESTION, "input": "", "output": "处三年以下有期徒刑。"},
            {"instruction": "数额巨大呢？", "input": "", "output": "处三年以上十年以下有期徒刑。", "history": [list(HISTORY[0])]}]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows * 4), encoding="utf-8")
    adapter, out = work / "sft", work / "merged"
    finetune.main(*finetune.parse([str(a) for a in [
        "--base_model", tiny_model_dir, "--data_path", data, "--output_dir", adapter, "--max_steps", 2,
        "--micro_batch_size", 2, "--lora_r", 4, "--report_to", "none", "--save_strategy", "no",
        "--prompt_template_name", "law_template"]]))
    merge_lora.main(lora_model=str(adapter), output_dir=str(out))
    return adapter, out


@pytest.mark.slow
def test_finetune_and_merge_write_the_trained_format_into_the_tokenizer(merged):
    from transformers import AutoTokenizer

    from utils.inference.engine import Engine

    adapter, out = merged
    for directory in (adapter, out):  # the adapter's tokenizer and the merged model's carry it
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        for history, system in CONVERSATIONS.values():
            ours = Prompter("law_template").generate_prompt(QUESTION, history=history, system=system)
            rendered = tokenizer.apply_chat_template(messages(history, system), tokenize=False,
                                                     add_generation_prompt=True)
            assert rendered == "<s> " + ours
    engine = Engine.from_pretrained(str(out))  # template from run_info.json: law_template
    served = Engine.from_pretrained(str(out), prompt_template=CHAT)  # the tokenizer's chat_template
    assert engine.prompter.name == "law_template" and served.prompter.name == CHAT
    for history, system in CONVERSATIONS.values():
        ours, theirs = engine.prompt(QUESTION, None, history, system), served.prompt(QUESTION, None, history, system)
        assert engine.encode(ours) == served.encode(theirs)
    assert engine.answer(QUESTION, max_new_tokens=12) == served.answer(QUESTION, max_new_tokens=12, stop=())


@pytest.mark.slow
def test_transformers_serve_prompts_the_merged_model_as_we_do(merged, tmp_path):
    """`transformers serve` on the merged model (offline, CPU): same prompt tokens, same greedy answer."""
    import os
    import socket
    import subprocess
    import time

    from openai import OpenAI

    from utils.inference.engine import Engine, GenerationParams

    _, out = merged
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "OMP_NUM_THREADS": "1"}
    serve = [os.path.join(os.path.dirname(__import__("sys").executable), "transformers"), "serve", str(out),
             "--port", str(port), "--device", "cpu", "--log-level", "error"]
    proc = subprocess.Popen(serve, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
        engine = Engine.from_pretrained(str(out))
        deadline = time.monotonic() + 180
        for history, system in CONVERSATIONS.values():
            while True:
                try:
                    reply = client.chat.completions.create(model=str(out), messages=messages(history, system),
                                                           max_tokens=8, temperature=0)
                    break
                except Exception:  # the server is still starting
                    assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()[-3000:]
                    time.sleep(0.5)
            prompt = engine.prompt(QUESTION, None, history, system)
            ours = engine.generate([prompt], GenerationParams(max_new_tokens=8, repetition_penalty=1.0, stop=()))[0]
            assert reply.usage.prompt_tokens == ours.prompt_tokens  # the served prompt has our tokens …
            assert reply.choices[0].message.content.strip() == ours.text  # … and gives our greedy answer
    finally:
        proc.terminate()
        proc.wait(30)


def test_write_chat_template_tool_makes_a_linked_copy(tiny_model_dir, tmp_path):
    import sys

    from transformers import AutoTokenizer

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent / "tools"))
    import write_chat_template as tool

    out = tmp_path / "served"
    assert tool.main(["--model_dir", str(tiny_model_dir), "--template", "alpaca", "--output_dir", str(out)]) == 0
    assert (out / "model.safetensors").is_symlink() and not (out / "tokenizer_config.json").is_symlink()
    rendered = AutoTokenizer.from_pretrained(str(out)).apply_chat_template(
        messages([], None), tokenize=False, add_generation_prompt=True)
    assert rendered == "<s> " + Prompter("alpaca").generate_prompt(QUESTION)
    assert AutoTokenizer.from_pretrained(str(tiny_model_dir)).chat_template is None  # the source is untouched
    assert tool.main(["--model_dir", str(tiny_model_dir), "--template", "chat"]) == 1
