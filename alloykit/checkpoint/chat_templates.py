"""The recipe's ``chat_template:``: a format name, ``auto``, a Jinja file, a model, or inline text.

The named formats are the ones mergekit ships (``alpaca``, ``chatml``, ``exaone``, ``llama3``,
``mistral``), written here from each format's published prompt layout. ``auto`` takes the
template most of the input models carry (mergekit's rule), and writes none if no model has one.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter
from pathlib import Path

from alloykit.checkpoint.source import locate
from alloykit.errors import CheckpointError, RecipeError

NAMED_TEMPLATES: dict[str, str] = {
    "alpaca": (
        "{{ bos_token }}{% for message in messages %}"
        "{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
        "{% elif message['role'] == 'user' %}"
        "{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
        "{% elif message['role'] == 'assistant' %}"
        "{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
    ),
    "chatml": (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "exaone": (
        "{% for message in messages %}"
        "{% if message['role'] == 'assistant' %}"
        "{{ '[|assistant|]' + message['content'] + '[|endofturn|]\\n' }}"
        "{% else %}{{ '[|' + message['role'] + '|]' + message['content'] }}"
        "{% if message['role'] == 'system' %}{{ '[|endofturn|]' }}{% endif %}{{ '\\n' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
        "{{ message['content'] | trim }}{{ '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "mistral": (
        "{{ bos_token }}{% set pending = namespace(system='') %}"
        "{% for message in messages %}"
        "{% if message['role'] == 'system' %}"
        "{% set pending.system = message['content'] + '\\n\\n' %}"
        "{% elif message['role'] == 'user' %}"
        "{{ '[INST] ' + pending.system + message['content'] + ' [/INST]' }}"
        "{% set pending.system = '' %}"
        "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
        "{% endif %}{% endfor %}"
    ),
}
AUTO = "auto"


def resolve_chat_template(
    value: str, search_dirs: tuple[Path, ...], model_roots: list[Path]
) -> str | None:
    """The Jinja text ``chat_template: value`` stands for; None for ``auto`` when no input
    model has a template."""
    if "{{" in value or "{%" in value:
        return value
    if value in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[value]
    if value == AUTO:
        return _most_common(model_roots)
    try:
        path = locate(value, search_dirs)
    except CheckpointError:
        choices = [*NAMED_TEMPLATES, AUTO]
        close = difflib.get_close_matches(value, choices, n=1)
        suggestion = f"did you mean '{close[0]}'? " if close else ""
        raise RecipeError(
            f"chat_template: unknown template {value!r} (not a name, a file or a model)",
            f"{suggestion}names: {', '.join(choices)}; or a path to a Jinja file, a model "
            "directory, or the Jinja text itself",
        ) from None
    if path.is_file():
        return path.read_text(encoding="utf-8")
    text = template_of(path)
    if text is None:
        raise CheckpointError(
            f"chat_template: model {value!r} has no chat template",
            f"give a template name ({', '.join(NAMED_TEMPLATES)}), a Jinja file, or the text",
        )
    return text


def template_of(root: Path) -> str | None:
    """The chat template a model directory carries (``chat_template.jinja`` or the
    ``chat_template`` of ``tokenizer_config.json``, its ``default`` entry if a list)."""
    jinja = root / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config_path = root / "tokenizer_config.json"
    if not config_path.is_file():
        return None
    template = json.loads(config_path.read_text(encoding="utf-8")).get("chat_template")
    if isinstance(template, list):
        named = {item.get("name"): item.get("template") for item in template}
        template = named.get("default")
    return template if isinstance(template, str) and template.strip() else None


def _most_common(model_roots: list[Path]) -> str | None:
    templates = [text.strip() for root in model_roots if (text := template_of(root))]
    if not templates:
        return None
    return Counter(templates).most_common(1)[0][0]
