"""UI-TARS-1.5 (ByteDance-Seed/UI-TARS-1.5-7B): its Thought/Action grammar, coordinates, sampling, detection."""
