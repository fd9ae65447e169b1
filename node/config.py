"""The node's configuration: one YAML file validated by pydantic (see ../shared/DESIGN.md).

Every key has a default, so an empty file (or no file) gives a working node on loopback.
Unknown keys are errors reported as ``FILE:LINE:COL: message``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from node.errors import ConfigError

__all__ = [
    "AuthConfig",
    "Config",
    "DicomwebDestination",
    "DeliveryConfig",
    "DicomwebSource",
    "DimseDestination",
    "DimseSource",
    "FolderDestination",
    "InferenceConfig",
    "NodeConfig",
    "OrthancDestination",
    "RetentionConfig",
    "StudyConfig",
    "TlsConfig",
    "load_config",
    "parse_config",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Strict):
    """TLS for a DICOM listener or client: PEM files; ``port`` is the SCP's TLS port (0 = off)."""

    port: int = Field(default=0, ge=0, le=65535)
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    require_client_cert: bool = False


class NodeConfig(_Strict):
    ae_title: str = Field(default="AINODE", min_length=1, max_length=16)
    host: str = "127.0.0.1"
    dicom_port: int = Field(default=11112, ge=0, le=65535)
    http_port: int = Field(default=8080, ge=0, le=65535)
    data_dir: Path = Path("ainode-data")
    allowed_calling_aets: list[str] = Field(default_factory=list)
    max_associations: int = Field(default=16, ge=1, le=512)
    max_pdu: int = Field(default=0, ge=0, description="0 = unlimited")
    network_timeout_seconds: float = Field(default=60.0, gt=0)
    stow_max_bytes: int = Field(default=2 * 1024**3, ge=1)
    quota_bytes: int | None = Field(default=None, ge=1, description="refuse ingest above this size")
    min_free_bytes: int = Field(default=512 * 1024**2, ge=0, description="refuse ingest below this")
    tls: TlsConfig = Field(default_factory=TlsConfig)
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="on SIGTERM: longest wait for open associations and running jobs",
    )


class StudyConfig(_Strict):
    stable_seconds: float = Field(default=30.0, ge=0)


class DimseDestination(_Strict):
    type: Literal["dimse"] = "dimse"
    host: str
    port: int = Field(ge=1, le=65535)
    ae_title: str = Field(default="ANY-SCP", max_length=16)
    calling_ae_title: str | None = Field(default=None, max_length=16)
    tls: TlsConfig | None = None
    sop_classes: list[str] | None = None
    transfer_syntaxes: list[str] | None = None
    sc_fallback: bool = False


class DicomwebDestination(_Strict):
    type: Literal["dicomweb"]
    url: str
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str | None = None
    password: str | None = None
    token: str | None = None
    verify_tls: bool = True
    sop_classes: list[str] | None = None
    sc_fallback: bool = False


class OrthancDestination(_Strict):
    type: Literal["orthanc"]
    url: str
    username: str | None = None
    password: str | None = None
    labels: list[str] = Field(default_factory=list)
    verify_tls: bool = True


class FolderDestination(_Strict):
    type: Literal["folder"]
    path: Path


Destination = Annotated[
    DimseDestination | DicomwebDestination | OrthancDestination | FolderDestination,
    Field(discriminator="type"),
]


class DimseSource(_Strict):
    type: Literal["dimse"] = "dimse"
    host: str
    port: int = Field(ge=1, le=65535)
    ae_title: str = Field(default="ANY-SCP", max_length=16)
    calling_ae_title: str | None = Field(default=None, max_length=16)
    tls: TlsConfig | None = None
    method: Literal["c-move", "c-get"] = "c-move"


class DicomwebSource(_Strict):
    type: Literal["dicomweb"]
    url: str
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str | None = None
    password: str | None = None
    token: str | None = None
    verify_tls: bool = True


Source = Annotated[DimseSource | DicomwebSource, Field(discriminator="type")]


class DeliveryConfig(_Strict):
    """Outbox retry policy: exponential back-off with jitter, then dead letter."""

    max_attempts: int = Field(default=30, ge=1)
    backoff_base_seconds: float = Field(default=5.0, gt=0)
    backoff_max_seconds: float = Field(default=600.0, gt=0)
    batch_size: int = Field(default=64, ge=1, le=1000, description="instances per association")
    timeout_seconds: float = Field(default=60.0, gt=0, description="network timeout per send")


