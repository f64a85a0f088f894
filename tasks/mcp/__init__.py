"""`kimi-agent mcp`: our sandboxes (and, where allowed, Kimi-VL) as Model Context Protocol tools.

One module per job: cli.py (flags, stdio), http.py (streamable HTTP behind a bearer token),
permissions.py (which tool groups), options.py (what the flags decided), server.py (the MCPServer
with only those groups), sandboxes.py (the open sandboxes), results.py (screenshots, ActionResults
and tool errors as MCP content), and one ``*_tools.py`` per group, each with
``register(server, registry, options)``: a new group is a module and a line in server.REGISTRARS."""
