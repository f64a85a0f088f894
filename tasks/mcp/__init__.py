"""`kimi-agent mcp`: our sandboxes (and, where allowed, Kimi-VL) as Model Context Protocol tools.

One module per job: cli.py (flags, transports), permissions.py (which tool groups), server.py (the
MCPServer with only those groups), sandboxes.py (the open sandboxes), one ``*_tools.py`` per group,
each with ``register(server, registry, options)``."""
