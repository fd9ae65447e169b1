"""The node's configuration: one YAML file validated by pydantic (docs/configuration.md).

Every key has a default, so an empty file (or no file) gives a working node on loopback.
Unknown keys are errors reported as ``FILE:LINE:COL: message``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.reader import ReaderError

from node.errors import ConfigError

__all__ = [
    "AllowedCaller",
    "AuthConfig",
    "CeleryConfig",
    "Config",
    "ConsoleConfig",
    "DicomwebDestination",
    "DeliveryConfig",
    "DicomwebSource",
    "DimseDestination",
    "DimseSource",
    "FolderDestination",
    "HttpTlsConfig",
    "InferenceConfig",
    "NodeConfig",
    "OrthancDestination",
    "ResultsConfig",
    "RetentionConfig",
    "StudyConfig",
    "TlsConfig",
    "TokenConfig",
    "UpsDimseConfig",
    "UpsDimseSource",
    "UpsEventAe",
    "WORKLIST_SOURCE_TYPES",
    "UpsRsSource",
    "UserConfig",
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


class HttpTlsConfig(_Strict):
    """HTTPS for the node's HTTP listener (API, console, STOW-RS): PEM files.

    HTTPS is on when ``cert`` is set; it is then served on ``node.http_port`` instead of HTTP.
    """

    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    require_client_cert: bool = False


class AllowedCaller(_Strict):
    """A calling AE title allowed only from listed hosts (IP address, CIDR or host name)."""

    ae_title: str = Field(min_length=1, max_length=16)
    hosts: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _hosts_not_blank(self) -> AllowedCaller:
        if any(not h.strip() for h in self.hosts):
            raise ValueError("hosts: an entry is empty")
        return self


class UpsEventAe(_Strict):
    """Where a UPS DIMSE subscriber listens for N-EVENT-REPORTs."""

    host: str
    port: int = Field(ge=1, le=65535)


class UpsDimseConfig(_Strict):
    """UPS over DIMSE on the node's DICOM listener: ainode as a Task Manager (PS3.4 Annex CC).

    Off by default: with it on, every allowed calling AE may create, claim and change the
    node's workitems over DIMSE (UPS-RS needs an ``operator`` token for the same).
    """

    enabled: bool = Field(
        default=False,
        description="serve UPS Push, Pull and Watch (SCP) on node.dicom_port and node.tls.port",
    )
    event_aets: dict[Annotated[str, Field(min_length=1, max_length=16)], UpsEventAe] = Field(
        default_factory=dict,
        description="AE title -> {host, port} of AEs that may subscribe (N-EVENT-REPORTs go there)",
    )


class NodeConfig(_Strict):
    ae_title: str = Field(default="AINODE", min_length=1, max_length=16)
    host: str = "127.0.0.1"
    dicom_port: int = Field(default=11112, ge=0, le=65535)
    http_port: int = Field(default=8080, ge=0, le=65535)
    data_dir: Path = Path("ainode-data")
    public_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="the node's HTTP base URL as other systems reach it (e.g. "
        "https://ainode.example.org:8443): Retrieve URLs of the workitems rules schedule",
    )
    allowed_calling_aets: list[str | AllowedCaller] = Field(
        default_factory=list,
        description="AE titles (any address) or {ae_title, hosts}; empty = every AE",
    )
    max_associations: int = Field(default=16, ge=1, le=512)
    max_pdu: int = Field(
        default=1024 * 1024,
        ge=0,
        description="largest P-DATA PDU we receive; longer PDUs abort; 0 = unlimited (unsafe)",
    )
    max_instance_bytes: int = Field(
        default=4 * 1024**3, ge=1024, description="refuse (0xA700) a larger received instance"
    )
    network_timeout_seconds: float = Field(default=60.0, gt=0)
    stow_max_bytes: int = Field(default=2 * 1024**3, ge=1)
    quota_bytes: int | None = Field(default=None, ge=1, description="refuse ingest above this size")
    min_free_bytes: int = Field(default=512 * 1024**2, ge=0, description="refuse ingest below this")
    ingest_sync: Literal["auto", "full"] = "auto"
    receivers: Literal["auto"] | Annotated[int, Field(ge=1, le=64)] = Field(
        default=1,
        description="DICOM receiver processes on dicom_port; auto = one per CPU (at most 8)",
    )
    tls: TlsConfig = Field(default_factory=TlsConfig)
    ups_dimse: UpsDimseConfig = Field(default_factory=UpsDimseConfig)
    http_tls: HttpTlsConfig = Field(default_factory=HttpTlsConfig)
    shutdown_grace_seconds: float = Field(
        default=30.0,
        ge=0,
        description="on SIGTERM: longest wait for open associations and running jobs",
    )

    @model_validator(mode="after")
    def _ups_in_process(self) -> NodeConfig:
        if self.ups_dimse.enabled and self.receivers != 1:
            raise ValueError(
                "ups_dimse: UPS over DIMSE is served by the node's own DICOM listener, not by"
                " receiver processes; set node.receivers to 1 or ups_dimse.enabled to false"
            )
        return self


class StudyConfig(_Strict):
    stable_seconds: float = Field(default=30.0, ge=0)


class _DimsePeer(_Strict):
    """What every DICOM (DIMSE) peer needs: where it listens and who we are to it."""

    host: str
    port: int = Field(ge=1, le=65535)
    ae_title: str = Field(default="ANY-SCP", max_length=16)
    calling_ae_title: str | None = Field(default=None, max_length=16)
    tls: TlsConfig | None = None


class _DicomwebPeer(_Strict):
    """What every DICOMweb peer needs: its base URL, authentication and TLS trust."""

    url: str
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str | None = None
    password: str | None = None
    token: str | None = None
    verify_tls: bool = True
    ca: Path | None = Field(default=None, description="PEM CA bundle trusted for HTTPS")


class DimseDestination(_DimsePeer):
    type: Literal["dimse"] = "dimse"
    sop_classes: list[str] | None = None
    transfer_syntaxes: list[str] | None = None
    sc_fallback: bool = False
    rejection_notes: bool = Field(
        default=True,
        description="send IOCM rejection notes (KOS) for superseded or retracted results",
    )


class DicomwebDestination(_DicomwebPeer):
    type: Literal["dicomweb"]
    sop_classes: list[str] | None = None
    sc_fallback: bool = False
    rejection_notes: bool = Field(
        default=True,
        description="send IOCM rejection notes (KOS) for superseded or retracted results",
    )


class OrthancDestination(_Strict):
    type: Literal["orthanc"]
    url: str
    username: str | None = None
    password: str | None = None
    labels: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(
        default_factory=dict, description="set on each stored instance (Orthanc UserMetadata)"
    )
    verify_tls: bool = True
    ca: Path | None = Field(default=None, description="PEM CA bundle trusted for HTTPS")
    rejection_notes: bool = Field(
        default=True,
        description="send IOCM rejection notes (KOS) for superseded or retracted results",
    )
    delete_rejected: bool = Field(
        default=False,
        description="delete superseded or retracted results from this Orthanc (REST DELETE)",
    )


class FolderDestination(_Strict):
    type: Literal["folder"]
    path: Path
    rejection_notes: bool = Field(
        default=True,
        description="send IOCM rejection notes (KOS) for superseded or retracted results",
    )


Destination = Annotated[
    DimseDestination | DicomwebDestination | OrthancDestination | FolderDestination,
    Field(discriminator="type"),
]


class DimseSource(_DimsePeer):
    type: Literal["dimse"] = "dimse"
    method: Literal["c-move", "c-get"] = "c-move"


class DicomwebSource(_DicomwebPeer):
    type: Literal["dicomweb"]


class _Performer(_Strict):
    """What every worklist source (a UPS Task Manager this node performs for) says."""

    codes: list[Annotated[str, Field(min_length=1, max_length=16)]] = Field(
        default_factory=list,
        description="Scheduled Workitem Code values taken (CodeValue); empty = every workitem",
    )
    station: str | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="only workitems whose Scheduled Station Name code value is this",
    )
    poll_seconds: float = Field(default=10.0, gt=0, description="search interval")
    result_timeout_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="longest wait for a workitem's jobs and deliveries before it is canceled",
    )


class UpsRsSource(_DicomwebPeer, _Performer):
    """A UPS-RS Task Manager (PS3.18 section 11) whose workitems this node performs.

    ``url`` is the manager's DICOMweb base (``.../dicom-web``); the node searches it for
    SCHEDULED workitems with one of ``codes`` (Scheduled Workitem Code Sequence) and, when set,
    ``station`` (Scheduled Station Name Code Sequence), claims each, fetches its input with
    WADO-RS, routes it with the node's rules and completes it (docs/workflow.md).
    """

    type: Literal["ups-rs"]
    events: bool = Field(
        default=True,
        description=(
            "also listen on the manager's UPS-RS event channel (subscribed as node.ae_title):"
            " a new SCHEDULED workitem is searched for at once, a cancel request is honoured"
        ),
    )
    fetch_from: str | None = Field(
        default=None,
        description=(
            "a dicomweb source to fetch inputs from when a workitem gives no Retrieve URL (or one"
            " not under this source's url); without it such inputs are fetched from url"
        ),
    )


class UpsDimseSource(_DimsePeer, _Performer):
    """A UPS DIMSE Task Manager (PS3.4 Annex CC) whose workitems this node performs.

    ``host``/``port``/``ae_title`` are the manager's UPS SCP; the node finds SCHEDULED
    workitems with C-FIND (UPS Pull), claims each with N-ACTION, reports progress and completes
    it with N-SET and N-ACTION; inputs are fetched with ``method`` from the Retrieve AE Title of
    the Input Information Sequence (a ``dimse`` source with that AE title, or the manager).
    """

    type: Literal["ups-dimse"]
    method: Literal["c-move", "c-get"] = Field(
        default="c-get", description="how inputs are fetched from their Retrieve AE Title"
    )
    events: bool = Field(
        default=True,
        description=(
            "subscribe node.ae_title to the manager's global subscription (N-ACTION) and take"
            " its N-EVENT-REPORTs on node.dicom_port: a SCHEDULED workitem is searched for at"
            " once, a cancel request is honoured (the manager must know node.ae_title's address)"
        ),
    )


#: Source types that are worklists (UPS performers), not places studies are pulled from.
WORKLIST_SOURCE_TYPES = frozenset({"ups-rs", "ups-dimse"})

Source = Annotated[
    DimseSource | DicomwebSource | UpsRsSource | UpsDimseSource, Field(discriminator="type")
]


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


class ResultsConfig(_Strict):
    """How a rule's results are delivered (docs/results.md, "One result set per study and rule")."""

    combine: bool = Field(
        default=True,
        description="one SEG/SR/key images/KOS per study and rule with several models "
        "(a rule's results.combine overrides it)",
    )


