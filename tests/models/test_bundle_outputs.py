"""Bundle outputs -> Prediction fields, precise errors, codes, and the torchvision fallback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from node.errors import ModelError
from node.models.bundle import BundleModel
from node.models.bundle_codes import segment_codes
from node.models.bundle_input import lps_affine, volume_metatensor
from node.models.bundle_outputs import BoxSpace, findings, label_map, probabilities
from node.models.registry import discover
from node.types import Code, Volume
from tests.models.builders import UNET_CONFIG, ct_volume, write_bundle

NODULE = Code("27925004", "SCT", "Nodule")


def _oblique_volume() -> Volume:
    """A small volume whose slices are stacked head-first and tilted in-plane (no axis is RAS)."""
    from dataclasses import replace

    c, s = np.cos(0.3), np.sin(0.3)
    row, col = np.array([c, s, 0.0]), np.array([-s, c, 0.0])
    direction = np.stack([row, col, np.cross(row, col)])
    return replace(ct_volume((6, 10, 12)), direction=direction, origin=(10.0, -20.0, 30.0))


def test_boxes_in_voxel_space_become_lps_centres() -> None:
    volume = _oblique_volume()
    image = volume_metatensor(volume)
    # a box around voxel (column 4, row 3, slice 2) of the input grid, 2 voxels wide
    box = np.array([[3.0, 2.0, 1.0, 5.0, 4.0, 3.0]])
    result = {"box": box, "label": np.array([0]), "label_scores": np.array([0.7]), "image": image}
    [f] = findings(
        result,
        space=BoxSpace(mode="xyzxyz", is_world=False, is_lps=False),
        volume=volume,
        types={0: NODULE},
        default_type=NODULE,
    )
    expected = (lps_affine(volume) @ [4.0, 3.0, 2.0, 1.0])[:3]
    np.testing.assert_allclose(f.center_xyz, expected, atol=1e-6)
    assert f.center_voxel == (2, 3, 4) and f.score == pytest.approx(0.7)
    assert f.finding_type == NODULE


def test_world_boxes_ras_and_lps() -> None:
    volume = _oblique_volume()
    centre_lps = (lps_affine(volume) @ [6.0, 5.0, 3.0, 1.0])[:3]
    half = np.array([2.0, 3.0, 4.0])
    ras = centre_lps * [-1, -1, 1]
    for is_lps, centre in ((True, centre_lps), (False, ras)):
        result = {"box": np.array([[*centre, *(2 * half)]]), "label_scores": np.array([0.5])}
        [f] = findings(
            result,
            space=BoxSpace(mode="cccwhd", is_world=True, is_lps=is_lps),
            volume=volume,
            types={},
            default_type=NODULE,
        )
        np.testing.assert_allclose(f.center_xyz, centre_lps, atol=1e-5)
        assert f.center_voxel == (3, 5, 6)
        assert f.diameter_mm == pytest.approx(float(np.mean(2 * half)))


def test_label_map_lands_on_source_grid() -> None:
    from monai.transforms.spatial.array import Spacing

    volume = _oblique_volume()
    image = volume_metatensor(volume)
    truth = np.zeros(image.shape, dtype=np.float32)
    truth[2:8, 3:7, 1:5] = 1
    source = image.clone()
    source.array = truth
    # on the grid (one channel of label values): taken as is, axes to (slice, row, column)
    np.testing.assert_array_equal(
        label_map(source[None], image, volume), truth.transpose(2, 1, 0).astype(np.uint8)
    )
    # resampled to 2x coarser by the "bundle" and not inverted: brought back, nearest neighbour
    coarse = Spacing(pixdim=(2.0, 2.0, 4.0), mode="nearest")(source[None])
    back = label_map(coarse, image, volume)
    assert back.shape == volume.voxels.shape
    assert abs(int(back.sum()) - int(truth.sum())) <= 0.5 * truth.sum()
    # logits of two channels: argmax
    two = torch.stack([torch.from_numpy(1 - truth), torch.from_numpy(truth)])
    np.testing.assert_array_equal(label_map(two, image, volume), truth.transpose(2, 1, 0))
    with pytest.raises(ModelError, match="not on the input grid"):
        label_map(torch.zeros(1, 3, 3, 3), image, volume)


def test_probabilities() -> None:
    assert probabilities(torch.tensor([0.2, 0.8]), ["a", "b"]) == pytest.approx(
        {"a": 0.2, "b": 0.8}
    )
    p = probabilities(torch.tensor([0.0, 2.0]), [])
    assert p == pytest.approx({"0": 1 / (1 + np.e**2), "1": np.e**2 / (1 + np.e**2)})
    with pytest.raises(ModelError, match="2 values for 3 classes"):
        probabilities(torch.tensor([0.0, 1.0]), ["a", "b", "c"])


@pytest.mark.parametrize(
    ("name", "category", "code"),
    [
        ("spleen", "91723000", "78961009"),
        ("lung_nodule", "49755003", "27925004"),
        ("liver tumor", "49755003", "108369006"),
        ("stent", "260787004", "65818007"),
    ],
)
def test_segment_codes_from_cid_7151(name: str, category: str, code: str) -> None:
    cat, prop, found = segment_codes(name)
    assert (cat.value, prop.value, found) == (category, code, True)
    assert cat.scheme == prop.scheme == "SCT"


def test_unknown_segment_name_keeps_generic_codes() -> None:
    assert segment_codes("zzz-thing")[2] is False


def _bundle_with(tmp_path: Path, **items: object) -> Path:
    folder = write_bundle(tmp_path / "b")
    config = {**UNET_CONFIG, **items}
    (folder / "configs" / "inference.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def test_unknown_loader_is_named(tmp_path: Path) -> None:
    pre = {
        "_target_": "Compose",
        "transforms": [{"_target_": "LoadMyArchived", "keys": "image"}],
    }
    folder = _bundle_with(tmp_path, preprocessing=pre)
    model = discover([folder], device="cpu", builtins=False, entry_points=False).get("b")
    with pytest.raises(ModelError, match=r"preprocessing#transforms#0: 'LoadMyArchived' reads"):
        model.predict(ct_volume((16, 16, 16)))


def test_preprocessing_that_is_not_a_compose_is_named(tmp_path: Path) -> None:
    folder = _bundle_with(tmp_path, preprocessing="$lambda d: d")
    model = discover([folder], device="cpu", builtins=False, entry_points=False).get("b")
    with pytest.raises(ModelError, match=r"inference.json: preprocessing: is not a Compose"):
        model.predict(ct_volume((16, 16, 16)))


def test_missing_inferer_is_named(tmp_path: Path) -> None:
    folder = write_bundle(tmp_path / "b")
    config = {k: v for k, v in UNET_CONFIG.items() if k != "inferer"}
    (folder / "configs" / "inference.json").write_text(json.dumps(config), encoding="utf-8")
    model = discover([folder], device="cpu", builtins=False, entry_points=False).get("b")
    with pytest.raises(ModelError, match=r"inference.json: inferer: missing"):
        model.predict(ct_volume((16, 16, 16)))


def test_intermediate_layer_getter_contract() -> None:
    from node.models.torchvision_compat import IntermediateLayerGetter, validate_trainable_layers

    torch.manual_seed(0)
    net = torch.nn.Sequential()
    net.add_module("a", torch.nn.Linear(3, 4))
    net.add_module("b", torch.nn.ReLU())
    net.add_module("c", torch.nn.Linear(4, 2))
    net.add_module("d", torch.nn.Linear(2, 2))
    getter = IntermediateLayerGetter(net, {"a": "first", "c": "last"})
    assert list(getter.keys()) == ["a", "b", "c"]  # stops at the last wanted child
    assert set(getter.state_dict()) == {"a.weight", "a.bias", "c.weight", "c.bias"}
    x = torch.randn(5, 3)
    out = getter(x)
    assert list(out) == ["first", "last"]
    torch.testing.assert_close(out["last"], net[2](net[1](net[0](x))))
    with pytest.raises(ValueError, match="not children"):
        IntermediateLayerGetter(net, {"z": "nope"})
    assert validate_trainable_layers(True, None, 5, 3) == 3
    assert validate_trainable_layers(True, 2, 5, 3) == 2
    with pytest.warns(UserWarning, match="ignored for an untrained backbone"):
        assert validate_trainable_layers(False, 2, 5, 3) == 5
    with pytest.raises(ValueError, match="within 0..5"):
        validate_trainable_layers(True, 7, 5, 3)


def test_classification_bundle_gives_probabilities(tmp_path: Path) -> None:
    from monai.networks.nets.classifier import Classifier

    folder = tmp_path / "cls"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    network = {
        "_target_": "Classifier",
        "in_shape": [1, 16, 16, 16],
        "classes": 2,
        "channels": [4],
        "strides": [2],
    }
    config = {
        "network_def": network,
        "preprocessing": {
            "_target_": "Compose",
            "transforms": [
                {"_target_": "LoadImaged", "keys": "image"},
                {"_target_": "EnsureChannelFirstd", "keys": "image"},
                {"_target_": "ScaleIntensityd", "keys": "image"},
            ],
        },
        "inferer": {"_target_": "SimpleInferer"},
        "postprocessing": {
            "_target_": "Compose",
            "transforms": [{"_target_": "Activationsd", "keys": "pred", "softmax": True}],
        },
    }
    meta = {
        "version": "1.0",
        "network_data_format": {
            "inputs": {"image": {"type": "image", "modality": "CT"}},
            "outputs": {
                "pred": {
                    "type": "probabilities",
                    "format": "classification",
                    "channel_def": {"0": "normal", "1": "abnormal"},
                }
            },
        },
    }
    (folder / "configs" / "inference.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "configs" / "metadata.json").write_text(json.dumps(meta), encoding="utf-8")
    torch.manual_seed(1)
    net = Classifier(in_shape=(1, 16, 16, 16), classes=2, channels=(4,), strides=(2,)).eval()
    torch.save(net.state_dict(), folder / "models" / "model.pt")
    model = discover([folder], device="cpu", builtins=False, entry_points=False).get("cls")
    assert model.info.task.value == "classification" and model.info.modalities == ("CT",)
    volume = ct_volume((16, 16, 16))
    got = model.predict(volume).class_probabilities
    x = volume.voxels.astype(np.float32).transpose(2, 1, 0)
    x = (x - x.min()) / (x.max() - x.min())
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(x.copy())[None, None])[0], dim=0)
    assert list(got) == ["normal", "abnormal"]
    assert [got["normal"], got["abnormal"]] == pytest.approx(expected.tolist(), abs=1e-5)


def test_zoo_bundles_are_described_from_their_metadata(tmp_path: Path) -> None:
    import shutil

    from tests.models.bundle_weights import HERE

    for name in ("spleen_ct_segmentation", "lung_nodule_ct_detection"):
        shutil.copytree(HERE / name, tmp_path / name)
        (tmp_path / name / "models").mkdir()
        (tmp_path / name / "models" / "model.pt").write_bytes(b"")  # described, never loaded
    (tmp_path / "lung_nodule_ct_detection" / "ainode.yaml").write_text("body_parts: [CHEST]\n")
    registry = discover([tmp_path], device="cpu", builtins=False, entry_points=False)
    spleen = registry.get("spleen_ct_segmentation")
    nodules = registry.get("lung_nodule_ct_detection")
    assert isinstance(spleen, BundleModel) and isinstance(nodules, BundleModel)
    assert (spleen.info.task.value, spleen.info.version) == ("segmentation", "0.5.9")
    assert spleen.info.modalities == ("CT",) and spleen.info.body_parts == ()
    [label] = spleen.spec.labels.values()
    assert (label.name, label.type[0]) == ("spleen", "78961009")
    assert (nodules.info.task.value, nodules.info.version) == ("detection", "0.6.8")
    assert [o.value for o in nodules.info.outputs] == ["findings"]
    assert nodules.info.modalities == ("CT",) and nodules.info.body_parts == ("CHEST",)


def test_ainode_yaml_labels_override_label_by_label(tmp_path: Path) -> None:
    folder = write_bundle(
        tmp_path / "b",
        ainode_yaml="""\
        labels:
          2: {name: cyst, category: ["49755003", SCT, Morphologically Abnormal Structure],
              type: ["367643001", SCT, Cyst]}
        """,
    )
    model = discover([folder], device="cpu", builtins=False, entry_points=False).get("b")
    assert isinstance(model, BundleModel)
    spec = model.spec
    assert sorted(spec.labels) == [1, 2]
    assert spec.labels[1].name == "lesion" and spec.labels[1].type[0] == "52988006"
    assert spec.labels[2].type == ("367643001", "SCT", "Cyst")


def test_bundles_keep_their_own_scripts_package(tmp_path: Path) -> None:
    """Two bundles with a ``scripts`` package each, loaded in one process (a job worker)."""
    folders = {}
    for name, factor in (("a", 1.0), ("b", 0.0)):
        folder = write_bundle(tmp_path / name)
        (folder / "scripts").mkdir()
        (folder / "scripts" / "__init__.py").write_text("")
        (folder / "scripts" / "tweak.py").write_text(
            "class Scaled:\n"
            "    def __init__(self, keys):\n"
            "        self.keys = keys\n"
            "    def __call__(self, d):\n"
            f"        return {{**d, self.keys: d[self.keys] * {factor}}}\n"
        )
        config = json.loads(json.dumps(UNET_CONFIG))
        config["preprocessing"]["transforms"].append(
            {"_target_": "scripts.tweak.Scaled", "keys": "image"}
        )
        (folder / "configs" / "inference.json").write_text(json.dumps(config))
        folders[name] = folder
    registry = discover(list(folders.values()), device="cpu", builtins=False, entry_points=False)
    volume = ct_volume((16, 16, 16))
    first_a = registry.get("a").predict(volume).label_map
    b = registry.get("b").predict(volume).label_map
    again_a = registry.get("a").predict(volume).label_map
    assert first_a is not None and b is not None
    np.testing.assert_array_equal(first_a, again_a)
    assert len(np.unique(first_a)) > 1
    assert len(np.unique(b)) == 1  # b zeroes its input: one constant answer
    assert not np.array_equal(first_a, b)


def test_boxes_become_segments_on_the_source_grid() -> None:
    """box_segments: each box paints the source voxels whose centres lie inside it; the higher
    score wins an overlap; a box left without voxels of its own gets no segment."""
    from node.models.bundle_outputs import box_label_map, findings_and_boxes

    volume = _oblique_volume()  # (6, 10, 12), not aligned with any patient axis
    image = volume_metatensor(volume)
    boxes = np.array(
        [
            [3.0, 2.0, 1.0, 5.0, 4.0, 3.0],  # columns 3-5, rows 2-4, slices 1-3
            [3.2, 2.2, 1.2, 4.8, 3.8, 2.8],  # inside the first, lower score: nothing of its own
            [7.0, 6.0, 2.0, 10.0, 8.0, 4.0],  # columns 7-10, rows 6-8, slices 2-4
        ]
    )
    result = {
        "box": boxes,
        "label": np.array([0, 0, 0]),
        "label_scores": np.array([0.9, 0.5, 0.7]),
        "image": image,
    }
    found, voxel_boxes = findings_and_boxes(
        result,
        space=BoxSpace(mode="xyzxyz", is_world=False, is_lps=False),
        volume=volume,
        types={0: NODULE},
        default_type=NODULE,
    )
    assert [f.score for f in found] == pytest.approx([0.9, 0.7, 0.5])
    abnormal = Code("49755003", "SCT", "Morphologically Abnormal Structure")
    labels, segments, tagged = box_label_map(
        found, voxel_boxes, volume, categories={}, default_category=abnormal
    )
    expected = np.zeros(volume.voxels.shape, dtype=np.uint8)
    expected[2:5, 6:9, 7:11] = 2
    expected[1:4, 2:5, 3:6] = 1
    np.testing.assert_array_equal(labels, expected)
    assert [s.label for s in segments] == [1, 2]
    assert [f.segment_label for f in tagged] == [1, 2, None]
    assert all(s.property_type == NODULE and s.category == abnormal for s in segments)
    assert [s.tracking_id for s in segments] == [f.tracking_id for f in tagged[:2]]
    # the segment holds the finding's own centre voxel, which the SR measures on
    for f in tagged[:2]:
        assert labels[f.center_voxel] == f.segment_label


def test_world_boxes_become_segments_through_their_corners() -> None:
    """An LPS world box: painted where the source grid's voxel centres fall inside it."""
    from node.models.bundle_outputs import box_label_map, findings_and_boxes

    volume = ct_volume((6, 10, 12))
    affine = lps_affine(volume)
    lo, hi = (affine @ [2.0, 3.0, 1.0, 1.0])[:3], (affine @ [5.0, 6.0, 3.0, 1.0])[:3]
    box = np.concatenate([np.minimum(lo, hi), np.maximum(lo, hi)])[None]
    found, voxel_boxes = findings_and_boxes(
        {"box": box, "label_scores": np.array([0.8])},
        space=BoxSpace(mode="xyzxyz", is_world=True, is_lps=True),
        volume=volume,
        types={},
        default_type=NODULE,
    )
    labels, segments, _ = box_label_map(
        found, voxel_boxes, volume, categories={}, default_category=NODULE
    )
    expected = np.zeros(volume.voxels.shape, dtype=np.uint8)
    expected[1:4, 3:7, 2:6] = 1
    np.testing.assert_array_equal(labels, expected)
    assert len(segments) == 1
