"""Metrics the OSWorld corpus uses that desktop-env 1.0.2 lacks, written for kimi-agent to the
semantics of OSWorld's public code (desktop_env/evaluators/metrics, upstream commit 87df18ff):
the same inputs, defaults and decisions. Loaded by worker.py after the official module, so an
official metric of the same name always wins.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity


def check_play_and_exit(actual_config_path: str | None, rule: dict[str, Any]) -> float:
    """VLC's vlcrc: 1 when its play-and-exit setting equals ``rule["expected_play_and_exit"]``.

    As upstream (metrics/vlc.py): the value is "0" unless a line holds ``play-and-exit=``; the last
    such line counts, commented or not (VLC writes ``#play-and-exit=0`` for the default)."""
    if actual_config_path is None:
        return 0.0
    with open(actual_config_path, "rb") as f:
        text = f.read().decode("utf-8")
    value = "0"
    for line in text.split("\n"):
        if "play-and-exit=" in line:
            value = line.split("=")[-1].strip()
    return 1.0 if value == str(rule["expected_play_and_exit"]) else 0.0


def check_structure_sim_with_threshold(src_path: str | None, tgt_path: str | None, **options: Any) -> float:
    """1 when the two images' SSIM reaches ``ssim_threshold`` (default 0.85).

    As upstream (metrics/gimp.py): the source is resized to the target's size (Lanczos) when they
    differ, both compared as RGB, SSIM over 7x7 windows (the largest odd size that fits in images
    smaller than 7 pixels), channels on the last axis; any failure scores 0."""
    if src_path is None or tgt_path is None:
        return 0.0
    threshold = float(options.get("ssim_threshold", 0.85))
    try:
        src, tgt = Image.open(src_path), Image.open(tgt_path)
        if src.size != tgt.size:
            src = src.resize(tgt.size, Image.Resampling.LANCZOS)
        a, b = np.array(src.convert("RGB")), np.array(tgt.convert("RGB"))
        side = min(a.shape[0], a.shape[1])
        win = 7 if side >= 7 else (side if side % 2 else side - 1)
        if win < 1:
            return 0.0
        similarity = structural_similarity(a, b, win_size=win, channel_axis=2)
    except Exception:
        return 0.0
    return 1.0 if similarity >= threshold else 0.0
