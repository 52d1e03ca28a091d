"""finetune.py end to end on the tiny model: adapter, run_info, resume, the original command line, errors."""

import json
import os
import subprocess
import sys

import pytest

import finetune
from utils.model.loader import read_run_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "train.jsonl"
    items = json.loads(open(os.path.join(ROOT, "resources", "example_instruction_tune.json"), encoding="utf-8").read())
    items.append({"instruction": "那么盗窃数额巨大呢？", "input": "", "output": "处三年以上十年以下有期徒刑，并处罚金。",
                  "history": [["盗窃罪如何处罚？", "处三年以下有期徒刑、拘役或者管制。"]]})
    with open(path, "w", encoding="utf-8") as f:
        for item in items * 2:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    return path


def run(*argv):
    return finetune.main(*finetune.parse([str(a) for a in argv]))


def common(tiny_model_dir, data, out, *extra):
    return ["--base_model", tiny_model_dir, "--data_path", data, "--output_dir", out, "--cutoff_len", 128,
            "--batch_size", 4, "--micro_batch_size", 2, "--lora_r", 4, "--report_to", "none", "--logging_steps", 1,
            "--seed", 3, *extra]


def test_adapter_and_run_info_let_inference_find_everything(tiny_model_dir, data, tmp_path, monkeypatch):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from utils.model.loader import load_for_inference
    from utils.training import length_grouped_sampler as sampling

    drawn = []  # --group_by_length goes through our sampler (batches in random order, utils/training/length_grouped_sampler.py)
    real_iter = sampling.ShuffledLengthGroupedSampler.__iter__
    monkeypatch.setattr(sampling.ShuffledLengthGroupedSampler, "__iter__",
                        lambda self: iter(drawn.extend(list(real_iter(self))) or drawn[-len(self):]))
    out = tmp_path / "sft"
    run(*common(tiny_model_dir, data, out, "--max_steps", 3, "--val_set_size", 2, "--cutoff_len", 512,
                "--prompt_template_name",
                "law_template", "--group_by_length", "True", "--save_strategy", "no", "--report_to", "tensorboard"))
    info = read_run_info(out)
    for key in ("base_model", "tokenizer", "prompt_template", "data_files", "data_sha256", "args", "train_loss",
                "eval_loss", "perplexity", "global_step", "examples"):
        assert key in info, key
    assert info["base_model"] == str(tiny_model_dir.resolve()) and info["prompt_template"] == "law_template"
    assert info["examples"] == {"train": 10, "eval": 2, "left_out_no_answer": 0} and info["global_step"] == 3
    assert info["args"]["train_sampling_strategy"] == "group_by_length" and info["args"]["train_on_inputs"] is False
    assert sorted(drawn[:10]) == list(range(10))
    assert (out / "adapter_model.safetensors").is_file() and (out / "loss_curve.png").is_file()
    assert any((out / "runs").rglob("events.out.tfevents.*"))
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model = PeftModel.from_pretrained(base, str(out))
    assert any("lora_A" in name for name, _ in model.named_parameters())
    loaded = load_for_inference(lora_weights=str(out))  # no base model, no template given
    assert loaded.base_model == str(tiny_model_dir.resolve()) and loaded.prompt_template == "law_template"
    ids = torch.tensor([loaded.tokenizer("盗窃罪").input_ids])
    torch.testing.assert_close(loaded.model(ids).logits, model(ids).logits)


def test_resume_continues_from_the_checkpoint(tiny_model_dir, data, tmp_path):
    out = tmp_path / "r"
    run(*common(tiny_model_dir, data, out, "--max_steps", 2, "--save_steps", 2))
    run(*common(tiny_model_dir, data, out, "--max_steps", 4, "--save_steps", 2, "--resume_from_checkpoint", out))
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert read_run_info(out)["global_step"] == 4 and steps == [1, 2, 3, 4]


