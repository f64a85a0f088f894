"""What the local backend keeps between calls so that a step prefills only what is new.

An agent's prompts mostly extend each other (the ``append`` profile only appends until an eviction),
so the KV cache of the last prompt + reply is kept and each call starts from the longest prefix it
shares with the new prompt. Token ids alone cannot say that two prompts share a prefix: every
screenshot of the same size expands to the same run of ``<|media_pad|>`` ids. So each image in a
prompt carries a key (its pixels' digest and the size MoonViT sees), and a prefix ends where the
images first differ. MoonViT's output per image is kept under the same key, for the images of the
last prompt only: a screenshot the history evicted never comes back (the cutoff only moves forward).
"""

from __future__ import annotations

import hashlib
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

ImageKey = tuple[bytes, tuple[int, int]]  # (pixel digest, size after MoonViT's resize)


class Digests:
    """Content digests of PIL images, computed once per image object.

    The history hands the same Image object to every step that shows it; hashing a 1920x1080
    screenshot costs milliseconds, and a 128K prompt holds ~100 of them. Images are treated as
    immutable once sent (the runtime never draws on a screenshot it has shown the model)."""

    def __init__(self) -> None:
        self._memo: dict[int, tuple[weakref.ref[Image.Image], bytes]] = {}

    def __call__(self, image: Image.Image) -> bytes:
        hit = self._memo.get(id(image))
        if hit is not None and hit[0]() is image:
            return hit[1]
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{image.mode} {image.width}x{image.height}".encode())
        h.update(image.tobytes())
        digest = h.digest()
        key = id(image)
        self._memo[key] = (weakref.ref(image, lambda _, k=key: self._memo.pop(k, None)), digest)
        return digest


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    diff = (torch.tensor(a[:n]) != torch.tensor(b[:n])).nonzero()
    return int(diff[0]) if len(diff) else n


@dataclass
class Prompt:
    """A prompt as the model sees it: ids, and each image's key and first pad position."""

    ids: list[int]
    keys: list[ImageKey]
    starts: list[int]


@dataclass
class PrefixCache:
    """The KV cache of the last prompt + reply, and the ids (with image keys) it holds."""

    kv: Any = None  # a transformers Cache whose length is len(prompt.ids)
    prompt: Prompt = field(default_factory=lambda: Prompt([], [], []))

    def shared(self, new: Prompt) -> int:
        """How many leading tokens of ``new`` the cache holds: ids equal, and every image that
        starts inside that prefix the same picture."""
        old = self.prompt
        n = common_prefix(old.ids, new.ids)
        for i, start in enumerate(new.starts):
            if start >= n:
                break
            # The cached tokens hold no image here (a generated pad id), or another picture.
            if i >= len(old.keys) or (old.keys[i], old.starts[i]) != (new.keys[i], start):
                return start
        return n

    def take(self, new: Prompt) -> tuple[int, Any]:
        """The cache cut back to what ``new`` shares with it (at least one token of ``new`` is
        left to prefill, for its logits), and that length; (0, None) when nothing is shared."""
        n = min(self.shared(new), len(new.ids) - 1)
        kv, held = self.kv, len(self.prompt.ids)
        self.clear()  # until the caller hands back a consistent cache, none is kept
        if kv is None or n <= 0 or kv.get_seq_length() != held:  # never a cache unlike its record
            return 0, None
        if n < held:
            kv.crop(n - held)  # negative: drop that many trailing tokens (DynamicLayer.crop)
        return n, kv

    def keep(self, kv: Any, prompt: Prompt) -> None:
        self.kv, self.prompt = kv, prompt

    def clear(self) -> None:
        self.kv, self.prompt = None, Prompt([], [], [])


class FeatureCache:
    """MoonViT + projector output per image key, for the images of the latest prompt."""

    def __init__(self) -> None:
        self._features: dict[ImageKey, torch.Tensor] = {}

    def get(self, key: ImageKey) -> torch.Tensor | None:
        return self._features.get(key)

    def put(self, key: ImageKey, features: torch.Tensor) -> None:
        self._features[key] = features

    def retain(self, keys: list[ImageKey]) -> None:
        """Drop every image the latest prompt no longer shows (evicted with the history)."""
        wanted = set(keys)
        for k in [k for k in self._features if k not in wanted]:
            del self._features[k]

    def __len__(self) -> int:
        return len(self._features)
