"""Kimi-VL's tokenizer, rebuilt as a fast tokenizer from the checkpoint's ``tiktoken.model``.

Facts from Moonshot's tokenization_moonshot.py (the Kimi-VL / Moonlight remote code; the same
``TikTokenTokenizer`` ships as tokenization_kimi.py with Kimi-Linear and Kimi-K2):

- the pre-tokenizer regex ``pat_str`` below: Han runs are split from other letters, and words
  split on case changes (``camelCase`` -> ``camel`` + ``Case``), unlike cl100k's ``\\p{L}+``;
- ``num_reserved_special_tokens = 256``; 256 + 2 special tokens take the ids right after the BPE
  ranks (163584.. in the released models), each named by tokenizer_config.json's
  ``added_tokens_decoder`` or else ``<|reserved_token_{id}|>``.

The named ids of the released tokenizer (Moonlight's list, which Kimi-K2 keeps, plus Kimi-VL's
media tokens): [BOS] 163584, [EOS] 163585, <|im_end|> 163586, <|im_user|> 163587,
<|im_assistant|> 163588, <|start_header_id|> 163590, <|end_header_id|> 163591, [EOT] 163593,
<|im_system|> 163594, <|im_middle|> 163601, <|media_start|> 163602, <|media_content|> 163603,
<|media_end|> 163604, <|media_pad|> 163605, [UNK] 163838, [PAD] 163839. The thinking markers
``◁think▷`` / ``◁/think▷`` are plain text, not special tokens.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer
from transformers import PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

# tokenization_moonshot.py, ``TikTokenTokenizer.pat_str`` (the branches joined with "|").
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
NUM_SPECIAL = 256 + 2
# Offsets from the first special id of the released names (used when tokenizer_config.json is absent).
DEFAULT_SPECIALS = {
    0: "[BOS]", 1: "[EOS]", 2: "<|im_end|>", 3: "<|im_user|>", 4: "<|im_assistant|>",
    6: "<|start_header_id|>", 7: "<|end_header_id|>", 9: "[EOT]", 10: "<|im_system|>",
    17: "<|im_middle|>", 18: "<|media_start|>", 19: "<|media_content|>", 20: "<|media_end|>",
    21: "<|media_pad|>", 254: "[UNK]", 255: "[PAD]",
}  # fmt: skip


class _Converter(TikTokenConverter):
    """TikTokenConverter reading the file itself: tiktoken's loader caches files by path in
    $TMPDIR/data-gym-cache, so a tiktoken.model replaced at the same path would load stale."""

    @staticmethod
    def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
        return read_ranks(Path(tiktoken_url))


def read_ranks(path: Path) -> dict[bytes, int]:
    """A tiktoken BPE file: one ``base64(token) rank`` per line."""
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path} is not a tiktoken BPE file (ranks are not 0..{len(ranks) - 1})")
    return ranks


def special_names(num_base: int, tokenizer_config: dict | None = None) -> dict[int, str]:
    """Every special id -> its name, as the official tokenizer assigns them."""
    names = {num_base + i: name for i, name in DEFAULT_SPECIALS.items()}
    if tokenizer_config:
        decoder = tokenizer_config.get("added_tokens_decoder", {})
        names.update({int(k): v["content"] for k, v in decoder.items()})
    return {i: names.get(i, f"<|reserved_token_{i}|>") for i in range(num_base, num_base + NUM_SPECIAL)}


def load_tokenizer(checkpoint: Path) -> PreTrainedTokenizerFast:
    """The checkpoint's tokenizer as a transformers fast tokenizer (ids as the official one's)."""
    checkpoint = Path(checkpoint)
    vocab_file = checkpoint / "tiktoken.model"
    if not vocab_file.is_file():
        raise FileNotFoundError(f"{checkpoint} has no tiktoken.model")
    config_file = checkpoint / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    stat = vocab_file.stat()
    core, names = _core(str(vocab_file.resolve()), stat.st_mtime_ns, stat.st_size, json.dumps(config))
    roles = {"bos_token": "[BOS]", "eos_token": "[EOS]", "unk_token": "[UNK]", "pad_token": "[PAD]"}
    roles = {k: _content(config.get(k, v)) for k, v in roles.items()}
    tok = PreTrainedTokenizerFast(  # copies core
        tokenizer_object=core, **{k: v for k, v in roles.items() if v in names.values()}
    )
    template = checkpoint / "chat_template.jinja"
    if template.is_file():
        tok.chat_template = template.read_text(encoding="utf-8")
    elif isinstance(config.get("chat_template"), str):
        tok.chat_template = config["chat_template"]
    return tok


@functools.lru_cache(maxsize=4)
def _core(vocab_file: str, mtime_ns: int, size: int, config: str) -> tuple[Tokenizer, dict[int, str]]:
    """The converted BPE with its special tokens (a few seconds for 163K ranks, so kept per file
    version: the key holds the file's mtime and size)."""
    core = _Converter(vocab_file=vocab_file, pattern=KIMI_PATTERN).converted()
    names = special_names(core.get_vocab_size(), json.loads(config))
    # Added in id order, so each lands on its id (num_base + i).
    core.add_special_tokens([AddedToken(names[i], special=True, normalized=False) for i in sorted(names)])
    for i, name in names.items():
        if core.token_to_id(name) != i:
            raise ValueError(f"special token {name} landed on id {core.token_to_id(name)}, not {i}")
    return core, names


def _content(token: object) -> str:
    return str(token["content"]) if isinstance(token, dict) else str(token)