def _cli(*argv, cwd=ROOT):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    return subprocess.run([*map(str, argv)], cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_original_finetune_sh_command_line_runs_unchanged(tiny_model_dir, data, tmp_path):
    # LaWGPT's scripts/finetune.sh (multi-GPU variant's value-less wandb flags), only the paths replaced.
    out = tmp_path / "outputs" / "chinese-alpaca-plus-7b-law-e1"
    script = f"""
{sys.executable} {ROOT}/finetune.py \\
    --base_model "{tiny_model_dir}" \\
    --data_path "{data}" \\
    --output_dir "{out}" \\
    --batch_size 64 \\
    --micro_batch_size 8 \\
    --num_epochs 20 \\
    --learning_rate 3e-4 \\
    --cutoff_len 256 \\
    --val_set_size 0 \\
    --lora_r 8 \\
    --lora_alpha 16 \\
    --lora_dropout 0.05 \\
    --lora_target_modules "[q_proj,v_proj]" \\
    --train_on_inputs True \\
    --add_eos_token True \\
    --group_by_length False \\
    --wandb_project \\
    --wandb_run_name \\
    --wandb_watch \\
    --wandb_log_model \\
    --resume_from_checkpoint "{out}" \\
    --prompt_template_name "alpaca" \\
"""
    proc = _cli("bash", "-c", script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = read_run_info(out)
    assert info["args"]["gradient_accumulation_steps"] == 8 and info["args"]["per_device_train_batch_size"] == 8
    assert info["args"]["num_train_epochs"] == 20 and info["prompt_template"] == "alpaca"
    assert "wandb" not in info["args"]["report_to"] and info["args"]["train_on_inputs"] is True


def test_bad_data_exits_nonzero_with_one_line(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[\n  {"instruction": "问", "output": "答"},\n  {"instruction": "问"}\n]\n', encoding="utf-8")
    proc = _cli(sys.executable, "finetune.py", "--base_model", tiny_model_dir, "--output_dir", tmp_path / "o",
                "--report_to", "none", "--data_path", bad)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines()[-1] == f"finetune: error: {bad}:3: missing field 'output'"


@pytest.mark.parametrize("targets", ["all-linear", "[all-linear]", "'all-linear'"])
def test_all_linear_adapts_every_linear_layer_but_the_head(tiny_model_dir, data, tmp_path, targets):
    # peft's keyword (LLaMA-Factory's `lora_target: all`), in every spelling our list parser accepts
    from safetensors.torch import load_file

    out = tmp_path / "all"
    run(*common(tiny_model_dir, data, out, "--max_steps", 1, "--save_strategy", "no", "--lora_target_modules", targets))
    resolved = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert read_run_info(out)["lora_target_modules"] == resolved
    adapted = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in load_file(str(out / "adapter_model.safetensors"))}
    assert adapted == set(resolved)  # not lm_head, not the embeddings


@pytest.mark.parametrize("problem", ["unknown_template", "8bit_on_cpu", "bad_batch", "no_answer_fits", "bad_target",
                                     "all_linear_and_more", "chat_without_template"])
def test_argument_errors_are_one_line(tiny_model_dir, data, tmp_path, capsys, problem):
    from utils.common.entry import run_entry

    extra, expected = {
        "unknown_template": (["--prompt_template_name", "nope"], "unknown prompt template 'nope'"),
        "8bit_on_cpu": (["--load_8bit", "True"], "--load_8bit needs a CUDA GPU"),
        "bad_batch": (["--batch_size", "5"], "--batch_size 5 is not a multiple of micro batch 2"),
        "no_answer_fits": (["--cutoff_len", "8"], "no example keeps an answer token within --cutoff_len"),
        "bad_target": (["--lora_target_modules", "[q_proj,wrong_proj]"], "['wrong_proj'] not in LlamaForCausalLM"),
        "all_linear_and_more": (["--lora_target_modules", "[all-linear,q_proj]"], "'all-linear' already covers"),
        "chat_without_template": (["--prompt_template_name", "chat"],
                                  f"the tokenizer of {tiny_model_dir} has no chat_template"),
    }[problem]
    argv = [str(a) for a in common(tiny_model_dir, data, tmp_path / "o", *extra)]
    assert run_entry("finetune", lambda: finetune.main(*finetune.parse(argv))) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("finetune: error:") and expected in err, err


def test_chat_template_trains_a_chat_model_in_its_own_format(tiny_chat_model_dir, data, tmp_path):
    from tiny_model import CHATML_TEMPLATE
    from transformers import AutoTokenizer

    from utils.inference.engine import Engine

    out = tmp_path / "chat"
    run(*common(tiny_chat_model_dir, data, out, "--max_steps", 1, "--save_strategy", "no",
                "--prompt_template_name", "chat", "--system_prompt", "你是一名律师。"))
    info = read_run_info(out)
    assert info["prompt_template"] == "chat" and info["system_prompt"] == "你是一名律师。"
    assert AutoTokenizer.from_pretrained(str(out)).chat_template == CHATML_TEMPLATE  # its own template, untouched
    engine = Engine.from_pretrained(lora_weights=str(out))  # template and system prompt from run_info.json
    assert engine.prompt("问题").startswith("<|im_start|>system\n你是一名律师。<|im_end|>\n<|im_start|>user\n问题")
    engine.close()


def test_system_prompt_with_our_template_becomes_the_jinja_default(tiny_model_dir, data, tmp_path):
    from transformers import AutoTokenizer

    from utils.model.prompter import Prompter

    out = tmp_path / "sys"
    run(*common(tiny_model_dir, data, out, "--max_steps", 1, "--save_strategy", "no", "--system_prompt", "你是律师。"))
    rendered = AutoTokenizer.from_pretrained(str(out)).apply_chat_template(
        [{"role": "user", "content": "问题"}], tokenize=False, add_generation_prompt=True)
    assert rendered == "<s> " + Prompter("law_template", default_system="你是律师。").generate_prompt("问题")


def test_a_tokenizer_larger_than_the_embedding_matrix_trains_and_serves(tiny_model_dir, data, tmp_path, capsys):
    """Some checkpoints ship a tokenizer with ids past their embedding matrix: finetune.py stopped with 'base pieces
    outside the base vocabulary'. Now it says what is wrong, grows the matrix (new rows at the mean of the others, as
    transformers' resize_token_embeddings does) and the adapter serves."""
    import shutil

    from utils.model.loader import load_for_inference, load_tokenizer

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    tokenizer = load_tokenizer(model)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|reserved_0|>", "<|reserved_1|>"]})
    tokenizer.save_pretrained(model)
    out = tmp_path / "sft"
    run(*common(model, data, out, "--max_steps", 1))
    assert "the model's own tokenizer has" in capsys.readouterr().err
    loaded = load_for_inference(str(model), str(out))
    assert loaded.model.get_input_embeddings().weight.shape[0] == len(loaded.tokenizer) == len(tokenizer)
