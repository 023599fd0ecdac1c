"""docs/cli.md, generated from ``converter.cli.build_parser()`` so that the reference never drifts from the parser.

Regenerate with ``python -m converter.cli_docs docs/cli.md``; ``tests/test_cli_docs.py`` fails when the file
differs. The text is built from the parser's actions, not from ``format_help()``, whose layout depends on the
terminal width and the Python version.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import build_parser

REGENERATE = "python -m converter.cli_docs docs/cli.md"

INTRO = f"""\
# Command line reference

<!-- Generated from converter/cli.py by `{REGENERATE}`; do not edit by hand (tests/test_cli_docs.py checks it). -->

`onnx2snn COMMAND --help` prints the same options in the terminal. Conventions shared by every command:

- **Exit codes**: 0 success; 2 bad input or usage, with one line on stderr starting `error:` that names the
  file, node or argument; 1 an internal fault (rerun with `--debug` for the traceback); 130 interrupted.
- **Output files** are written atomically: a failed or interrupted command leaves no file behind and never
  replaces a previous one.
- **`--quiet` / `-q`**: no progress bars and no tables, only errors (and `export-nir`'s warnings about what NIR
  loses, which go to stderr). Progress bars (calibration, evaluation per T) are drawn on stderr only when it
  is a terminal, so logs and pipes stay clean.
- **`--json`**: `convert`, `run`, `inspect` and `export-nir` print JSON on stdout instead of their table (a
  flag); `demo` and `evaluate` keep their table and also write the results to the file given (`--json PATH`).
- **Data files**: `.npy` holds one array (N, ...) for a single-input model; `.npz` holds arrays keyed by input
  name, plus `y` (integer labels) for `evaluate`.
"""


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) for every sub-command, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return []


def _argument(action: argparse.Action) -> str:
    if action.nargs == 0:
        return ""
    if action.choices is not None:
        text = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        text = action.metavar or (action.dest if not action.option_strings else action.dest.upper())
    return f"[{text}]" if action.nargs == "?" else text


def _help(action: argparse.Action, prog: str) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    params = dict(vars(action), prog=prog)
    if isinstance(params.get("default"), list):
        params["default"] = ",".join(str(v) for v in params["default"])
    text = action.help % params
    return text.replace("|", "\\|")


def _usage(name: str, parser: argparse.ArgumentParser) -> str:
    parts = [f"onnx2snn {name}"]
    for action in parser._actions:
        if not action.option_strings:
            parts.append(_argument(action).upper() if not action.metavar else action.metavar)
        elif action.required:
            parts.append(f"{action.option_strings[-1]} {_argument(action)}".strip())
    return " ".join(parts) + " [options]"


def _options_table(parser: argparse.ArgumentParser, prog: str) -> list[str]:
    rows = ["| option | value | meaning |", "|---|---|---|"]
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        names = ", ".join(f"`{s}`" for s in action.option_strings) or f"`{_argument(action)}`"
        value = _argument(action) if action.option_strings else ""
        required = " (required)" if action.option_strings and action.required else ""
        rows.append(f"| {names} | {f'`{value}`' if value else ''} | {_help(action, prog)}{required} |")
    return rows


def cli_markdown() -> str:
    """The whole docs/cli.md: conventions, then one section per sub-command with its usage and options."""
    parser = build_parser()
    lines = [INTRO, "## Global options", "", "`onnx2snn [--debug] COMMAND ...`", ""]
    lines += _options_table(parser, parser.prog) + [""]
    subs = _subcommands(parser)
    lines += ["## Commands", ""] + [f"- [`{name}`](#onnx2snn-{name}): {text}" for name, text, _ in subs] + [""]
    for name, text, sub in subs:
        lines += [f"## onnx2snn {name}", "", text[:1].upper() + text[1:] + ".", "", "```", _usage(name, sub), "```", ""]
        lines += _options_table(sub, sub.prog) + [""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = cli_markdown()
    if argv:
        Path(argv[0]).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
