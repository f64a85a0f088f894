"""The eyes and hands: screenshots, action execution, local desktop, sandboxes. No model code."""
