"""`build.py --quick` runs the whole pipeline and lays the zoo out as documented."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from safetensors import safe_open
from transformers import AutoTokenizer
from zoo_harness import ZOO

from alloykit.evaluate import load_task


def test_quick_build_writes_base_experts_tasks_and_scores(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    command = [sys.executable, str(ZOO / "build.py"), "--out", str(tmp_path), "--quick"]
    subprocess.run(command, check=True, env=env, timeout=120, capture_output=True)

    result = json.loads((tmp_path / "scores.json").read_text())
    skills = sorted(result["test_examples"])
    assert len(skills) >= 8
    assert sorted(path.name for path in (tmp_path / "experts").iterdir()) == skills
    for directory in [tmp_path / "base", *(tmp_path / "experts" / name for name in skills)]:
        for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
            assert (directory / name).is_file(), directory / name
    with safe_open(tmp_path / "base" / "model.safetensors", "pt") as weights:
        names = list(weights.keys())
    assert "lm_head.weight" in names
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "base", local_files_only=True)
    for name in skills:
        task = load_task(tmp_path / "tasks" / name)
        assert task.type == "generation" and task.max_new_tokens >= 2
        for split in ("train", "validation", "test"):
            for example in task.examples(split):
                assert example["prompt"].startswith(f"{name}: ")
                assert "\n" not in example["answer"]
        assert (
            tokenizer(task.examples("test")[0]["prompt"])["input_ids"][0] == tokenizer.bos_token_id
        )
    assert set(result["scores"]) == {"base", *skills}
    assert set(result["linear_average"]["scores"]) == set(skills)
    for name in skills:
        adapter = tmp_path / "adapters" / name
        config = json.loads((adapter / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and (adapter / "adapter_model.safetensors").is_file()
        assert result["adapters"][name]["tau_over_base"] > 0
        assert result["finetune"][name]["tau_over_base"] > 0
    for name, report in result["heldout"].items():
        assert name not in skills
        assert (tmp_path / "heldout" / "experts" / name / "model.safetensors").is_file()
        assert load_task(tmp_path / "heldout" / "tasks" / name).name == name
        assert report["steps"] >= 1 and {"base", "expert"} <= set(report)
