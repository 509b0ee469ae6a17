"""``chat_template:`` by format name, ``auto`` (the input models' most common), file, model
or inline text; an unknown name is an error listing the names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment

import alloykit
from alloykit.checkpoint.chat_templates import NAMED_TEMPLATES, resolve_chat_template
from alloykit.errors import RecipeError

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"},
]


def render(template: str, **extra: object) -> str:
    """Rendered as transformers renders chat templates (sandboxed, trim_blocks, lstrip_blocks)."""
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    values = {"bos_token": "<s>", "eos_token": "</s>", "add_generation_prompt": True, **extra}
    return environment.from_string(template).render(messages=CONVERSATION, **values)


def model_with_template(directory: Path, template: str | None) -> Path:
    directory.mkdir()
    config = {} if template is None else {"chat_template": template}
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return directory


def test_chatml_renders_im_start_turns():
    assert render(NAMED_TEMPLATES["chatml"]) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_llama3_renders_header_and_eot_tokens():
    assert render(NAMED_TEMPLATES["llama3"]) == (
        "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_mistral_puts_the_system_prompt_in_the_first_instruction():
    assert render(NAMED_TEMPLATES["mistral"]) == (
        "<s>[INST] Be brief.\n\nHi [/INST]Hello</s>[INST] Bye [/INST]"
    )


def test_alpaca_renders_instruction_and_response_sections():
    assert render(NAMED_TEMPLATES["alpaca"]) == (
        "<s>Be brief.\n\n### Instruction:\nHi\n\n### Response:\nHello</s>\n\n"
        "### Instruction:\nBye\n\n### Response:\n"
    )


def test_exaone_renders_its_role_tags():
    assert render(NAMED_TEMPLATES["exaone"]) == (
        "[|system|]Be brief.[|endofturn|]\n[|user|]Hi\n[|assistant|]Hello[|endofturn|]\n"
        "[|user|]Bye\n[|assistant|]"
    )


@pytest.mark.parametrize("name", sorted(NAMED_TEMPLATES))
def test_a_name_resolves_to_its_template(name):
    assert resolve_chat_template(name, (), []) == NAMED_TEMPLATES[name]


def test_inline_jinja_is_taken_as_is():
    text = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert resolve_chat_template(text, (), []) == text


def test_a_jinja_file_is_read_relative_to_the_recipe(tmp_path):
    (tmp_path / "mine.jinja").write_text("{{ messages[0]['content'] }}")
    assert resolve_chat_template("mine.jinja", (tmp_path,), []) == "{{ messages[0]['content'] }}"


def test_a_model_directory_gives_its_template(tmp_path):
    model = model_with_template(tmp_path / "m", "{{ 'x' }}")
    assert resolve_chat_template(str(model), (), []) == "{{ 'x' }}"


def test_auto_takes_the_template_most_input_models_carry(tmp_path):
    roots = [
        model_with_template(tmp_path / "a", "{{ 'B' }}"),
        model_with_template(tmp_path / "b", "{{ 'A' }}\n"),
        model_with_template(tmp_path / "c", "{{ 'A' }}"),
        model_with_template(tmp_path / "d", None),
    ]
    assert resolve_chat_template("auto", (), roots) == "{{ 'A' }}"


def test_auto_without_any_template_among_the_models_gives_none(tmp_path):
    roots = [model_with_template(tmp_path / "a", None)]
    assert resolve_chat_template("auto", (), roots) is None


def test_an_unknown_name_lists_the_names_and_suggests_the_closest():
    with pytest.raises(RecipeError) as caught:
        resolve_chat_template("chatmll", (), [])
    assert caught.value.message.startswith("chat_template: unknown template 'chatmll'")
    assert "did you mean 'chatml'?" in caught.value.hint
    assert "alpaca, chatml, exaone, llama3, mistral, auto" in caught.value.hint


def test_a_merge_writes_the_named_template(llama, tmp_path):
    recipe = {
        "merge_method": "linear",
        "models": [{"model": str(llama["ft1"])}, {"model": str(llama["ft2"])}],
        "chat_template": "llama3",
    }
    out = alloykit.merge(recipe, tmp_path / "out")
    assert (out / "chat_template.jinja").read_text() == NAMED_TEMPLATES["llama3"]


def test_an_unknown_name_is_refused_when_planning(llama):
    recipe = {
        "merge_method": "linear",
        "models": [{"model": str(llama["ft1"])}, {"model": str(llama["ft2"])}],
        "chat_template": "vicuna",
    }
    with pytest.raises(RecipeError):
        alloykit.plan(recipe)
