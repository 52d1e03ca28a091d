"""merge_lora.py on the tiny LLaMA with adapters made here by peft (nonzero LoRA B, so merging matters)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import merge_lora
from utils.model.loader import load_for_inference, read_run_info, write_run_info

ROOT = Path(__file__).resolve().parent.parent
NEW_TOKENS = ["入户盗窃", "劳动合同法", "诈骗罪名", "民间借贷"]


def make_adapter(base_dir: Path, out: Path, extend: bool = False, base_model=None, save_embeddings=None) -> Path:
    """A trained-looking adapter: random LoRA B (and perturbed embeddings when the vocabulary grew)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from utils.model.loader import load_tokenizer

    torch.manual_seed(1)
    tokenizer = load_tokenizer(base_dir)
    model = base_model if base_model is not None else AutoModelForCausalLM.from_pretrained(str(base_dir))
    if extend:
        assert tokenizer.add_tokens(NEW_TOKENS) == len(NEW_TOKENS)
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                        modules_to_save=["embed_tokens", "lm_head"] if (save_embeddings or extend) else None)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
            elif "modules_to_save" in name:
                param.add_(torch.randn_like(param) * 0.05)
    peft_model.save_pretrained(str(out))
    if extend:
        tokenizer.save_pretrained(str(out))
    write_run_info(out, {"base_model": str(base_dir), "prompt_template": "law_template"})
    return out


def logits(loaded, text: str, extra_ids=()):
    ids = loaded.tokenizer(text)["input_ids"] + list(extra_ids)
    with torch.inference_mode():
        return loaded.model(input_ids=torch.tensor([ids])).logits


def tied_copy(model_dir: Path, out: Path) -> Path:
    """The tiny model with tied input/output embeddings (as Gemma, the demo model, has)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shutil.copytree(model_dir, out)
    config = LlamaConfig.from_pretrained(str(out))
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(out))
    return out


@pytest.mark.parametrize("extend,tied", [(False, False), (True, False), (True, True)],
                         ids=["lora-qv", "extended-vocab", "extended-vocab-tied-embeddings"])
def test_merged_model_reproduces_the_adapter(tiny_model_dir, tmp_path, extend, tied):
    if tied:  # separately trained embed_tokens/lm_head copies must not be tied back together on reload
        tiny_model_dir = tied_copy(tiny_model_dir, tmp_path / "tied-base")
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", extend=extend)
    out = tmp_path / "merged"
    result = merge_lora.main(lora_model=str(adapter), output_dir=str(out))  # base from run_info.json
    assert result["max_abs_diff"] <= 1e-3 and result["reloaded_max_abs_diff"] <= 1e-3

    assert list(out.glob("*.safetensors")) and (out / "tokenizer_config.json").is_file()
    assert not list(tmp_path.glob(".merged.*")), "the temporary directory must be renamed into place"
    info = read_run_info(out)
    assert info["merged_from"] == {"base_model": str(tiny_model_dir), "lora_model": str(adapter)}
    assert info["prompt_template"] == "law_template" and info["adapter_effect_max_abs_logit"] > 0.05
    assert info["tie_word_embeddings"] is False

    merged = load_for_inference(str(out))
    with_adapter = load_for_inference(str(tiny_model_dir), str(adapter))
    assert len(merged.tokenizer) == len(with_adapter.tokenizer) == 2000 + (len(NEW_TOKENS) if extend else 0)
    text = "入户盗窃的，依照劳动合同法处理。" if extend else "盗窃公私财物，数额较大的。"
    new_ids = range(2000, 2000 + len(NEW_TOKENS)) if extend else ()
    a, b = logits(merged, text, new_ids), logits(with_adapter, text, new_ids)
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    base = load_for_inference(str(tiny_model_dir))
    plain = "盗窃公私财物，数额较大的。"
    change = logits(merged, plain)[..., :2000] - logits(base, plain)
    assert change.abs().max() > 1e-2, "the merge must change the model"


def test_refuses_non_empty_output_unless_overwrite(tiny_model_dir, tmp_path):
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    with pytest.raises(merge_lora.MergeError, match="not empty: pass --overwrite"):
        merge_lora.main(lora_model=str(adapter), output_dir=str(out))
    assert (out / "keep.txt").is_file()
    merge_lora.main(lora_model=str(adapter), output_dir=str(out), overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "run_info.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "merged"]
    with pytest.raises(merge_lora.MergeError, match="inside"):
        merge_lora.main(lora_model=str(adapter), output_dir=str(adapter / "merged"))


def test_fails_above_tolerance_and_writes_nothing(tiny_model_dir, tmp_path):
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter")
    with pytest.raises(merge_lora.MergeError, match="nothing written"):
        merge_lora.main(lora_model=str(adapter), output_dir=str(tmp_path / "merged"), tolerance=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]


def _other_model(vocab_size=2000, hidden_size=64):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=128,
                                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                        tie_word_embeddings=False))


@pytest.mark.parametrize(
    "other", [{"hidden_size": 32}, {"vocab_size": 3000}], ids=["other-hidden-size", "other-vocabulary"]
)
def test_refuses_a_mismatched_adapter_with_one_clear_line(tiny_model_dir, tmp_path, other):
    # Trained on another model, but its run_info.json (wrongly) names our tiny model as the base.
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", base_model=_other_model(**other),
                           save_embeddings="vocab_size" in other)
    done = subprocess.run([sys.executable, str(ROOT / "merge_lora.py"), "--lora_model", str(adapter),
                           "--output_dir", str(tmp_path / "merged")], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("merge_lora: error:") and "does not fit base model" in last
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "merged").exists()
