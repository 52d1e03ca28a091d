"""Tokenisation for training: SFT label masking (utils.common.datafiles.sft_example) and packing into blocks (the streaming
packer; the cached path is tested against a reference in tests/test_train_data.py)."""

import pytest

from utils.common.datafiles import IGNORE_INDEX, sft_example, truncate_documents
from utils.model.prompter import Prompter
from utils.training.streamed_blocks import iter_blocks
from utils.training.tokenized_data import document_ids

OUTPUT = "依据《中华人民共和国刑法》第二百六十四条，处三年以下有期徒刑、拘役或者管制。"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from utils.model.loader import load_tokenizer

    return load_tokenizer(tiny_model_dir, padding_side="right")


@pytest.fixture(scope="module")
def prompter():
    return Prompter("law_template")


@pytest.mark.parametrize("with_input", [False, True])
@pytest.mark.parametrize("train_on_inputs", [False, True])
def test_prompt_tokens_are_masked_and_answer_kept(tokenizer, prompter, with_input, train_on_inputs):
    segments = prompter.segments("盗窃罪如何处罚？", "张三入户盗窃" if with_input else None, OUTPUT)
    prompt = segments[0][0]
    ex = sft_example(tokenizer, segments, cutoff_len=1024, train_on_inputs=train_on_inputs)
    ids, labels = ex["input_ids"], ex["labels"]
    n_prompt = len(tokenizer(prompt).input_ids)  # BOS + the prompt, tokenised on its own
    assert ids[:n_prompt] == tokenizer(prompt).input_ids and ids[-1] == tokenizer.eos_token_id
    assert len(ids) == len(labels) == len(ex["attention_mask"])
    if train_on_inputs:
        assert labels == ids
    else:
        assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert labels[n_prompt:] == ids[n_prompt:]
        assert tokenizer.decode(labels[n_prompt:-1]) == OUTPUT
    assert ("材料" in tokenizer.decode(ids)) == with_input


def test_eos_switch(tokenizer, prompter):
    segments = prompter.segments("问题", None, OUTPUT)
    with_eos = sft_example(tokenizer, segments, 1024, add_eos_token=True)
    without = sft_example(tokenizer, segments, 1024, add_eos_token=False)
    assert with_eos["input_ids"] == without["input_ids"] + [tokenizer.eos_token_id]
    assert with_eos["labels"][-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in without["input_ids"]


@pytest.mark.parametrize("train_on_inputs", [False, True])
def test_truncation_at_cutoff_len(tokenizer, prompter, train_on_inputs):
    segments = prompter.segments("盗窃罪如何处罚？", None, OUTPUT * 5)
    full = sft_example(tokenizer, segments, 4096, train_on_inputs)
    n_prompt = len(tokenizer(segments[0][0]).input_ids)
    cut = sft_example(tokenizer, segments, n_prompt + 10, train_on_inputs)
    assert cut["input_ids"] == full["input_ids"][: n_prompt + 10]  # cut, and no EOS on a cut-off answer
    assert cut["labels"] == full["labels"][: n_prompt + 10] and tokenizer.eos_token_id not in cut["input_ids"]
    only_prompt = sft_example(tokenizer, segments, n_prompt - 3, train_on_inputs)
    assert len(only_prompt["input_ids"]) == n_prompt - 3
    assert all(t == IGNORE_INDEX for t in only_prompt["labels"]) != train_on_inputs


def test_multi_turn_history_answers_are_trained(tokenizer, prompter):
    history = [("什么是犯罪？", "犯罪是危害社会的行为。"), ("犯罪要承担什么责任？", "刑事责任。")]
    segments = prompter.segments("盗窃罪如何处罚？", None, OUTPUT, history)
    ex = sft_example(tokenizer, segments, 2048)
    trained = [t for t in ex["labels"] if t != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "犯罪是危害社会的行为。\n刑事责任。\n" + OUTPUT + tokenizer.eos_token
    masked = tokenizer.decode([i for i, t in zip(ex["input_ids"], ex["labels"]) if t == IGNORE_INDEX],
                              skip_special_tokens=True)
    assert "什么是犯罪" in masked and "盗窃罪如何处罚" in masked and "刑事责任" not in masked


def test_packing_keeps_every_token(tokenizer):
    docs = ["第一条 为了保护公民的合法权益，制定本法。" * 7, "第二条 本法适用于中华人民共和国领域内。", "第三条 附则。" * 30]
    per_doc = document_ids(tokenizer, docs)
    assert all(ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id for ids in per_doc)
    assert [tokenizer.decode(ids, skip_special_tokens=True) for ids in per_doc] == docs  # nothing truncated
    blocks = list(iter_blocks(per_doc, 32))
    stream = [t for ids in per_doc for t in ids]
    assert [t for b in blocks for t in b] == stream
    assert all(len(b) == 32 for b in blocks[:-1]) and 0 < len(blocks[-1]) <= 32
    cut = truncate_documents(per_doc, 32)
    assert sum(map(len, cut)) < len(stream)  # the original's way loses the tails