class PriorsConfig(_Strict):
    """Prior studies fetched for a rule's ``priors`` (docs/followup.md, "Priors")."""

    timeout_seconds: float = Field(
        default=300.0,
        gt=0,
        le=86400,
        description="how long a study's jobs wait for their prior; then they run without it",
    )
    retry_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description="pause between attempts while the source cannot be reached",
    )


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
    workitems_days: float | None = Field(
        default=None,
        ge=0,
        description="remove COMPLETED/CANCELED workitems this long after their last change, "
        "unless a subscriber holds a deletion lock (default: retention.days)",
    )
    quarantine_days: float | None = Field(
        default=None,
        ge=0,
        description="remove refused files from data_dir/quarantine this long after they came "
        "(default: retention.days)",
    )


class CeleryConfig(_Strict):
    """The distributed engine (``queue: redis://HOST:PORT/DB``) and its workers (docs/scale-out.md).

    Node side: how jobs are published; worker side (``ainode worker``): where the node is.
    """

    visibility_timeout_seconds: float | None = Field(
        default=None, gt=0, description="unacked job redelivered after; default job timeout + 60"
    )
    unacked_restore_interval_seconds: float = Field(default=5.0, gt=0)
    stat_priority: int = Field(default=100, description="jobs at this priority use the STAT lane")
    publish_interval_seconds: float = Field(default=0.5, gt=0)
    node_url: str | None = Field(
        default=None, description="worker: the node's HTTP base URL (default node.host:http_port)"
    )
    shared_data_dir: Path | None = Field(
        default=None, description="worker: the node's data_dir mounted here (read, no WADO-RS)"
    )
    worker_name: str | None = None
    callback_timeout_seconds: float = Field(
        default=120.0, gt=0, description="worker: keep retrying the node this long, then requeue"
    )


