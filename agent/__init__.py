"""The brain: prompts in, model, parsing, history, loop. No display code."""
