"""Every entry script and tool answers --help (exit 0, usage text) without loading a model."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [
    "train_clm.py", "finetune.py", "dpo.py", "merge_lora.py", "infer.py", "webui.py", "api.py", "evaluate.py",
    "tools/build_corpus.py", "tools/merge_vocabulary.py", "tools/knowledge_instruct.py", "tools/self_instruct.py",
    "tools/clean_data.py", "tools/prepare_lawbench.py", "tools/check_citations.py", "tools/fetch_demo_model.py",
    "tools/build_dense_index.py", "tools/write_chat_template.py", "tools/preference_data.py",
]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    result = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**__import__("os").environ, "PAGER": "cat"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    text = result.stdout + result.stderr
    assert "usage" in text.lower() or "SYNOPSIS" in text or "NAME" in text
    assert "Traceback" not in text
