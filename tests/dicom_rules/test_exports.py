"""The public names of dicom_rules and node.routing (changing them is an API change)."""

from __future__ import annotations

import dicom_rules
import node.routing


def test_dicom_rules_exports() -> None:
    assert dicom_rules.__all__ == [
        "Action", "AllOf", "AnyOf", "AttributePath", "BodyPart", "BodyPartTable", "Compare",
        "Condition", "Defaults", "DeliverSource", "Explanation", "Not", "Op", "Preference",
        "PrivateTag", "Problem", "ResultsOptions", "RouteDecision", "Rule", "RuleError", "RuleKind",
        "RuleSet",
        "Scope", "Select", "SeriesExplanation", "SeriesInput", "Status", "Verdict", "VolumeSelect",
        "WorkitemRequest",
        "load",
        "parse", "parse_path", "render",
    ]  # fmt: skip
    for name in dicom_rules.__all__:
        assert getattr(dicom_rules, name) is not None


def test_node_routing_exports() -> None:
    assert node.routing.__all__ == [
        "DEFAULT_RULES", "RuleHolder", "RuleStatus", "header_from_dataset", "header_from_file",
        "route_study", "series_inputs",
    ]  # fmt: skip
    for name in node.routing.__all__[1:]:
        assert callable(getattr(node.routing, name))


def test_dicom_rules_imports_nothing_from_node() -> None:
    import ast
    from pathlib import Path

    for path in Path(dicom_rules.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for stmt in ast.walk(tree):
            if isinstance(stmt, ast.ImportFrom):
                assert not (stmt.module or "").startswith("node"), path
            elif isinstance(stmt, ast.Import):
                assert not any(a.name.startswith("node") for a in stmt.names), path


def test_no_code_execution_in_dicom_rules() -> None:
    """A rule file cannot execute code: the library never calls eval/exec/compile/__import__."""
    import ast
    from pathlib import Path

    banned = {"eval", "exec", "compile", "__import__"}
    for path in Path(dicom_rules.__file__).parent.glob("*.py"):
        for item in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(item, ast.Call) and isinstance(item.func, ast.Name):
                assert item.func.id not in banned, f"{path}: {item.func.id}()"