class InferenceConfig(_Strict):
    device: str = "auto"
    torch_threads: int = Field(default=0, ge=0, description="0 = torch default")
    workers: int = Field(default=1, ge=1, le=64)
    job_timeout_seconds: float = Field(default=1800.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=100, description="runs of a job before dead")


class RetentionConfig(_Strict):
    """Removal of finished studies (``node.store.retention``); nothing is removed by default."""

    days: float | None = Field(default=None, ge=0)
    low_watermark_bytes: int | None = Field(
        default=None, ge=0, description="remove oldest finished studies below this headroom"
    )
    free_target_bytes: int | None = Field(
        default=None, ge=0, description="...until this headroom (default: the low watermark)"
    )
    interval_seconds: float = Field(default=300.0, gt=0)


class AuthConfig(_Strict):
    token: str | None = None
    token_file: Path | None = None


class Config(_Strict):
    """The whole configuration file."""

    node: NodeConfig = Field(default_factory=NodeConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)
    rules: Path | None = None
    destinations: dict[str, Destination] = Field(default_factory=dict)
    sources: dict[str, Source] = Field(default_factory=dict)
    delivery: DeliveryConfig = Field(default_factory=DeliveryConfig)
    models: list[Path] = Field(default_factory=list)
    queue: str = "embedded"
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)


def _position(data: Any, loc: Sequence[int | str]) -> tuple[int, int]:
    """1-based (line, column) of the deepest YAML node that ``loc`` reaches."""
    line, col = 0, 0
    node = data
    for part in loc:
        lc = getattr(node, "lc", None)
        if isinstance(node, Mapping) and part in node:
            if lc is not None:
                line, col = lc.key(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            if lc is not None:
                line, col = lc.item(part)
            node = node[part]
        elif lc is not None and not isinstance(part, int) and isinstance(node, Mapping):
            # discriminator tags and the like are not keys; keep looking deeper
            continue
    if line == col == 0 and getattr(data, "lc", None) is not None:
        return 1, 1
    return line + 1, col + 1


def parse_config(text: str, *, source: str = "<config>", base_dir: Path | None = None) -> Config:
    """Validate YAML ``text`` into a ``Config``.

    Parameters
    ----------
    text:
        The YAML document; empty text gives all defaults.
    source:
        The file name used in error lines.
    base_dir:
        Relative paths in the file (data_dir, rules, models, folders) are resolved against it.

    Raises
    ------
    ConfigError
        With one ``FILE:LINE:COL: message`` line per problem.
    """
    try:
        data = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{mark.line + 1}:{mark.column + 1}" if mark else "1:1"
        raise ConfigError([f"{source}:{where}: YAML syntax error: {exc.problem}"]) from exc
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError([f"{source}:1:1: the config file must be a mapping of keys"])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            line, col = _position(data, err["loc"])
            key = ".".join(str(p) for p in err["loc"])
            if err["type"] == "extra_forbidden":
                msg = f"unknown key '{key}'"
            else:
                msg = f"{key}: {err['msg']}"
            problems.append(f"{source}:{line}:{col}: {msg}")
        raise ConfigError(problems) from exc
    return _resolve_paths(config, base_dir) if base_dir is not None else config


def _resolve_paths(config: Config, base: Path) -> Config:
    def res(p: Path | None) -> Path | None:
        # an absolute path stays as it is (returning None here lost folder destinations)
        return p if p is None or p.is_absolute() else base / p

    node = config.node.model_copy(
        update={"data_dir": res(config.node.data_dir) or config.node.data_dir}
    )
    dests = {
        name: d.model_copy(update={"path": res(d.path)}) if isinstance(d, FolderDestination) else d
        for name, d in config.destinations.items()
    }
    return config.model_copy(
        update={
            "node": node,
            "rules": res(config.rules) or config.rules,
            "models": [res(m) or m for m in config.models],
            "destinations": dests,
        }
    )


def load_config(path: Path | None) -> Config:
    """Load the config file at ``path``; ``None`` or a missing default file gives all defaults.

    Raises
    ------
    ConfigError
        The file cannot be read or is invalid.
    """
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}:1:1: cannot read config file: {exc.strerror}"]) from exc
    return parse_config(text, source=str(path), base_dir=path.resolve().parent)