Role = Literal["viewer", "reviewer", "operator", "admin"]


class UserConfig(_Strict):
    """A local console/API user: an argon2 hash (``ainode users hash-password``) and a role."""

    password_hash: str = Field(pattern=r"^\$argon2(id|i|d)\$", repr=False)
    role: Role = "viewer"


class TokenConfig(_Strict):
    """A machine token: the secret comes from a file or an environment variable, never inline."""

    token_file: Path | None = None
    token_env: str | None = Field(default=None, min_length=1)
    role: Role = "viewer"

    @model_validator(mode="after")
    def _one_source(self) -> TokenConfig:
        if (self.token_file is None) == (self.token_env is None):
            raise ValueError("set exactly one of token_file or token_env")
        return self


class AuthConfig(_Strict):
    allow_anonymous: bool = Field(
        default=False,
        description="serve HTTP on a non-loopback host with no users or tokens (anyone = admin)",
    )
    token: str | None = Field(default=None, repr=False)
    token_file: Path | None = None
    users: dict[str, UserConfig] = Field(default_factory=dict)
    tokens: dict[str, TokenConfig] = Field(default_factory=dict)
    login_max_failures: int = Field(default=5, ge=1)
    login_window_seconds: float = Field(default=60.0, gt=0)
    session_hours: float = Field(default=12.0, gt=0)


