"""node.routing.reload.RuleHolder: validate, swap atomically, keep the old rules on error."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import dicom_rules
from node.routing import RuleHolder
from tests.dicom_rules.headers import series
from tests.util import wait_until

V1 = "version: 1\nrules:\n  - {name: v1, when: {Modality: CT}, then: {model: m1}}\n"
V2 = "version: 1\nrules:\n  - {name: v2, when: {Modality: CT}, then: {model: m2}}\n"
BAD = "version: 1\nrules:\n  - {name: v3, when: {Modalty: CT}, then: {model: m3}}\n"


@pytest.fixture
def rule_file(tmp_path: Path) -> Path:
    f = tmp_path / "rules.yaml"
    f.write_text(V1)
    return f


def _names(holder: RuleHolder) -> list[str]:
    return [r.name for r in holder.rules.rules]


def test_invalid_or_missing_file_at_start_raises(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    with pytest.raises(dicom_rules.RuleError) as info:
        RuleHolder(bad)
    assert info.value.lines[0].startswith(f"{bad}:3:")
    with pytest.raises(dicom_rules.RuleError):
        RuleHolder(tmp_path / "absent.yaml")


def test_check_now_swaps_valid_and_keeps_old_on_invalid(rule_file: Path) -> None:
    swaps: list[dicom_rules.RuleSet] = []
    holder = RuleHolder(rule_file, on_change=swaps.append)
    assert _names(holder) == ["v1"]
    assert not holder.check_now()  # unchanged

    rule_file.write_text(BAD)
    assert not holder.check_now()
    assert _names(holder) == ["v1"]
    assert holder.errors and holder.errors[0].startswith(f"{rule_file}:3:")
    assert "did you mean 'Modality'" in holder.errors[0]
    status = holder.status()
    assert status.rejected_sha256 is not None and status.errors == holder.errors

    rule_file.write_text(V2)
    assert holder.check_now()
    assert _names(holder) == ["v2"]
    assert holder.errors == ()
    assert [r.rules[0].name for r in swaps] == ["v2"]
    assert holder.text() == V2


def test_deleted_file_keeps_rules(rule_file: Path) -> None:
    holder = RuleHolder(rule_file)
    rule_file.unlink()
    assert not holder.check_now()
    assert _names(holder) == ["v1"]
    assert "cannot read rule file" in holder.errors[0]
    rule_file.write_text(V1)
    assert not holder.check_now()  # same content as active: errors clear, no swap
    assert holder.errors == ()


def test_replace_writes_atomically_and_validates(rule_file: Path) -> None:
    holder = RuleHolder(rule_file, destinations={"pacs"})
    with pytest.raises(dicom_rules.RuleError):
        holder.replace(BAD)
    assert rule_file.read_text() == V1 and _names(holder) == ["v1"]
    with pytest.raises(dicom_rules.RuleError) as info:
        holder.replace(V2.replace("model: m2", "model: m2, deliver: [pcas]"))
    assert "did you mean 'pacs'" in str(info.value)
    holder.replace(V2)
    assert rule_file.read_text() == V2 and _names(holder) == ["v2"]
    assert not holder.check_now()
    assert sorted(p.name for p in rule_file.parent.iterdir()) == ["rules.yaml"]  # no temp left


def test_watcher_thread_picks_up_changes(rule_file: Path) -> None:
    with RuleHolder(rule_file, poll_seconds=0.02) as holder:
        rule_file.write_text(BAD)
        wait_until(lambda: bool(holder.errors), timeout=10, what="invalid version rejected")
        assert _names(holder) == ["v1"]
        rule_file.write_text(V2)
        wait_until(lambda: _names(holder) == ["v2"], timeout=10, what="valid version active")
        assert holder.errors == ()


def test_routing_during_swaps_always_sees_a_valid_rule_set(rule_file: Path) -> None:
    holder = RuleHolder(rule_file)
    stop = threading.Event()
    seen: set[str | None] = set()
    failures: list[BaseException] = []

    def route() -> None:
        try:
            while not stop.is_set():
                for d in dicom_rules.route(holder.rules, [series("1", Modality="CT")]):
                    seen.add(d.model)
        except BaseException as exc:  # collected and asserted below
            failures.append(exc)

    t = threading.Thread(target=route)
    t.start()
    try:
        for i in range(30):
            holder.replace(V2 if i % 2 else V1)
            rule_file.write_text(BAD)
            holder.check_now()
    finally:
        stop.set()
        t.join(10)
    assert not failures
    assert seen <= {"m1", "m2"} and seen
