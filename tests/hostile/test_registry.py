"""Every case of the hostile catalogue has a test that proves it, and every proof names a
test that exists: a new case without a proof, or a renamed test, fails here."""

from __future__ import annotations

import ast
import re

from tests.helpers.hostile import NOT_FIXED, PROOFS, REPO, catalogue


def _functions(path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _parameter_sources(path) -> str:
    """The test file and the conftest beside it (a fixture's params name node ids too)."""
    conftest = path.parent / "conftest.py"
    return path.read_text(encoding="utf-8") + (conftest.read_text(encoding="utf-8") if conftest.is_file() else "")


def test_the_catalogue_holds_the_95_cases_of_issue_24():
    cases = catalogue()
    assert len(cases) >= 95
    assert all(row["expected"] and row["verdict"] in {"pass", "high", "medium", "low"} for row in cases.values())


def test_every_catalogue_case_has_a_proof_and_every_proof_is_a_case():
    cases = set(catalogue())
    assert sorted(cases - set(PROOFS)) == []  # a case nothing proves
    assert sorted(set(PROOFS) - cases) == []  # a proof of a case the catalogue does not hold
    assert set(NOT_FIXED) <= cases


def test_every_proof_names_an_existing_test():
    missing = []
    for case_id, nodes in PROOFS.items():
        assert nodes, case_id
        for node in nodes:
            file, _, name = node.partition("::")
            function, _, param = name.partition("[")
            path = REPO / file
            if not path.is_file() or function not in _functions(path):
                missing.append(f"{case_id}: {node}")
            elif param and param.rstrip("]") not in _parameter_sources(path):
                missing.append(f"{case_id}: {node} (no parameter id {param.rstrip(']')!r})")
    assert missing == []


def test_every_hostile_test_is_registered_under_its_case():
    """A test under tests/hostile/ made with ``case(...)`` is the proof of that case."""
    registered = {node for nodes in PROOFS.values() for node in nodes}
    unregistered = []
    for path in sorted((REPO / "tests" / "hostile").glob("test_*.py")):
        source = path.read_text(encoding="utf-8")
        for ids, function in re.findall(r'@case\(([^)]+)\)\s*\n(?:@[^\n]*\n)*def (\w+)', source):
            for case_id in re.findall(r'"([^"]+)"', ids):
                node = f"tests/hostile/{path.name}::{function}[{case_id}]"
                if node not in PROOFS.get(case_id, ()):
                    unregistered.append(node)
    assert unregistered == []
