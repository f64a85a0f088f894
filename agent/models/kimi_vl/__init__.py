"""Kimi-VL (moonshotai/Kimi-VL-A3B-*): chat template, tokenizer, MoonViT image math, reply grammar, variants."""
