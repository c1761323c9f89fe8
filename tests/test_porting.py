"""docs/porting.md: every ``python`` block runs, in order, in one namespace (the peers' ``py`` blocks are for reading)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "porting.md"


def test_every_tfos_lib_example_of_the_porting_guide_runs(spark, tmp_path):
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 5
    namespace = {"spark": spark, "tmp": tmp_path}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"{DOC.name} python block {number}", "exec"), namespace)
