"""The Python examples in docs/ run as written."""
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


@pytest.mark.parametrize("name", ["format.md"])
def test_doc_examples_run(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    blocks = python_blocks(DOCS / name)
    assert blocks
    for block in blocks:
        exec(compile(block, f"{name}", "exec"), namespace)
    out = capsys.readouterr().out
    shown = re.search(r"The Relu became one neuron node.*?```\n(.*?)```", (DOCS / name).read_text(), re.S).group(1)
    assert out.strip() == shown.strip()
    assert namespace["trace"].shape == (4, 5, 3)
