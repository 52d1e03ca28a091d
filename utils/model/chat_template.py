"""Chat templates in both directions: the tokenizer's own, and ours written into a trained tokenizer.

- ``--prompt_template chat`` (:data:`CHAT`) means "the model's own Jinja ``chat_template``" (Qwen, Gemma,
  Llama instruct …). :class:`ChatPrompter` puts it behind :class:`~utils.model.prompter.Prompter`'s interface
  (``generate_prompt``, ``segments``, ``stop``), so the engine, finetune.py and the API use either alike.
  Its ``segments`` find the assistant turns by rendering the conversation turn by turn (never by guessing
  marker strings): a turn's tokens are what rendering it adds after the generation prompt, up to its
  end-of-turn marker, which is trained too — that is how the model learns to stop.
- :func:`jinja_template` turns one of our json templates into an equivalent Jinja ``chat_template``, and
  :func:`write_chat_template` stores it in a tokenizer; finetune.py and merge_lora.py do that for every model
  they save, so ``transformers serve``, vLLM, llama.cpp and Ollama prompt it exactly as it was trained.
  ``apply_chat_template(messages, add_generation_prompt=True)`` then renders the BOS token, followed by
  Prompter's text byte for byte, and tokenises (``add_special_tokens=False``, as those servers do) to the
  ids our engine feeds the model. A system message replaces the template's system text (plus a newline);
  the response marker belongs to the user turn, so ``add_generation_prompt`` adds nothing.

:func:`make_prompter` picks the right prompter for a template name.
"""

from __future__ import annotations

import string

from utils.model.prompter import Prompter, TemplateError, available_templates

CHAT = "chat"  # the template name meaning: the tokenizer's own chat_template
_PROBE_Q, _PROBE_A = "PROBE_QUESTION_7f3a", "PROBE_ANSWER_7f3a"


def make_prompter(name: str, tokenizer=None, system: str | None = None, where: str = "the model"):
    """A :class:`Prompter` for one of our templates, or a :class:`ChatPrompter` for ``chat``."""
    if name == CHAT:
        if tokenizer is None:
            raise TemplateError("the chat template is the tokenizer's own: a tokenizer is needed")
        return ChatPrompter(tokenizer, system, where)
    return Prompter(name, default_system=system)


def user_content(instruction: str, input: str | None) -> str:
    """One user message from our (instruction, input) pair: the input (case material, statutes) follows."""
    return f"{instruction}\n\n{input}" if input else instruction


class ChatPrompter:
    """The tokenizer's ``chat_template`` with Prompter's interface (see the module docstring)."""

    add_special_tokens = False  # the template writes BOS and turn markers itself (as transformers serve and vLLM tokenise)

    thinking = False  # our data has no reasoning: thinking templates render without it (see render)

    def __init__(self, tokenizer, system: str | None = None, where: str = "the model"):
        self.name = CHAT
        self.tokenizer = tokenizer
        self.default_system = system
        self.where = where
        self.description = "the tokenizer's own chat_template"
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(f"--prompt_template {CHAT}: the tokenizer of {where} has no chat_template; use one of "
                                f"our templates ({', '.join(available_templates())}) or a chat model's tokenizer")
        user = [{"role": "user", "content": _PROBE_Q}]
        before = self.render(user, True)
        full = self.render(user + [{"role": "assistant", "content": _PROBE_A}], False)
        if not full.startswith(before) or _PROBE_A not in full[len(before):]:
            raise TemplateError(f"the chat template of {where} does not render an assistant turn after its "
                                "generation prompt; it cannot be used for chat or training")
        self.turn_end = full[len(before):].split(_PROBE_A, 1)[1]  # e.g. "<|im_end|>\n", "<end_of_turn>\n", ""
        marker = self.turn_end.strip()
        first = tokenizer(marker, add_special_tokens=False)["input_ids"][:1] if marker else []
        special = bool(first) and _is_special(tokenizer, first[0])
        self.stop_token_ids: tuple[int, ...] = tuple(first) if special else ()  # generation ends on this token
        self.stop: list[str] = [marker] if marker and not special else []
        self.needs_eos = not special  # a turn closed by a special token needs no EOS after it

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        from jinja2 import TemplateError as JinjaError

        try:
            # enable_thinking=False: a thinking template (Qwen3) then closes an empty think block inside the generation
            # prompt, so trained answers and generated ones start with the answer, not with <think></think>
            # (hiyouga/LlamaFactory #9392); templates without the variable ignore it.
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=add_generation_prompt,
                                                      enable_thinking=self.thinking)
        except (JinjaError, ValueError, TypeError, KeyError) as e:
            raise TemplateError(f"the chat template of {self.where} failed to render: {e}") from e

    def messages(self, instruction: str, input: str | None = None, history=None, system: str | None = None,
                 output: str | None = None) -> list[dict]:
        system = self.default_system if system is None else system
        out = [{"role": "system", "content": system}] if system is not None else []
        for question, answer in history or []:
            out += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        out.append({"role": "user", "content": user_content(instruction, input)})
        if output is not None:
            out.append({"role": "assistant", "content": output})
        return out

    def generate_prompt(self, instruction: str, input: str | None = None, label: str | None = None,
                        history=None, system: str | None = None) -> str:
        return self.render(self.messages(instruction, input, history, system, label), label is None)

    def segments(self, instruction: str, input: str | None = None, output: str | None = None, history=None,
                 system: str | None = None) -> list[tuple[str, bool]]:
        """``(text, is_response)`` pieces; a response is an assistant turn's content and its end-of-turn marker.

        Each span comes from two renderings: the conversation before the turn with the generation prompt,
        and up to the turn. Text after the last turn's marker (usually a newline) is left out.
        """
        msgs = self.messages(instruction, input, history, system, output)
        if output is None:
            return [(self.render(msgs, True), False)]
        full = self.render(msgs, False)
        pieces, pos = [], 0
        for k, message in enumerate(msgs):
            if message["role"] != "assistant":
                continue
            before = self.render(msgs[:k], True)
            upto = self.render(msgs[:k + 1], False)
            end = len(upto.rstrip())
            if not (upto.startswith(before) and full.startswith(upto) and pos <= len(before) < end):
                raise TemplateError(
                    f"the chat template of {self.where} does not render a conversation turn by turn (an earlier turn "
                    "changes once a later one is added), so the assistant's tokens cannot be told apart; train with "
                    f"one of our templates ({', '.join(available_templates())}) instead")
            pieces += [(full[pos:len(before)], False), (full[len(before):end], True)]
            pos = end
        return pieces


