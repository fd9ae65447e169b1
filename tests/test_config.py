from __future__ import annotations

from pathlib import Path

import pytest

from node.config import (
    Config,
    DimseDestination,
    FolderDestination,
    UpsDimseSource,
    load_config,
    parse_config,
)
from node.errors import ConfigError


def test_empty_file_and_no_file_give_defaults(tmp_path: Path) -> None:
    empty = tmp_path / "ainode.yaml"
    empty.write_text("")
    config = load_config(empty)
    assert config.node.ae_title == Config().node.ae_title == "AINODE"
    assert config.node.data_dir == tmp_path.resolve() / "ainode-data"
    assert load_config(None).study.stable_seconds == 30.0


def test_unknown_key_reports_file_line_and_column() -> None:
    text = "node:\n  ae_title: AI\n  dicom_prt: 104\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text, source="a.yaml")
    assert exc.value.problems == ["a.yaml:3:3: unknown key 'node.dicom_prt'"]


def test_destination_types_are_discriminated() -> None:
    text = (
        "destinations:\n"
        "  pacs: {type: dimse, host: 127.0.0.1, port: 4242, ae_title: ORTHANC}\n"
        "  web:\n"
        "    type: dicomweb\n"
        "    url: http://127.0.0.1:8042/dicom-web\n"
        "    colour: blue\n"
    )
    with pytest.raises(ConfigError) as exc:
        parse_config(text, source="c.yaml")
    assert len(exc.value.problems) == 1
    assert exc.value.problems[0].startswith(
        "c.yaml:6:5: unknown key 'destinations.web.dicomweb.colour'"
    )
    ok = parse_config(text.replace("    colour: blue\n", ""))
    assert isinstance(ok.destinations["pacs"], DimseDestination)
    assert ok.destinations["pacs"].port == 4242


def test_bad_value_and_yaml_syntax_errors_have_positions() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config("node:\n  dicom_port: 70000\n", source="b.yaml")
    assert exc.value.problems[0].startswith("b.yaml:2:3: node.dicom_port:")
    with pytest.raises(ConfigError) as exc:
        parse_config("node: [1, 2\n", source="d.yaml")
    assert exc.value.problems[0].startswith("d.yaml:")
    assert "YAML syntax error" in exc.value.problems[0]


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "ainode.yaml"
    cfg.write_text("node: {data_dir: data}\nrules: rules.yaml\n")
    config = load_config(cfg)
    assert config.node.data_dir == tmp_path.resolve() / "data"
    assert config.rules == tmp_path.resolve() / "rules.yaml"


def test_shipped_example_config_is_valid() -> None:
    root = Path(__file__).resolve().parent.parent
    config = load_config(root / "deploy" / "ainode.example.yaml")
    assert set(config.destinations) == {"pacs", "viewer-web", "orthanc", "archive"}
    assert config.node.tls.port == 2762


def test_configuration_doc_names_every_key() -> None:
    from pydantic import BaseModel

    from node import config as cfg

    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    missing = []
    for model in (
        cfg.Config,
        cfg.NodeConfig,
        cfg.TlsConfig,
        cfg.HttpTlsConfig,
        cfg.StudyConfig,
        cfg.DimseDestination,
        cfg.DicomwebDestination,
        cfg.OrthancDestination,
        cfg.FolderDestination,
        cfg.DimseSource,
        cfg.DicomwebSource,
        cfg.UpsDimseSource,
        cfg.UpsDimseConfig,
        cfg.UpsEventAe,
        cfg.InferenceConfig,
        cfg.ResultsConfig,
        cfg.PriorsConfig,
        cfg.RetentionConfig,
        cfg.AuthConfig,
        cfg.DeliveryConfig,
        cfg.ConsoleConfig,
    ):
        assert issubclass(model, BaseModel)
        for name in model.model_fields:
            if f"`{name}`" not in doc and f"`{name}," not in doc and f".{name}`" not in doc:
                missing.append(f"{model.__name__}.{name}")
    assert missing == []


def test_absolute_folder_destination_path_is_kept(tmp_path: Path) -> None:
    cfg = tmp_path / "ainode.yaml"
    cfg.write_text(f"destinations:\n  archive: {{type: folder, path: {tmp_path / 'out'}}}\n")
    dest = load_config(cfg).destinations["archive"]
    assert isinstance(dest, FolderDestination) and dest.path == tmp_path / "out"


def test_ups_rs_source_and_its_fetch_from() -> None:
    cfg = parse_config(
        "sources:\n"
        "  pacs: {type: dicomweb, url: 'http://pacs/dicom-web'}\n"
        "  ris: {type: ups-rs, url: 'http://ris/dicom-web', codes: [LUNG-AI], station: AI-1,\n"
        "        fetch_from: pacs, poll_seconds: 2}\n"
    )
    ris = cfg.sources["ris"]
    assert ris.type == "ups-rs" and ris.codes == ["LUNG-AI"] and ris.station == "AI-1"
    with pytest.raises(ConfigError, match="fetch_from: 'ris' is not a dicomweb source"):
        parse_config("sources:\n  ris: {type: ups-rs, url: 'http://r', fetch_from: ris}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'sources\.ris\.ups-rs\.codez'"):
        parse_config("sources:\n  ris: {type: ups-rs, url: 'http://r', codez: [X]}\n")
    with pytest.raises(ConfigError, match="poll_seconds"):
        parse_config("sources:\n  ris: {type: ups-rs, url: 'http://r', poll_seconds: 0}\n")


def test_ups_dimse_is_off_by_default_and_needs_the_main_process_listener() -> None:
    assert parse_config("").node.ups_dimse.enabled is False
    on = "node:\n  ups_dimse:\n    enabled: true\n    event_aets: {RIS: {host: ris, port: 104}}\n"
    config = parse_config(on)
    assert config.node.ups_dimse.event_aets["RIS"].port == 104
    with pytest.raises(ConfigError) as err:
        parse_config(on + "  receivers: 2\n")
    assert "node.receivers to 1" in str(err.value)


def test_ups_dimse_source_is_a_worklist() -> None:
    text = (
        "sources:\n  ris: {type: ups-dimse, host: ris, port: 104, ae_title: RIS,"
        " codes: [LUNG-AI], method: c-move}\n"
    )
    src = parse_config(text).sources["ris"]
    assert isinstance(src, UpsDimseSource) and src.method == "c-move" and src.poll_seconds == 10
    with pytest.raises(ConfigError) as err:
        parse_config(text.replace("c-move", "wado"))
    assert "method" in str(err.value)
