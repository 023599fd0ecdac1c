"""The repository's promises: README's two commands, CI running the very same test command."""
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"<!-- {marker} -->\s*```bash\n(.*?)\n```", text, re.S)
    assert match, f"README.md has no command after <!-- {marker} -->"
    return match.group(1).strip()


def test_readme_leads_with_demo_and_test_commands():
    assert readme_block("demo-command").endswith("onnx2snn demo")
    assert "pytest" in readme_block("test-command")


def test_ci_runs_the_readme_test_command():
    """Run the extraction line of .ci/run itself and compare with what README.md shows."""
    line = next(l for l in (ROOT / ".ci" / "run").read_text().splitlines() if l.startswith("cmd=$("))
    extracted = subprocess.run(["bash", "-c", line + '; printf "%s" "$cmd"'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert extracted.strip() == readme_block("test-command")