def _phi_roles() -> list[Role]:
    return ["reviewer", "operator", "admin"]


class ConsoleConfig(_Strict):
    """The console and the studies list/search (``/console``, ``/api/studies``)."""

    phi_roles: list[Role] = Field(
        default_factory=_phi_roles,
        description=(
            "roles that see and search patient data (Patient ID, Patient's Name, Accession"
            " Number) in the studies list and study pages; other roles see it masked and are"
            " refused a search by it (403). Each view is audited (phi.viewed)"
        ),
    )
    stuck_minutes: float = Field(
        default=60.0,
        gt=0,
        description=(
            "the dashboard lists studies in one state longer than this: open past the stable"
            " window, a job queued or running, a delivery pending (GET /api/stuck-studies)"
        ),
    )
    viewer_url: str | None = Field(
        default=None,
        description=(
            "URL template of an image viewer with {study_uid} (URL-encoded on use), e.g."
            " https://ohif.example/viewer?StudyInstanceUIDs={study_uid}: an 'Open in viewer'"
            " link on every study and result"
        ),
    )

    @model_validator(mode="after")
    def _template(self) -> ConsoleConfig:
        if self.viewer_url is not None and "{study_uid}" not in self.viewer_url:
            raise ValueError("viewer_url must contain {study_uid}")
        if self.viewer_url is not None:
            try:
                self.viewer_url.format(study_uid="x")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"viewer_url: only {{study_uid}} may be in braces ({exc})"
                ) from exc
        return self


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
    results: ResultsConfig = Field(default_factory=ResultsConfig)
    priors: PriorsConfig = Field(default_factory=PriorsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    celery: CeleryConfig = Field(default_factory=CeleryConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)

    @model_validator(mode="after")
    def _fetch_from(self) -> Config:
        for name, src in self.sources.items():
            if isinstance(src, UpsRsSource) and src.fetch_from is not None:
                other = self.sources.get(src.fetch_from)
                if not isinstance(other, DicomwebSource):
                    raise ValueError(
                        f"sources.{name}.fetch_from: {src.fetch_from!r} is not a dicomweb source"
                    )
        return self


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
    except ReaderError as exc:  # a character YAML does not allow (control characters)
        before = text[: max(exc.position, 0)]
        where = f"{before.count(chr(10)) + 1}:{len(before) - (before.rfind(chr(10)) + 1) + 1}"
        code = (
            exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or " ")
        )
        raise ConfigError(
            [f"{source}:{where}: YAML syntax error: character U+{code:04X} is not allowed"]
        ) from exc
    except YAMLError as exc:
        raise ConfigError([f"{source}:1:1: YAML syntax error: {exc}"]) from exc
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
