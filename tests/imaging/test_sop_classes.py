"""node.imaging.sop_classes: the SC SOP classes, from pydicom's UID dictionary, used everywhere."""

from __future__ import annotations

from pydicom._uid_dict import UID_dictionary

from node.imaging.sop_classes import SC_CLASS, SC_CLASSES


def test_sc_classes_are_every_secondary_capture_storage_class_of_the_registry() -> None:
    registry = {
        uid
        for uid, (name, kind, *_rest) in UID_dictionary.items()
        if kind == "SOP Class" and name.endswith("Secondary Capture Image Storage")
    }
    assert len(registry) == 5
    assert registry == SC_CLASSES
    assert UID_dictionary[SC_CLASS][0] == "Secondary Capture Image Storage"
    assert SC_CLASS in SC_CLASSES
    assert all(type(uid) is str for uid in SC_CLASSES | {SC_CLASS})


def test_every_site_uses_the_one_list() -> None:
    import node.api.console
    import node.api.previews
    import node.app
    import node.results
    import node.results.gate

    assert not hasattr(node.app, "_SC_CLASSES")  # the SC fallback is the outbox's (ResultKind)
    assert node.api.previews.SC_CLASSES is SC_CLASSES
    assert node.api.console.SC_CLASSES is SC_CLASSES
    assert node.results.gate.SC_CLASS is SC_CLASS
    assert node.results.SC_CLASS is SC_CLASS  # result_kind
