"""docs/ops.md shows exactly the policy table the converter uses."""
from pathlib import Path

from converter.policy import BEGIN, END, POLICIES, markdown_table

DOC = Path(__file__).resolve().parent.parent / "docs" / "ops.md"


def test_ops_doc_is_generated_from_the_policy_table():
    text = DOC.read_text()
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert generated == markdown_table(), "docs/ops.md is stale: run converter.policy.update_doc('docs/ops.md')"


def test_every_policy_is_one_of_the_documented_kinds():
    assert {p.policy for p in POLICIES.values()} <= {"keep", "fold", "rewrite", "approximate", "drop", "refuse"}
