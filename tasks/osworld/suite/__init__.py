"""The task suite that runs on our sandboxes: OSWorld-format tasks for Debian's apps (terminal and files,
Mousepad, LibreOffice Calc / Writer / Impress, Chromium on local pages, VLC, GIMP, Thunderbird), each
with a reference solution in the ``--script`` format. Input files lie in ``files/`` and reach the
machine through the tasks' own download steps (paths relative to the task file).

``kimi-agent bench osworld run suite --script-dir <solutions_dir()>`` plays the reference solutions.
"""

from __future__ import annotations

from pathlib import Path

SUITE_DIR = Path(__file__).resolve().parent
SPLIT = SUITE_DIR / "suite.json"  # {domain: [task ids]}, as OSWorld's test_all.json
EXAMPLES = SUITE_DIR / "examples"  # examples/<domain>/<id>.json
SOLUTIONS = SUITE_DIR / "solutions"  # solutions/<id>.json