def _is_special(tokenizer, token_id: int) -> bool:
    added = tokenizer.added_tokens_decoder.get(token_id)
    return token_id in tokenizer.all_special_ids or (added is not None and added.special)


# ---------------------------------------------------------------- our json templates as Jinja


def _literal(text: str) -> str:
    """A Jinja string literal for ``text`` (only the escapes every Jinja implementation knows)."""
    for raw, escaped in (("\\", "\\\\"), ("'", "\\'"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        text = text.replace(raw, escaped)
    return f"'{text}'"


def _turn_expression(fmt: str) -> str:
    """``prompt_no_input`` ("### 问题:\\n{instruction}\\n### 回答:\\n") as a Jinja expression over the message."""
    parts = []
    for literal, name, spec, conversion in string.Formatter().parse(fmt):
        if literal:
            parts.append(_literal(literal))
        if name is not None:
            if spec or conversion:
                raise TemplateError(f"{{{name}}} with a format spec or conversion cannot be written as Jinja")
            parts.append("message['content']")
    return " + ".join(parts) or "''"


def bos_prefix(tokenizer) -> str | None:
    """What the template must print first so that tokenising without special tokens gives our prompt's ids.

    None when the tokenizer adds no BOS. A sentencepiece LLaMA tokenizer puts "▁" before the first piece of the
    text but not after a BOS written as text, so there the BOS is followed by a space (tested on a probe).
    """
    probe = Prompter("law_template").generate_prompt("盗窃罪如何处罚？")
    want = tokenizer(probe)["input_ids"]
    bos = tokenizer.bos_token
    if not want or bos is None or want[0] != tokenizer.bos_token_id:
        return None
    for prefix in (bos, bos + " "):
        if tokenizer(prefix + probe, add_special_tokens=False)["input_ids"] == want:
            return prefix
    raise TemplateError(f"cannot write a chat template for this tokenizer: neither {bos!r} nor {bos + ' '!r} before "
                        "a prompt tokenises to the ids the model is trained on")


def jinja_template(prompter: Prompter, bos: str | None) -> str:
    """A Jinja chat_template rendering what ``prompter`` renders (see the module docstring)."""
    start = ""
    if bos is not None:
        start = "{{- bos_token -}}" + ("{{- ' ' -}}" if bos.endswith(" ") else "")
    return (
        f"{{#- LaWGPT prompt template {prompter.name!r}, written by utils/model/chat_template.py: renders exactly what "
        "utils/model/prompter.py renders for the model's training. -#}\n"
        "{%- if messages and messages[0]['role'] == 'system' -%}\n"
        "{%- set system_text = messages[0]['content'] + '\\n' -%}\n"
        "{%- set turns = messages[1:] -%}\n"
        "{%- else -%}\n"
        f"{{%- set system_text = {_literal(prompter.system)} -%}}\n"
        "{%- set turns = messages -%}\n"
        "{%- endif -%}\n"
        f"{start}{{{{- system_text -}}}}\n"
        "{%- for message in turns -%}\n"
        "{%- if message['role'] == 'user' -%}\n"
        f"{{{{- {_turn_expression(prompter.prompt_no_input)} -}}}}\n"
        "{%- elif message['role'] == 'assistant' -%}\n"
        "{{- message['content'] -}}{%- if not loop.last -%}{{- '\\n' -}}{%- endif -%}\n"
        "{%- else -%}\n"
        "{{- raise_exception('this template knows the roles system (first only), user and assistant') -}}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
    )


def write_chat_template(tokenizer, template: str, system: str | None = None) -> bool:
    """Store the Jinja of ``template`` in ``tokenizer.chat_template`` (saved by ``save_pretrained``).

    ``chat`` leaves the tokenizer's own template as it is; returns whether a template was written.
    """
    if template == CHAT:
        return False
    tokenizer.chat_template = jinja_template(Prompter(template, default_system=system), bos_prefix(tokenizer))
    return True
