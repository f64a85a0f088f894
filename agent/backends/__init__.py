"""Model backends: chat messages in, one completion out (base), over HTTP (openai) or in-process (transformers)."""
