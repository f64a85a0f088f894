"""Messages -> Kimi-VL input ids, exactly as the official chat template renders them.

`<|im_{role}|>{role}<|im_middle|>{content}<|im_end|>`, nothing between parts, a default system
message when there is none, images as `<|media_start|>image<|media_content|><|media_pad|><|media_end|>`
with the pad expanded to the image's token count, and `<|im_assistant|>assistant<|im_middle|>` to
generate (shared/docs/kimi-vl.md, "Prompt format"). Text is encoded with special tokens disabled,
so user or model text can never forge a role marker.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image
from transformers import PreTrainedTokenizerFast

from agent.messages import ImagePart, Message, TextPart
from agent.models.kimi_vl.vision import image_tokens

DEFAULT_SYSTEM = "You are a helpful assistant"


@dataclass
class Rendered:
    ids: list[int]
    images: list[Image.Image]


class KimiChat:
    def __init__(self, tokenizer: PreTrainedTokenizerFast, in_token_limit: int) -> None:
        self.tok = tokenizer
        self.in_token_limit = in_token_limit
        self.ids = {name: tokenizer.convert_tokens_to_ids(name) for name in _SPECIALS}
        self._fixed: dict[str, list[int]] = {}

    def text_ids(self, text: str) -> list[int]:
        # split_special_tokens: text containing "<|im_end|>" stays text (no forged role markers).
        return self.tok.encode(text, add_special_tokens=False, split_special_tokens=True) if text else []

    def count_text_tokens(self, text: str) -> int:
        return len(self.text_ids(text))

    def _word(self, word: str) -> list[int]:
        if word not in self._fixed:
            self._fixed[word] = self.text_ids(word)
        return self._fixed[word]

    def render(self, messages: list[Message], add_generation_prompt: bool = True) -> Rendered:
        ids: list[int] = []
        images: list[Image.Image] = []
        if not messages or messages[0].role != "system":
            messages = [Message.text("system", DEFAULT_SYSTEM), *messages]
        for m in messages:
            ids += [self.ids[f"<|im_{m.role}|>"], *self._word(m.role), self.ids["<|im_middle|>"]]
            text_run: list[str] = []  # adjacent text parts render as one string
            for part in (*m.parts, None):
                if isinstance(part, TextPart):
                    text_run.append(part.text)
                    continue
                if text_run:
                    ids += self.text_ids("".join(text_run))
                    text_run = []
                if isinstance(part, ImagePart):
                    n = image_tokens(part.image.width, part.image.height, self.in_token_limit)
                    ids += [self.ids["<|media_start|>"], *self._word("image"), self.ids["<|media_content|>"]]
                    ids += [self.ids["<|media_pad|>"]] * n + [self.ids["<|media_end|>"]]
                    images.append(part.image)
            ids.append(self.ids["<|im_end|>"])
        if add_generation_prompt:
            ids += [self.ids["<|im_assistant|>"], *self._word("assistant"), self.ids["<|im_middle|>"]]
        return Rendered(ids, images)


_SPECIALS = (
    "<|im_system|>",
    "<|im_user|>",
    "<|im_assistant|>",
    "<|im_middle|>",
    "<|im_end|>",
    "<|media_start|>",
    "<|media_content|>",
    "<|media_pad|>",
    "<|media_end|>",
)
