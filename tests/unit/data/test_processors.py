"""Prompt files, system prompts, chat templates and tokenisation of prompts."""

from __future__ import annotations

import pytest

from nemo_distill.config.errors import DataError
from nemo_distill.data.datasets import REPO_ROOT, ProblemRecord
from nemo_distill.data.processors import PromptProcessor, load_prompt_file, load_system_prompt

SPECIAL = ["[PAD]", "[UNK]", "<s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
WORDS = ["be", "brief", "solve", "this", ":", "what", "is", "2", "+", "?", "nothink", "sys", "usr"]
# A template that shows every message, the generation prompt and one template variable.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% if enable_thinking is defined and not enable_thinking %}nothink {% endif %}{% endif %}"
)


def _tiny_tokenizer(chat_template: str | None = CHAT_TEMPLATE):
    """A WordLevel tokenizer whose ids are the list positions above; adds ``<s>`` as BOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", vocab["<s>"])])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", pad_token="[PAD]", unk_token="[UNK]", additional_special_tokens=SPECIAL[3:]
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def _ids(*tokens: str) -> list[int]:
    table = {token: i for i, token in enumerate(SPECIAL + WORDS)}
    return [table[t] for t in tokens]


RECORD = ProblemRecord(problem="what is 2 + 2 ?", answer="4", record_id="r-1")


def test_template_system_prompt_and_chat_template():
    processor = PromptProcessor(_tiny_tokenizer(), prompt_template="solve this : {}", system_prompt="be brief", max_input_seq_length=64)
    out = processor.process(RECORD)
    assert out.record is RECORD
    assert out.user_message == "solve this : what is 2 + 2 ?"
    assert out.prompt_text == "<|system|> be brief <|end|> <|user|> solve this : what is 2 + 2 ? <|end|> <|assistant|> "
    # No BOS: the chat template already wrote the markers, special tokens are not added twice.
    assert out.prompt_token_ids == _ids(
        "<|system|>", "be", "brief", "<|end|>", "<|user|>", "solve", "this", ":", "what", "is", "2", "+", "2", "?", "<|end|>", "<|assistant|>"
    )
    assert out.too_long is False


def test_raw_problem_without_template_or_system_prompt():
    out = PromptProcessor(_tiny_tokenizer(), prompt_template=None, system_prompt=None, max_input_seq_length=64).process(RECORD)
    assert out.user_message == RECORD.problem
    assert out.prompt_text == "<|user|> what is 2 + 2 ? <|end|> <|assistant|> "


def test_chat_template_kwargs_reach_the_template():
    processor = PromptProcessor(
        _tiny_tokenizer(), prompt_template=None, system_prompt=None, chat_template_kwargs={"enable_thinking": False}, max_input_seq_length=64
    )
    out = processor.process(RECORD)
    assert out.prompt_text.endswith("<|assistant|> nothink ")
    assert out.prompt_token_ids[-2:] == _ids("<|assistant|>", "nothink")


def test_configured_chat_template_overrides_the_tokenizers():
    override = "{% for m in messages %}usr {{ m['content'] }} {% endfor %}<|assistant|>"
    out = PromptProcessor(_tiny_tokenizer(), prompt_template=None, system_prompt=None, chat_template=override, max_input_seq_length=64).process(RECORD)
    assert out.prompt_text == "usr what is 2 + 2 ? <|assistant|>"
    assert out.prompt_token_ids[0] == _ids("usr")[0]


def test_plain_text_fallback_without_any_chat_template():
    tokenizer = _tiny_tokenizer(chat_template=None)
    with_system = PromptProcessor(tokenizer, prompt_template=None, system_prompt="sys", max_input_seq_length=64).process(RECORD)
    assert with_system.prompt_text == "sys\n\nwhat is 2 + 2 ?\n"
    # No template wrote a BOS here, so the tokenizer's own special tokens are added (once).
    assert with_system.prompt_token_ids == _ids("<s>", "sys", "what", "is", "2", "+", "2", "?")
    without = PromptProcessor(tokenizer, prompt_template=None, system_prompt=None, max_input_seq_length=64).process(RECORD)
    assert without.prompt_text == "what is 2 + 2 ?\n"


def test_too_long_is_flagged_at_the_boundary_and_ids_are_kept_whole():
    tokenizer = _tiny_tokenizer()
    length = len(PromptProcessor(tokenizer, prompt_template=None, system_prompt=None, max_input_seq_length=64).process(RECORD).prompt_token_ids)
    assert length == 9  # <|user|> what is 2 + 2 ? <|end|> <|assistant|>
    exact = PromptProcessor(tokenizer, prompt_template=None, system_prompt=None, max_input_seq_length=length).process(RECORD)
    over = PromptProcessor(tokenizer, prompt_template=None, system_prompt=None, max_input_seq_length=length - 1).process(RECORD)
    assert (exact.too_long, over.too_long) == (False, True)
    assert over.prompt_token_ids == exact.prompt_token_ids


def test_max_input_seq_length_must_be_positive():
    with pytest.raises(ValueError, match="max_input_seq_length must be >= 1"):
        PromptProcessor(_tiny_tokenizer(), prompt_template=None, system_prompt=None, max_input_seq_length=0)


@pytest.mark.parametrize("name", ["cot.txt", "math.txt", "gsm8k.txt"])
def test_shipped_prompt_files_are_valid(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # found through the repo-root fallback from any directory
    template = load_prompt_file(f"examples/prompts/{name}")
    assert template == (REPO_ROOT / "examples/prompts" / name).read_text()
    filled = template.format("PROBLEM-TEXT")
    assert filled.count("PROBLEM-TEXT") == 1
    assert "{}" not in filled.replace("\\boxed{}", "")  # math.txt's escaped braces render as \boxed{}


def test_math_prompt_renders_boxed_braces():
    assert "\\boxed{}" in load_prompt_file("examples/prompts/math.txt").format("x")


@pytest.mark.parametrize(
    "text, message",
    [
        ("no placeholder here", r"found 0 placeholder"),
        ("{} and {}", r"found 2 placeholder"),
        ("Problem: {problem}", r"\['\{problem\}'\]"),
        ("lone { brace {}", "not a valid format string"),
    ],
)
def test_bad_prompt_files_are_rejected_naming_the_file(tmp_path, text, message):
    path = tmp_path / "prompt.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as err:  # a UserError: one "error:" line, exit 2
        load_prompt_file(str(path))
    assert str(path) in str(err.value)


def test_escaped_braces_are_literal(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text("Answer as {{\"x\": ...}}. {}")
    assert load_prompt_file(str(path)).format("Q") == 'Answer as {"x": ...}. Q'


def test_missing_prompt_and_system_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="prompt_file"):
        load_prompt_file(str(tmp_path / "missing.txt"))
    with pytest.raises(FileNotFoundError, match="system_prompt_file"):
        load_system_prompt(str(tmp_path / "missing.txt"))


def test_system_prompt_is_stripped_and_optional(tmp_path):
    path = tmp_path / "system.txt"
    path.write_text("\n  You are careful.  \n\n")
    assert load_system_prompt(str(path)) == "You are careful."
    assert load_system_prompt(None) is None


def test_real_smollm2_tokenizer_round_trip():
    """With the shipped model's tokenizer: generation prompt at the end, no doubled markers."""
    from nemo_distill.models.loading import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m-instruct")
    processor = PromptProcessor(
        tokenizer, prompt_template=load_prompt_file("examples/prompts/cot.txt"), system_prompt="Be brief.", max_input_seq_length=256
    )
    out = processor.process(ProblemRecord("What is 2 + 3?", "5", "r"))
    assert out.prompt_text.startswith("<|im_start|>system\nBe brief.<|im_end|>")
    assert out.prompt_text.endswith("<|im_start|>assistant\n")
    assert "What is 2 + 3?" in out.prompt_text
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert out.prompt_token_ids.count(im_start) == out.prompt_text.count("<|im_start|>") == 3
    assert tokenizer.decode(out.prompt_token_ids) == out.prompt_text
    assert not out.too_long


@pytest.mark.parametrize("loader, key", [(load_prompt_file, "data.*.prompt_file"), (load_system_prompt, "data.*.system_prompt_file")])
def test_non_utf8_or_unreadable_prompt_files_name_file_and_key(tmp_path, loader, key):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes(b"caf\xe9 {}")
    with pytest.raises(DataError, match=rf"{latin1} \({key.replace('*', '[*]')}\) is not valid UTF-8 text \(byte 3"):
        loader(str(latin1))
    folder = tmp_path / "folder.txt"
    folder.mkdir()
    folder_file = folder / "inner"  # exists-as-file checks pass only for files; make one unreadable instead
    folder_file.write_text("x {}")
    folder_file.chmod(0)
    import os

    if os.access(folder_file, os.R_OK):  # root ignores permissions: nothing more to check here
        return
    with pytest.raises(DataError, match="cannot be read"):
        loader(str(folder_file))
