"""One typed settings object for the balancer: defaults, a TOML file, `RINGLB_*` environment,
CLI flags.

Precedence: command-line flag > environment variable > config file (`--config`) > default.
Every field is also a `ringlb serve --flag` (underscores become dashes); `cli.py` derives the
flags from this model so the list of options exists once.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ringlb.contract import is_valid_hostname
from ringlb.dataplane.keys import DEFAULT_KEY_SOURCE, make_key_source

RuntimeName = Literal["process", "docker", "swarm"]


class SettingsError(ValueError):
    """A bad setting; the message names the option, its variable and the value."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RINGLB_", extra="forbid")

    host: str = Field("127.0.0.1", description="Address the balancer listens on.")
    port: int = Field(5000, ge=0, le=65535, description="Port of the balancer (0: any free).")
    replicas: int = Field(3, ge=0, description="Initial replica count N.")
    hostnames: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Initial hostnames, comma-separated; missing ones are server_<i>.",
    )
    max_replicas: int = Field(50, ge=1, description="Upper bound on N for /add.")
    policy: str = Field(
        "maglev",
        description="Balancing policy name (`assignment` is the specification's ring).",
    )
    policy_options: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict,
        description="Options of the policy: a JSON object or comma-separated key=value pairs "
        "(e.g. 'hash=murmur3,vnodes=200,bounded=true').",
    )
    key_source: str = Field(
        DEFAULT_KEY_SOURCE,
        description="What the request key is computed on: x-request-id, header:NAME, "
        "cookie:NAME, client, path, query:NAME or random.",
    )
    weights: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=dict,
        description="Replica weights as comma-separated name=weight pairs (others weigh 1).",
    )
    runtime: RuntimeName = Field("process", description="Where replicas run.")
    replica_command: str | None = Field(
        None,
        description="process runtime: command starting one replica, with {python}, {name}, "
        "{host} and {port} placeholders (default: ringlb's own replica server).",
    )
    # The docker_* settings serve the swarm runtime too (same images, same engine API).
    docker_image: str = Field(
        "ringlb:latest", description="docker and swarm runtimes: replica image."
    )
    docker_network: str = Field(
        "net1",
        description="docker and swarm runtimes: network of the replicas (on swarm, an "
        "attachable overlay network, created when missing).",
    )
    docker_owner: str = Field(
        "ringlb",
        description="docker and swarm runtimes: value of the ringlb.owner label; a balancer "
        "adopts the replicas carrying its owner label.",
    )
    docker_api_timeout: float = Field(
        10.0, gt=0, description="docker and swarm runtimes: deadline of one Docker API call (s)."
    )
    docker_memory: str = Field(
        "256m",
        pattern=r"^[0-9]+[bkmg]?$",
        description="docker and swarm runtimes: memory per replica.",
    )
    docker_cpus: float = Field(
        1.0, gt=0, description="docker and swarm runtimes: CPUs per replica."
    )
    docker_pids: int = Field(
        128, ge=8, description="docker and swarm runtimes: processes per replica."
    )
    docker_read_only: bool = Field(
        True, description="docker and swarm runtimes: replicas get a read-only root filesystem."
    )
    docker_keep_dead: float = Field(
        60.0,
        ge=0,
        description="docker runtime: seconds a replica container that stopped on its own is "
        "left for its owner to remove (`docker stop X && docker rm X`) before ringlb removes "
        "it (0: at once).",
    )
    swarm_constraints: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="swarm runtime: placement constraints of every replica service, "
        "comma-separated (e.g. 'node.role==worker,node.labels.zone==a').",
    )
    swarm_poll_interval: float = Field(
        0.5,
        gt=0,
        description="swarm runtime: seconds between looks at the replicas' tasks (Swarm has "
        "no task events; heartbeats see deaths too).",
    )
    swarm_image_by_id: bool = Field(
        True,
        description="swarm runtime: name the replica image by its ID in the services, so that "
        "nodes use the image they hold instead of trying to pull it (no registry).",
    )
    # Several balancers on one swarm share its membership; a lease in the engine makes one
    # of them the leader, which alone respawns and autoscales (docs/swarm.md).
    lease_time: float = Field(
        3.0,
        gt=0,
        description="swarm runtime: seconds a leader's lease lasts unrenewed before another "
        "balancer takes over.",
    )
    lease_renew_interval: float = Field(
        1.0,
        gt=0,
        description="swarm runtime: seconds between two renewals of the leader's lease (and "
        "between two looks at it by a follower).",
    )
    balancer_name: str | None = Field(
        None, description="swarm runtime: this balancer's name in the lease (default: hostname)."
    )
    balancer_address: str | None = Field(
        None,
        description="swarm runtime: host:port where the other balancers reach this one's admin "
        "API, to relay writes to the leader (default: its address on the replicas' network, "
        "found from the engine when it runs in a container, else its hostname's; and the admin "
        "port, else the port).",
    )

    heartbeat_interval: float = Field(1.0, gt=0, description="Seconds between heartbeats.")
    heartbeat_timeout: float = Field(0.5, gt=0, description="Heartbeat answer deadline (s).")
    heartbeat_misses: int = Field(
        2, ge=1, description="Missed heartbeats that mark a replica down."
    )
    replica_start_timeout: float = Field(
        20.0, gt=0, description="Seconds a new replica has to answer its first heartbeat."
    )
    drain_timeout: float = Field(
        5.0,
        ge=0,
        description="Seconds in-flight requests get to finish when /rm removes their replica "
        "or when the balancer stops.",
    )

    upstream_connect_timeout: float = Field(1.0, gt=0, description="Connect deadline (s).")
    upstream_timeout: float = Field(30.0, gt=0, description="Deadline for a replica's answer (s).")
    upstream_max_attempts: int = Field(
        3, ge=1, description="Replicas tried per request before answering 502."
    )
    upstream_pool_size: int = Field(
        64, ge=1, description="Max pooled keep-alive connections per replica."
    )
    max_body: int = Field(
        1024**3,
        ge=0,
        description="Largest proxied request body (bytes; streamed, not held); larger: 413.",
    )
    client_header_timeout: float = Field(
        10.0, gt=0, description="Seconds a client has to send a request's line and headers."
    )
    client_body_timeout: float = Field(
        30.0, gt=0, description="Longest pause (s) inside a request body before 408."
    )
    client_idle_timeout: float = Field(
        60.0, gt=0, description="Seconds an idle keep-alive client connection is kept."
    )
    client_send_timeout: float = Field(
        30.0,
        gt=0,
        description="Longest time (s) a client may leave its answer's bytes untaken (its "
        "socket full) before it is cut off.",
    )
    client_send_buffer: int = Field(
        131072,
        ge=0,
        description="Kernel send buffer of each client socket (bytes, SO_SNDBUF; Linux "
        "doubles it); 0: the kernel's autotuning (up to net.ipv4.tcp_wmem's maximum, 4 MiB).",
    )
    max_header_bytes: int = Field(
        65536, ge=1024, description="Largest request line plus headers (bytes); larger: 431."
    )
    max_headers: int = Field(100, ge=1, description="Most request headers; more: 431.")

    seed: int | None = Field(None, description="Seed for generated names and request ids.")
    config: Path | None = Field(
        None,
        description="TOML file of settings, keyed by option name (policy_options and weights "
        "as tables); flags and RINGLB_* variables override it.",
    )
    retry_on_5xx: bool = Field(
        False,
        description="Retry an idempotent request answered 5xx on another replica (the last "
        "attempt's answer is passed through).",
    )
    outlier_consecutive_errors: int = Field(
        5, ge=0, description="5xx answers in a row that eject a replica for a while (0: off)."
    )
    outlier_ejection_time: float = Field(
        10.0, gt=0, description="First ejection of an outlier (s); doubles each time."
    )
    outlier_max_ejections: int = Field(
        3, ge=1, description="Ejections after which an outlier is replaced instead."
    )
    max_inflight: int = Field(
        16384, ge=1, description="Proxied requests being answered at once; more: 503."
    )
    queue_size: int = Field(
        16384, ge=0, description="Requests waiting for a busy replica's connection; more: 503."
    )
    queue_timeout: float = Field(
        30.0, gt=0, description="Longest wait (s) for a busy replica's connection; then 503."
    )
    max_connections: int = Field(
        16384, ge=1, description="Client connections at once; more are answered 503 and closed."
    )
    autoscale: bool = Field(False, description="Scale the replica count with the load.")
    autoscale_min: int = Field(1, ge=1, description="Autoscaler: fewest replicas.")
    autoscale_max: int = Field(10, ge=1, description="Autoscaler: most replicas.")
    autoscale_target_inflight: float = Field(
        8.0, gt=0, description="Autoscaler: in-flight requests per replica it aims at."
    )
    autoscale_tolerance: float = Field(
        0.2, ge=0, lt=1, description="Autoscaler: no change within target x (1 +- this)."
    )
    autoscale_up_cooldown: float = Field(
        10.0, ge=0, description="Autoscaler: seconds after a change before scaling up."
    )
    autoscale_down_cooldown: float = Field(
        30.0, ge=0, description="Autoscaler: seconds after a change before scaling down."
    )
    autoscale_window: float = Field(
        5.0, gt=0, description="Autoscaler: seconds the load is averaged over."
    )
    respawn_backoff: float = Field(
        1.0, gt=0, description="First wait (s) after a failed respawn; doubles per failure."
    )
    respawn_backoff_max: float = Field(30.0, gt=0, description="Longest wait between respawns (s).")
    respawn_stable_after: float = Field(
        10.0,
        ge=0,
        description="A replacement that dies sooner than this (s) counts as a failed respawn.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token required by /add, /rm, PUT /policy (prefer the environment "
        "variable: a flag shows in `ps`).",
    )
    admin_protect_reads: bool = Field(
        False, description="Require the admin token for reads (/rep, GET /policy) too."
    )
    admin_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Serve the admin API on its own listener on this port (the main port "
        "then proxies every path).",
    )
    admin_host: str = Field("127.0.0.1", description="Address of the admin listener.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["text", "json", "logfmt"] = Field(
        "text", description="Log line format: text, json or logfmt (one line per event)."
    )
    workers: int | Literal["auto"] = Field(
        1,
        description="Data-plane processes accepting on the port (SO_REUSEPORT), fed by one "
        "control process; 'auto': one per core. 1: a single process that does both.",
    )
    access_log_sample: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Fraction of answered requests written to the access log (0: off).",
    )

    # HTTPS and upgrades (ringlb.dataplane.tls, ringlb.dataplane.tunnel).
    tls_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Also serve HTTPS on this port (0: any free), with tls_cert and tls_key; "
        "the plain listener on `port` stays.",
    )
    tls_cert: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="HTTPS listener: PEM certificate chain file(s), comma-separated (chosen "
        "by SNI, the first when no name matches), or one directory of NAME.crt + NAME.key.",
    )
    tls_key: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="HTTPS listener: PEM private key file(s), paired with tls_cert by "
        "position (none: the key is in the certificate's file).",
    )
    tls_min_version: Literal["1.2", "1.3"] = Field(
        "1.2", description="HTTPS listener: least TLS version accepted."
    )
    tls_redirect: bool = Field(
        False,
        description="The plain listener answers proxied requests with a 308 redirect to the "
        "HTTPS listener (the admin API stays reachable on it).",
    )
    tunnel_idle_timeout: float = Field(
        300.0,
        gt=0,
        description="Seconds an upgraded connection (WebSocket) may pass no byte either way "
        "before it is closed.",
    )
    upstream_tls: bool = Field(False, description="Speak HTTPS to the replicas.")
    upstream_tls_ca: Path | None = Field(
        None,
        description="upstream_tls: PEM CA bundle the replicas' certificates are checked "
        "against (default: the system's).",
    )
    upstream_tls_verify: bool = Field(
        True, description="upstream_tls: verify the replicas' certificates and names."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            ConfigFileSource(settings_cls, init_settings, env_settings),  # type: ignore[arg-type]
        )

    @field_validator("hostnames", mode="before")
    @classmethod
    def _split_hostnames(cls, value: object) -> object:
        if isinstance(value, str):
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("hostnames")
    @classmethod
    def _check_hostnames(cls, value: list[str]) -> list[str]:
        for name in value:
            if not is_valid_hostname(name):
                raise ValueError(f"invalid hostname {name!r}")
        if len(set(value)) != len(value):
            raise ValueError("duplicate hostname")
        return value

    @field_validator("swarm_constraints", mode="before")
    @classmethod
    def _split_constraints(cls, value: object) -> object:
        if isinstance(value, str):
            return [c.strip() for c in value.split(",") if c.strip()]
        return value

    @field_validator("tls_cert", "tls_key", mode="before")
    @classmethod
    def _split_paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [Path(p.strip()) for p in value.split(",") if p.strip()]
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> Settings:
        """The HTTPS listener's files are read now, so a bad one stops start-up naming the
        option and the file."""
        from ringlb.dataplane.tls import CertificateError, Certificates

        if self.tls_port is None:
            if self.tls_redirect:
                raise ValueError("tls_redirect needs tls_port (the HTTPS listener)")
            return self
        if self.worker_count() > 1:
            # The workers open only the plain and admin listeners so far.
            raise ValueError(f"tls_port needs workers 1 (workers is {self.workers!r})")
        if not self.tls_cert:
            raise ValueError("tls_port needs tls_cert (RINGLB_TLS_CERT, --tls-cert)")
        try:
            Certificates(self.tls_cert, self.tls_key, self.tls_min_version)
        except CertificateError as exc:
            raise ValueError(str(exc)) from None
        return self

    @field_validator("upstream_tls_ca")
    @classmethod
    def _check_ca(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file {str(value)!r}")
        return value

    @field_validator("replica_command")
    @classmethod
    def _check_replica_command(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if "{port}" not in value:
            raise ValueError("must contain {port}: the replica has to listen where told")
        try:
            value.format(python="", name="", host="", port=0)
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"bad placeholder {exc}") from None
        return value

    @field_validator("workers", mode="before")
    @classmethod
    def _check_workers(cls, value: object) -> object:
        if value == "auto":
            return value
        try:
            count = int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            count = 0
        if count < 1 or isinstance(value, bool | float):
            raise ValueError("must be a whole number >= 1 or 'auto'")
        return count

    @field_validator("policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        from ringlb.policies import REGISTRY

        if value not in REGISTRY:
            raise ValueError(f"unknown policy (known: {', '.join(sorted(REGISTRY))})")
        return value

    @field_validator("policy_options", mode="before")
    @classmethod
    def _parse_policy_options(cls, value: object) -> object:
        return parse_pairs(value, json.loads) if isinstance(value, str) else value

    @field_validator("policy_options")
    @classmethod
    def _check_policy_options(cls, value: dict[str, Any], info: ValidationInfo) -> dict:
        from ringlb.policies import make_policy

        if "policy" in info.data:  # else the policy itself is wrong and reported
            make_policy(info.data["policy"], **value)
        return value

    @field_validator("key_source")
    @classmethod
    def _check_key_source(cls, value: str) -> str:
        make_key_source(value)
        return value

    @field_validator("weights", mode="before")
    @classmethod
    def _parse_weights(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        weights = {}
        for name, text in parse_pairs(value, str).items():
            try:
                weights[name] = float(text)
            except (TypeError, ValueError):
                raise ValueError(f"weight of {name} ({text!r}) must be a number") from None
        return weights

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if not is_valid_hostname(name):
                raise ValueError(f"invalid hostname {name!r}")
            if not weight > 0 or weight == float("inf"):
                raise ValueError(f"weight of {name} ({weight}) must be a positive number")
        return value

    @model_validator(mode="after")
    def _check_counts(self) -> Settings:
        if self.lease_renew_interval >= self.lease_time:
            raise ValueError(
                f"lease_renew_interval ({self.lease_renew_interval:g}) must be less than "
                f"lease_time ({self.lease_time:g})"
            )
        if len(self.hostnames) > self.replicas:
            if "replicas" in self.model_fields_set:
                raise ValueError(
                    f"replicas ({self.replicas}) is less than the number of hostnames "
                    f"({len(self.hostnames)})"
                )
            self.replicas = len(self.hostnames)
        if self.replicas > self.max_replicas:
            raise ValueError(
                f"replicas ({self.replicas}) exceeds max_replicas ({self.max_replicas})"
            )
        if not self.autoscale:
            return self  # the autoscaler's bounds matter only when it runs
        if self.worker_count() > 1:
            # Its load signal is the in-flight count, which lives in the workers.
            raise ValueError(f"autoscale needs workers 1 (workers is {self.workers!r})")
        if self.autoscale_min > self.autoscale_max:
            raise ValueError(
                f"autoscale_min ({self.autoscale_min}) exceeds autoscale_max ({self.autoscale_max})"
            )
        if self.autoscale_max > self.max_replicas:
            raise ValueError(
                f"autoscale_max ({self.autoscale_max}) exceeds max_replicas ({self.max_replicas})"
            )
        return self

    def worker_count(self) -> int:
        """Returns the number of data-plane processes: `workers`, or the usable cores."""
        if self.workers == "auto":
            return (
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else (os.cpu_count() or 1)
            )
        return self.workers

    def initial_hostnames(self) -> list[str]:
        """Returns the N initial names: the configured ones, then server_<i> not yet used."""
        names = list(self.hostnames)
        i = 1
        while len(names) < self.replicas:
            candidate = f"server_{i}"
            if candidate not in names:
                names.append(candidate)
            i += 1
        return names


class ConfigFileSource(PydanticBaseSettingsSource):
    """The settings in the TOML file named by `config` (a flag or RINGLB_CONFIG)."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init_settings: InitSettingsSource,
        env_settings: PydanticBaseSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self._init_settings = init_settings
        self._env_settings = env_settings

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = self._init_settings.init_kwargs.get("config") or self._env_settings().get("config")
        if not path:
            return {}
        try:
            with open(path, "rb") as handle:
                values = tomllib.load(handle)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SettingsError(
                f"invalid config (RINGLB_CONFIG, --config): cannot read {str(path)!r}: {exc}"
            ) from None
        values.pop("config", None)  # a file does not name another file
        return values


def parse_pairs(text: str, convert: Callable[[str], Any]) -> dict[str, Any]:
    """Returns the dict of a JSON object, or of `key=value,key=value` text with each value
    passed through `convert` (kept as text when `convert` refuses it)."""
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("must be a JSON object")
        return value
    pairs: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, raw = item.partition("=")
        if not equals or not key.strip():
            raise ValueError(f"{item!r} is not key=value")
        try:
            pairs[key.strip()] = convert(raw.strip())
        except ValueError:
            pairs[key.strip()] = raw.strip()
    return pairs


def load_settings(**overrides: object) -> Settings:
    """Returns the settings, or raises SettingsError naming the option that is wrong."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        message = err["msg"].removeprefix("Value error, ")
        if field == "settings":
            lines.append(f"invalid settings: {message}")
            continue
        option = f"{field} (RINGLB_{field.upper()}, --{field.replace('_', '-')})"
        lines.append(f"invalid {option}: {message}; got {err.get('input')!r}")
    return "\n".join(lines)
