"""`kimi-agent doctor`'s checks: each a pure function from what was found to a ``CheckResult``.

result.py: the typed result; facts.py: what is known about serving each model profile (cited);
server.py: the checks of a served model; local.py: the checks of this machine; probe.py: the
HTTP exchanges and local look-ups that gather what the checks judge; serve_cmd.py: the recommended
`vllm serve` command.
"""
