"""The public names of dicom_rules and node.routing (changing them is an API change)."""

from __future__ import annotations

import dicom_rules
import node.routing


def test_dicom_rules_exports() -> None:
    assert dicom_rules.__all__ == [
        "Action", "AllOf", "AnyOf", "AttributePath", "BodyPart", "BodyPartTable", "Compare",
        "Condition", "Defaults", "DeliverSource", "Explanation", "Not", "Op", "Preference",
        "PriorMatch", "Priors", "PrivateTag", "Problem", "ResultsOptions", "RouteDecision", "Rule",
        "RuleError", "RuleKind",
        "RuleSet",
        "Scope", "Select", "SeriesExplanation", "SeriesInput", "Status", "Verdict", "VolumeSelect",
        "WorkitemRequest",
        "body_part_of", "explain", "load", "match_prior",
        "parse", "parse_path", "render", "route",
    ]  # fmt: skip
    for name in dicom_rules.__all__:
        assert getattr(dicom_rules, name) is not None


def test_node_routing_exports() -> None:
    assert node.routing.__all__ == [
        "DEFAULT_RULES", "Plan", "PriorQuery", "PriorWait", "RuleHolder", "RuleStatus",
        "SeriesLookup", "Stale", "StudyPlan", "header_from_dataset", "header_from_file",
        "no_longer_routed", "plan_jobs", "plan_study", "prior_query", "prior_study_record",
        "qualify_decisions", "route_study", "routing_record", "series_inputs",
        "series_number_base",
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


def test_the_data_model_does_not_evaluate() -> None:
    """model.py is plain data (issue 17 §6): it imports no evaluation, not even lazily, and a
    RuleSet carries no compiled plan; ``route``/``explain`` are free functions of evaluate."""
    import ast
    from dataclasses import fields
    from pathlib import Path

    tree = ast.parse((Path(dicom_rules.__file__).parent / "model.py").read_text(encoding="utf-8"))
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert "dicom_rules.evaluate" not in imported and "dicom_rules.conditions" not in imported
    assert not hasattr(dicom_rules.RuleSet, "route") and not hasattr(dicom_rules.RuleSet, "explain")
    assert all(not f.name.startswith("_") for f in fields(dicom_rules.RuleSet))
    assert dicom_rules.route.__module__ == dicom_rules.explain.__module__ == "dicom_rules.evaluate"


def test_a_rule_set_is_compiled_once_and_its_plan_goes_with_it() -> None:
    import gc

    from dicom_rules import evaluate

    rules = dicom_rules.parse(
        "version: 1\nrules:\n  - {name: ct, when: {Modality: CT}, then: ignore}\n"
    )
    header = {"00080060": {"vr": "CS", "Value": ["CT"]}}
    study = [dicom_rules.SeriesInput("1", header, 1)]
    first = dicom_rules.route(rules, study)
    plan = evaluate._plan_of(rules)
    assert evaluate._plan_of(rules) is plan  # compiled once
    assert dicom_rules.route(rules, study) == first
    assert [v.series_uid for v in dicom_rules.explain(rules, study).series] == ["1"]
    key = id(rules)
    del rules, first
    gc.collect()
    assert key not in evaluate._PLANS
