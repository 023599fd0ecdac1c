"""docs/cli.md is generated from the argument parser: it must say exactly what `onnx2snn --help` says."""
from pathlib import Path

from converter.cli_docs import REGENERATE, cli_markdown

CLI_MD = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def test_cli_md_matches_parser():
    expected = cli_markdown()
    actual = CLI_MD.read_text() if CLI_MD.exists() else ""
    assert actual == expected, f"docs/cli.md is out of date with converter/cli.py; regenerate it with `{REGENERATE}` (from the repository root)"


def test_every_command_documented_with_quiet():
    text = cli_markdown()
    for command in ["demo", "convert", "run", "evaluate", "inspect", "export-nir"]:
        section = text.split(f"## onnx2snn {command}\n", 1)[1].split("\n## ", 1)[0]
        assert "`--quiet`, `-q`" in section, command
        assert "`--json`" in section, command
