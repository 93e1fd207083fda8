"""One typed settings object for the balancer: defaults, `RINGLB_*` environment, CLI flags.

Precedence: command-line flag > environment variable > default. Every field is also a
`ringlb serve --flag` (underscores become dashes); `cli.py` derives the flags from this
model so the list of options exists once.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ringlb.contract import is_valid_hostname

RuntimeName = Literal["process", "docker"]


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
    policy: str = Field("assignment", description="Balancing policy name.")
    runtime: RuntimeName = Field("process", description="Where replicas run.")

    heartbeat_interval: float = Field(1.0, gt=0, description="Seconds between heartbeats.")
    heartbeat_timeout: float = Field(0.5, gt=0, description="Heartbeat answer deadline (s).")
    heartbeat_misses: int = Field(
        2, ge=1, description="Missed heartbeats that mark a replica down."
    )
    replica_start_timeout: float = Field(
        20.0, gt=0, description="Seconds a new replica has to answer its first heartbeat."
    )
    drain_timeout: float = Field(
        5.0, ge=0, description="Seconds /rm waits for in-flight requests of removed replicas."
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
        64 * 1024 * 1024, ge=0, description="Largest proxied request body (bytes); larger: 413."
    )

    seed: int | None = Field(None, description="Seed for generated names and request ids.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
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

    @field_validator("policy")
    @classmethod
    def _check_policy(cls, value: str) -> str:
        from ringlb.policies import REGISTRY

        if value not in REGISTRY:
            raise ValueError(f"unknown policy (known: {', '.join(sorted(REGISTRY))})")
        return value

    @model_validator(mode="after")
    def _check_counts(self) -> Settings:
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
        return self

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
