"""Problem text -> chat-formatted prompt -> token ids.

``prompt_file`` is a format string with one ``{}`` where the raw problem goes (seed 003, 5.1);
the optional system prompt comes first; the tokenizer's chat template (or ``tokenizer.chat_template``
with ``chat_template_kwargs`` such as ``enable_thinking``) renders the conversation with the
assistant generation prompt appended.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_distill.config.errors import DataError
from nemo_distill.data.datasets import ProblemRecord, resolve_repo_path


@dataclass
class ProcessedPrompt:
    """One problem ready for generation (token ids) and for logging (texts)."""

    record: ProblemRecord  # where it came from (problem, gold answer, id)
    user_message: str  # prompt_file.format(problem), or the raw problem
    prompt_text: str  # the full chat-formatted prompt, ending with the assistant turn's opening
    prompt_token_ids: list[int]  # token ids of prompt_text, never truncated
    # More than max_input_seq_length tokens. Such a prompt is kept whole (cutting it would change
    # the question) and the caller gives its samples sample mask 0 and counts them.
    too_long: bool


def load_prompt_file(path: str) -> str:
    """A prompt template with exactly one ``{}``; the error names the file."""
    resolved = resolve_repo_path(path)
    if not resolved.is_file():
        raise FileNotFoundError(f"prompt file {path} does not exist (data.*.prompt_file)")
    template = _read_text(resolved, "data.*.prompt_file")
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:  # e.g. a lone '{' -- literal braces must be doubled: '{{' '}}'
        raise DataError(f"prompt file {resolved} is not a valid format string ({err}); write literal braces as '{{{{' and '}}}}'") from None
    if fields != [""]:
        raise DataError(
            f"prompt file {resolved} must contain exactly one '{{}}' placeholder for the problem; found "
            f"{len(fields)} placeholder(s) {['{' + name + '}' for name in fields]} (literal braces are written '{{{{' '}}}}')"
        )
    return template


def load_system_prompt(path: str | None) -> str | None:
    if path is None:
        return None
    resolved = resolve_repo_path(path)
    if not resolved.is_file():
        raise FileNotFoundError(f"system prompt file {path} does not exist (data.*.system_prompt_file)")
    return _read_text(resolved, "data.*.system_prompt_file").strip()


def _read_text(path: Path, key: str) -> str:
    """The file's text; a file that cannot be read or is not UTF-8 is a :class:`DataError` naming it and ``key``."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} ({key}) is not valid UTF-8 text (byte {err.start}: {err.object[err.start:err.start + 1]!r})") from None
    except OSError as err:
        raise DataError(f"{path} ({key}) cannot be read: {err.strerror or err}") from None


class PromptProcessor:
    """Turns :class:`ProblemRecord` s into :class:`ProcessedPrompt` s with one tokenizer and template.

    ``prompt_template`` is a prompt file's text (one ``{}``), ``system_prompt`` an optional system
    message, ``chat_template`` a Jinja template overriding the tokenizer's own, and
    ``chat_template_kwargs`` extra template variables (e.g. ``{"enable_thinking": False}``).
    """

    def __init__(self, tokenizer, *, prompt_template: str | None, system_prompt: str | None, chat_template: str | None = None,
                 chat_template_kwargs: dict[str, Any] | None = None, max_input_seq_length: int):
        self.tokenizer = tokenizer
        self.prompt_template = prompt_template
        self.system_prompt = system_prompt
        self.chat_template = chat_template
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        if max_input_seq_length < 1:
            raise ValueError(f"max_input_seq_length must be >= 1 token, got {max_input_seq_length}")
        self.max_input_seq_length = max_input_seq_length

    def _chat_template(self) -> str | None:
        return self.chat_template or getattr(self.tokenizer, "chat_template", None)

    def render(self, user_message: str) -> str:
        """The chat-formatted prompt text, ending with the assistant generation prompt.

        Fallback: when neither the tokenizer nor the config has a chat template (base models), the
        text is plain ``system + "\\n\\n" + user + "\\n"`` (or ``user + "\\n"`` with no system).
        """
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [
            {"role": "user", "content": user_message}
        ]
        template = self._chat_template()
        if template is None:
            return "".join(f"{m['content']}\n\n" for m in messages[:-1]) + f"{user_message}\n"
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, chat_template=template, **self.chat_template_kwargs
        )

    def process(self, record: ProblemRecord) -> ProcessedPrompt:
        user_message = self.prompt_template.format(record.problem) if self.prompt_template else record.problem
        return self.process_user_message(record, user_message)

    def process_user_message(self, record: ProblemRecord, user_message: str) -> ProcessedPrompt:
        """Like :meth:`process` for a user message written already (e.g. a teacher's context + the student's message)."""
        prompt_text = self.render(user_message)
        # A chat template writes its own BOS / role markers, so the tokenizer must not add them a
        # second time; the plain-text fallback has none and gets the tokenizer's usual ones.
        add_special_tokens = self._chat_template() is None
        token_ids = self.tokenizer(prompt_text, add_special_tokens=add_special_tokens)["input_ids"]
        return ProcessedPrompt(record, user_message, prompt_text, list(token_ids), len(token_ids) > self.max_input_seq_length)
