"""OpenCUA (xlangai/OpenCUA-A3B, -7B, -32B, -72B): reply grammar, coordinate spaces, variants, detection."""
