"""Kimi-VL's tokenizer, rebuilt as a fast tokenizer from the checkpoint's ``tiktoken.model``.

Facts from Moonshot's tokenization_moonshot.py (Kimi-VL / Moonlight remote code): the pre-tokenizer
regex below (Han runs split from other letters, case-aware word splits); 256 + 2 special tokens take
the ids right after the BPE ranks, named by tokenizer_config.json's ``added_tokens_decoder``, the
rest ``<|reserved_token_{id}|>``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

KIMI_PATTERN = "|".join(
    [
        r"""[\p{Han}]+""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
NUM_SPECIAL = 258
# Offsets from the first special id, as in the released tokenizer_config.json (163584 + offset).
DEFAULT_SPECIALS = {
    0: "[BOS]", 1: "[EOS]", 2: "<|im_end|>", 3: "<|im_user|>", 4: "<|im_assistant|>", 10: "<|im_system|>",
    17: "<|im_middle|>", 18: "<|media_start|>", 19: "<|media_content|>", 20: "<|media_end|>", 21: "<|media_pad|>",
}  # fmt: skip


def load_tokenizer(checkpoint: Path) -> PreTrainedTokenizerFast:
    checkpoint = Path(checkpoint)
    vocab_file = checkpoint / "tiktoken.model"
    if not vocab_file.is_file():
        raise FileNotFoundError(f"{checkpoint} has no tiktoken.model")
    core = TikTokenConverter(vocab_file=str(vocab_file), pattern=KIMI_PATTERN).converted()
    num_base = core.get_vocab_size()
    names = {num_base + i: name for i, name in DEFAULT_SPECIALS.items()}
    config_file = checkpoint / "tokenizer_config.json"
    if config_file.is_file():
        decoder = json.loads(config_file.read_text(encoding="utf-8")).get("added_tokens_decoder", {})
        names.update({int(k): v["content"] for k, v in decoder.items()})
    # Added in id order, so each lands on num_base + i.
    core.add_special_tokens(
        [
            AddedToken(names.get(i, f"<|reserved_token_{i}|>"), special=True, normalized=False)
            for i in range(num_base, num_base + NUM_SPECIAL)
        ]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="[BOS]", eos_token="[EOS]")
    template = checkpoint / "chat_template.jinja"
    if template.is_file():
        tok.chat_template = template.read_text(encoding="utf-8")
    return tok
