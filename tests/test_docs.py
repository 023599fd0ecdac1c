"""The Python examples in docs/ run as written, and the user guide's links lead somewhere."""
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GUIDE_PAGES = ["guide.md", "api.md", "pytorch.md", "cli.md", "serving.md"]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


def run_blocks(name: str, namespace: dict) -> None:
    """Run a page's blocks in order in one namespace; a block whose first line is ``# needs: MODULE`` is skipped
    (with the rest of the page) when that optional module is not installed."""
    for block in python_blocks(DOCS / name):
        needs = re.match(r"# needs: (\w+)", block)
        if needs and importlib.util.find_spec(needs.group(1)) is None:
            pytest.skip(f"{name}: the rest needs {needs.group(1)}, which is not installed")
        exec(compile(block, name, "exec"), namespace)


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


@pytest.mark.parametrize("name", ["api.md", "guide.md", "serving.md"])
def test_guide_examples_run(name, tmp_path, monkeypatch):
    """Examples refer to the bundled data as models/...: run them where that folder is visible."""
    (tmp_path / "models").symlink_to(ROOT / "models")
    monkeypatch.chdir(tmp_path)
    run_blocks(name, {})


def test_pytorch_example_runs(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    run_blocks("pytorch.md", namespace)
    assert namespace["snn_accuracy"] >= namespace["torch_accuracy"] - 0.03


@pytest.mark.parametrize("name", GUIDE_PAGES)
def test_relative_links_resolve(name):
    text = (DOCS / name).read_text()
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (DOCS / target).exists(), f"docs/{name} links to {target}, which does not exist"


def test_guide_images_exist():
    for name in ["guide.md"]:
        for target in re.findall(r"!\[[^]]*\]\(([^)]+)\)", (DOCS / name).read_text()):
            assert (DOCS / target).is_file(), target


def guide_commands() -> list[str]:
    """The shell commands of the guide's quick start, continuation lines joined, comments and installs dropped."""
    text = (DOCS / "guide.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and "pip install" not in line:
                commands.append(line)
    return commands


def test_guide_quick_start_commands_run(tmp_path, monkeypatch, capsys):
    """A new user's path: demo, convert, run, evaluate --plot, export-nir, inspect --plot, with the bundled files."""
    import shlex
    import subprocess
    import sys

    from converter.cli import main

    (tmp_path / "models").symlink_to(ROOT / "models")
    monkeypatch.chdir(tmp_path)
    commands = guide_commands() + [c for c in re.findall(r"```bash\n(onnx2snn inspect .*?)\n```", (DOCS / "guide.md").read_text(), re.S)]
    assert [c.split()[1] for c in commands if c.startswith("onnx2snn")] == ["demo", "convert", "run", "evaluate", "export-nir", "inspect"]
    has_nir = importlib.util.find_spec("nir") is not None
    for command in commands:
        argv = shlex.split(command)
        if argv[0] == "python":
            subprocess.run([sys.executable, *argv[1:]], check=True)
        elif argv[1] != "export-nir" or has_nir:
            assert main(argv[1:]) == 0, f"{command}\n{capsys.readouterr().err}"
    expected = ["digits.snn.onnx", "digits.clipped.onnx", "digits.report.json", "logits.npy", "stats.json", "accuracy.png",
                "accuracy.json", "layers.png"] + (["digits.nir"] if has_nir else [])
    assert all((tmp_path / name).is_file() for name in expected), sorted(p.name for p in tmp_path.iterdir())
