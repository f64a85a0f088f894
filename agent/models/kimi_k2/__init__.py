"""Kimi K2.5 / K2.6 (moonshotai/Kimi-K2.5, Kimi-K2.6; Moonshot's kimi-k2.5 / kimi-k2.6) as computer-use
agents, as OSWorld's ``mm_agents/kimi`` agent drives them: reply grammar, variants, image rule."""
