"""Targets: the FHIR servers kapfhir exchanges with, from a config file and/or environment variables.

Config file (YAML or JSON), named by ``KAPFHIR_TARGETS_FILE``::

    targets:
      epic:
        preset: epic-sandbox                 # optional: start from a preset, then override
        base_url: https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4
        write_policy: ehr                    # ehr (default): never creates Patient/Practitioner/Organization
        organization_identifier: "http://hl7.org/fhir/sid/us-npi|1234567893"   # the privacy gate names it
        auth:
          type: smart                        # none | bearer | client_credentials | smart
          client_id: 0oa-nonprod-client-id
          private_key_path: /run/secrets/kapfhir-epic.pem
          scope: system/Patient.rs system/DocumentReference.c
        ca_bundle: /etc/ssl/private-ca.pem   # optional; TLS verification is always on
        connect_timeout: 5
        read_timeout: 30
        max_attempts: 5

Secrets never come from the config file: ``auth.token``/``auth.client_secret`` there are refused. Use
``token_env``/``client_secret_env`` (the name of an environment variable), ``token_file``/``client_secret_file``
(first line of a file), or the environment variables below. Private keys are files (``private_key_path``).

Environment (each overrides the file; ``<NAME>`` is the target name upper-cased with ``-`` as ``_``)::

    KAPFHIR_TARGETS=local,hapi-public            # enable presets by name with their defaults
    KAPFHIR_TARGET_<NAME>_BASE_URL / _PRESET / _WRITE_POLICY / _ORGANIZATION_IDENTIFIER (system|value)
    KAPFHIR_TARGET_<NAME>_AUTH (type) / _CLIENT_ID / _SCOPE / _TOKEN_URL / _PRIVATE_KEY_PATH / _ALG / _JKU
    KAPFHIR_TARGET_<NAME>_TOKEN / _CLIENT_SECRET (secrets) / _CA_BUNDLE / _CONNECT_TIMEOUT / _READ_TIMEOUT

``Target.public_view()`` is what ``/api/v1/targets`` may show (no secrets, no key paths).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from service.exchange.auth import (
    Auth,
    BearerAuth,
    ClientSecretAuth,
    NoAuth,
    SmartBackendAuth,
)
from service.exchange.client import FhirClient, RetryPolicy
from service.security.keys import SigningKey, load_private_key

SANDBOX, EHR = "sandbox", "ehr"
WRITE_POLICIES = (SANDBOX, EHR)
AUTH_TYPES = ("none", "bearer", "client_credentials", "smart")
FIXTURES_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "targets"


class TargetConfigError(ValueError):
    """The target configuration is invalid (message names the target and the field, never a secret)."""


@dataclass(frozen=True)
class OrganizationIdentifier:
    system: str
    value: str

    @classmethod
    def parse(cls, raw: Any) -> OrganizationIdentifier | None:
        if raw is None or raw == "":
            return None
        if isinstance(raw, Mapping):
            return cls(str(raw["system"]), str(raw["value"]))
        system, sep, value = str(raw).rpartition("|")
        if not sep or not system or not value:
            raise TargetConfigError(f"organization_identifier must be 'system|value', got {raw!r}")
        return cls(system, value)

    def token(self) -> str:
        return f"{self.system}|{self.value}"


@dataclass(frozen=True)
class AuthConfig:
    type: str = "none"
    client_id: str | None = None
    scope: str = "system/*.cruds"
    token_url: str | None = None  # SMART: discovered from .well-known/smart-configuration when empty
    private_key_path: str | None = None
    alg: str | None = None  # SMART: RS384 or ES384; default from the key
    jku: str | None = None  # SMART: JWKS URL sent in the assertion header (Epic requires one in production)
    client_auth_method: str = "client_secret_basic"
    token_env: str | None = None
    token_file: str | None = None
    client_secret_env: str | None = None
    client_secret_file: str | None = None
    # secrets read from the environment at load time; never printed (repr=False)
    token: str | None = field(default=None, repr=False)
    client_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Target:
    name: str
    base_url: str
    auth: AuthConfig = AuthConfig()
    write_policy: str = EHR
    organization_identifier: OrganizationIdentifier | None = None
    ca_bundle: str | None = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_attempts: int = 5
    read_only: bool = False  # e.g. Oracle Health's open sandbox: nothing is ever planned for it
    synthetic_only: bool = False  # public test servers: never send real patient data
    preset: str | None = None
    description: str = ""
    live_checked: bool = False  # presets: False = written from vendor documentation, not checked live
    # profile claims never sent to this target (e.g. the base vital-signs "bp" profile a strict server refuses)
    drop_profiles: tuple[str, ...] = ()

    def public_view(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base_url": self.base_url,
            "preset": self.preset,
            "auth": self.auth.type,
            "client_id": self.auth.client_id,
            "scope": self.auth.scope if self.auth.type in ("smart", "client_credentials") else None,
            "write_policy": self.write_policy,
            "organization_identifier": self.organization_identifier.token() if self.organization_identifier else None,
            "read_only": self.read_only,
            "synthetic_only": self.synthetic_only,
            "live_checked": self.live_checked,
            "drop_profiles": list(self.drop_profiles),
            "description": self.description,
        }


# -------------------------------------------------------------------------------------------------- presets

PRESETS: dict[str, dict[str, Any]] = {
    "hapi-public": {
        "base_url": "https://hapi.fhir.org/baseR4",
        "auth": {"type": "none"},
        "write_policy": SANDBOX,
        "synthetic_only": True,
        "description": "HAPI FHIR public R4 test server: open, shared with the world, purged at will. "
        "Synthetic data only - never real patient data.",
    },
    "smart-health-it": {
        "base_url": "https://r4.smarthealthit.org",
        "auth": {"type": "none"},
        "write_policy": SANDBOX,
        "synthetic_only": True,
        "description": "SMART Health IT open R4 sandbox (no auth, synthetic data). The launcher's protected "
        "proxy is https://launch.smarthealthit.org/v/r4/fhir (SMART App Launch).",
    },
    "oracle-open": {
        "base_url": "https://fhir-open.cerner.com/r4/ec2458f2-1e24-41c8-b71b-0e701af7583d",
        "auth": {"type": "none"},
        "write_policy": EHR,
        "read_only": True,
        "synthetic_only": True,
        "description": "Oracle Health Millennium open sandbox: read-only, no auth. Writes need the secure "
        "sandbox (https://fhir-ehr-code.cerner.com/r4/<tenant>) and a Code Console registration.",
    },
    "medplum": {
        "base_url": "https://api.medplum.com/fhir/R4",
        "auth": {
            "type": "client_credentials",
            "token_url": "https://api.medplum.com/oauth2/token",
            "client_auth_method": "client_secret_basic",
            "scope": "system/*.cruds",
        },
        "write_policy": SANDBOX,
        "description": "Medplum hosted: a project's ClientApplication (id + secret), client credentials.",
    },
    "epic-sandbox": {
        "base_url": "https://fhir.epic.com/interconnect-fhir-oauth/api/FHIR/R4",
        "auth": {
            "type": "smart",
            "token_url": "https://fhir.epic.com/interconnect-fhir-oauth/oauth2/token",
            "alg": "RS384",
            "scope": "system/Patient.rs system/Condition.rs system/Observation.c system/DocumentReference.c",
        },
        "write_policy": EHR,
        "description": "Epic on FHIR sandbox: SMART Backend Services; register a 'Backend Systems' app on "
        "fhir.epic.com (non-production client id, public key or JWKS URL).",
    },
    "local": {
        "base_url": "http://127.0.0.1:8090/fhir",
        "auth": {"type": "none"},
        "write_policy": SANDBOX,
        "description": "A local test server (e.g. `sekmet serve`, default port 8090).",
        "live_checked": True,
    },
}


def preset_fixture(preset: str, name: str) -> dict:
    """``fixtures/targets/<preset>/<name>.json`` (capability-statement, smart-configuration)."""
    return json.loads((FIXTURES_DIR / preset / f"{name}.json").read_text("utf-8"))


# --------------------------------------------------------------------------------------------------- loading

_ENV_FIELDS = {
    "BASE_URL": ("base_url", str),
    "PRESET": ("preset", str),
    "WRITE_POLICY": ("write_policy", str),
    "ORGANIZATION_IDENTIFIER": ("organization_identifier", str),
    "CA_BUNDLE": ("ca_bundle", str),
    "CONNECT_TIMEOUT": ("connect_timeout", float),
    "READ_TIMEOUT": ("read_timeout", float),
    "MAX_ATTEMPTS": ("max_attempts", int),
    "AUTH": ("auth.type", str),
    "CLIENT_ID": ("auth.client_id", str),
    "SCOPE": ("auth.scope", str),
    "TOKEN_URL": ("auth.token_url", str),
    "PRIVATE_KEY_PATH": ("auth.private_key_path", str),
    "ALG": ("auth.alg", str),
    "JKU": ("auth.jku", str),
    "CLIENT_AUTH_METHOD": ("auth.client_auth_method", str),
    "TOKEN": ("auth.token", str),
    "CLIENT_SECRET": ("auth.client_secret", str),
    "DROP_PROFILES": ("drop_profiles", str),  # comma-separated canonical URLs
}
_SECRET_KEYS = ("token", "client_secret")
_ENV_PREFIX = "KAPFHIR_TARGET_"


def env_name(target: str) -> str:
    return target.upper().replace("-", "_")


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """``KAPFHIR_TARGET_<NAME>_<FIELD>`` -> {env name: {field: value}} (longest field suffix wins)."""
    out: dict[str, dict[str, Any]] = {}
    suffixes = sorted(_ENV_FIELDS, key=len, reverse=True)
    for key, value in environ.items():
        if not key.startswith(_ENV_PREFIX):
            continue
        rest = key[len(_ENV_PREFIX) :]
        for suffix in suffixes:
            if rest.endswith("_" + suffix) and len(rest) > len(suffix) + 1:
                name = rest[: -len(suffix) - 1]
                path, conv = _ENV_FIELDS[suffix]
                try:
                    converted = conv(value)
                except ValueError:
                    raise TargetConfigError(f"{key}: not a valid {conv.__name__}") from None
                node = out.setdefault(name, {})
                if path.startswith("auth."):
                    node.setdefault("auth", {})[path[5:]] = converted
                else:
                    node[path] = converted
                break
    return out


def _read_secret_file(path: str) -> str:
    try:
        return Path(path).read_text("utf-8").splitlines()[0].strip()
    except (OSError, IndexError) as exc:
        raise TargetConfigError(f"secret file {path} unreadable or empty") from exc


def target_from_dict(
    name: str, raw: Mapping[str, Any], *, environ: Mapping[str, str] | None = None, secrets_allowed: bool = False
) -> Target:
    """Build a :class:`Target`. ``secrets_allowed`` is True only for values that came from the environment."""
    environ = os.environ if environ is None else environ
    data = _with_preset(name, dict(raw))
    auth = _auth_config(name, dict(data.get("auth") or {}), environ, secrets_allowed)
    return Target(name=name, auth=auth, **_target_fields(name, data))


def _with_preset(name: str, data: dict[str, Any]) -> dict[str, Any]:
    """A named preset's defaults under the target's own values."""
    preset = data.get("preset")
    if not preset:
        return data
    if preset not in PRESETS:
        raise TargetConfigError(f"target {name}: unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    return _follow_base_url(PRESETS[preset], data, _merge(PRESETS[preset], data))


def _secret(auth_raw: Mapping[str, Any], key: str, environ: Mapping[str, str]) -> str | None:
    """A secret from the environment values, else the variable ``<key>_env`` names, else the file ``<key>_file``."""
    value = auth_raw.get(key)
    if not value and auth_raw.get(f"{key}_env"):
        value = environ.get(auth_raw[f"{key}_env"])
    if not value and auth_raw.get(f"{key}_file"):
        value = _read_secret_file(auth_raw[f"{key}_file"])
    return value


def _auth_config(name: str, auth_raw: dict[str, Any], environ: Mapping[str, str], secrets_allowed: bool) -> AuthConfig:
    if not secrets_allowed:
        for key in _SECRET_KEYS:
            if auth_raw.get(key):
                raise TargetConfigError(
                    f"target {name}: auth.{key} must not be written in the config file; use {key}_env or {key}_file"
                )
    token = _secret(auth_raw, "token", environ)
    secret = _secret(auth_raw, "client_secret", environ)
    unknown = set(auth_raw) - set(AuthConfig.__dataclass_fields__)
    if unknown:
        raise TargetConfigError(f"target {name}: unknown auth field(s) {sorted(unknown)}")
    auth = AuthConfig(
        **{**{k: v for k, v in auth_raw.items() if k not in _SECRET_KEYS}, "token": token, "client_secret": secret}
    )
    _check_auth(name, auth)
    return auth


def _check_auth(name: str, auth: AuthConfig) -> None:
    """Each auth type has what it needs to get a token."""
    if auth.type not in AUTH_TYPES:
        raise TargetConfigError(f"target {name}: auth.type must be one of {AUTH_TYPES}")
    if auth.type == "bearer" and not auth.token:
        raise TargetConfigError(f"target {name}: bearer auth needs a token (token_env, token_file or env)")
    if auth.type == "client_credentials" and not (auth.client_id and auth.client_secret and auth.token_url):
        raise TargetConfigError(f"target {name}: client_credentials needs client_id, token_url and a secret")
    if auth.type == "smart" and not (auth.client_id and auth.private_key_path):
        raise TargetConfigError(f"target {name}: smart auth needs client_id and private_key_path")


def _target_fields(name: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """The Target fields other than name and auth, checked and normalised."""
    base_url = data.get("base_url")
    if not base_url or not str(base_url).startswith(("https://", "http://")):
        raise TargetConfigError(f"target {name}: base_url must be an http(s) URL")
    if data.get("write_policy", EHR) not in WRITE_POLICIES:
        raise TargetConfigError(f"target {name}: write_policy must be 'sandbox' or 'ehr'")
    allowed = set(Target.__dataclass_fields__) - {"name", "auth"}
    unknown = set(data) - allowed - {"auth"}
    if unknown:
        raise TargetConfigError(f"target {name}: unknown field(s) {sorted(unknown)}")
    fields = {k: v for k, v in data.items() if k in allowed}
    fields["organization_identifier"] = OrganizationIdentifier.parse(data.get("organization_identifier"))
    fields["base_url"] = str(base_url).rstrip("/")
    drop = data.get("drop_profiles") or ()
    fields["drop_profiles"] = tuple(
        p.strip() for p in (drop.split(",") if isinstance(drop, str) else drop) if p.strip()
    )
    return fields


def _follow_base_url(preset: Mapping[str, Any], own: Mapping[str, Any], merged: dict[str, Any]) -> dict[str, Any]:
    """A preset's token URL follows an overridden base URL (a self-hosted Medplum, another Epic instance) unless
    the token URL is given too: the preset's path from the shared root is kept; a SMART target that does not share
    the preset's layout discovers its token URL from .well-known instead."""
    base, token_url = preset.get("base_url"), (preset.get("auth") or {}).get("token_url")
    new_base = str(own.get("base_url") or base).rstrip("/")
    if not token_url or new_base == base or (own.get("auth") or {}).get("token_url"):
        return merged
    root = os.path.commonprefix([base, token_url])  # noqa: RUF071 - by character, then cut at the last "/"
    root = root[: root.rfind("/") + 1]
    fhir_path = base[len(root) :]
    if new_base.endswith(fhir_path):
        derived: str | None = new_base[: len(new_base) - len(fhir_path)].rstrip("/") + "/" + token_url[len(root) :]
    elif merged["auth"].get("type") == "smart":
        derived = None
    else:
        parts = urlsplit(new_base)
        derived = f"{parts.scheme}://{parts.netloc}{urlsplit(token_url).path}"
    return {**merged, "auth": {**merged["auth"], "token_url": derived}}


def load_targets(
    environ: Mapping[str, str] | None = None, path: str | os.PathLike[str] | None = None
) -> dict[str, Target]:
    """Targets from ``KAPFHIR_TARGETS_FILE`` (or ``path``), ``KAPFHIR_TARGETS`` presets and per-target env vars."""
    environ = os.environ if environ is None else environ
    file = path or environ.get("KAPFHIR_TARGETS_FILE")
    in_file = _targets_in_file(file) if file else {}
    raw = {name: dict(body) for name, body in in_file.items()}
    for name in filter(None, (n.strip() for n in environ.get("KAPFHIR_TARGETS", "").split(","))):
        raw.setdefault(name, {"preset": name} if name in PRESETS else {})
    env_secret_names = _apply_environment(raw, environ)
    out: dict[str, Target] = {}
    for name, body in raw.items():
        # secrets are only accepted when the environment supplied them; a file that also wrote one is refused
        file_auth = dict(in_file[name].get("auth") or {}) if name in in_file else {}
        if any(file_auth.get(k) for k in _SECRET_KEYS):
            raise TargetConfigError(f"target {name}: secrets must not be written in the config file")
        out[name] = target_from_dict(name, body, environ=environ, secrets_allowed=name in env_secret_names)
    return out


def _targets_in_file(file: str | os.PathLike[str]) -> dict[str, Mapping[str, Any]]:
    """name -> target body of a YAML or JSON targets file (``targets:`` or the names at the top level)."""
    text = Path(file).read_text("utf-8")
    doc = json.loads(text) if str(file).endswith(".json") else yaml.safe_load(text)
    doc = doc or {}
    if not isinstance(doc, Mapping):
        raise TargetConfigError(f"{file}: expected a mapping")
    targets = doc.get("targets", doc)
    if not isinstance(targets, Mapping):
        raise TargetConfigError(f"{file}: 'targets' must be a mapping of name -> target")
    out: dict[str, Mapping[str, Any]] = {}
    for name, body in targets.items():
        if not isinstance(body, Mapping):
            raise TargetConfigError(f"{file}: target {name} must be a mapping")
        out[str(name)] = body
    return out


def _apply_environment(raw: dict[str, dict[str, Any]], environ: Mapping[str, str]) -> set[str]:
    """Merge the ``KAPFHIR_TARGET_<NAME>_*`` overrides into ``raw``; the names whose secrets the environment gave."""
    by_env = {env_name(n): n for n in raw}
    env_secret_names: set[str] = set()
    for env_key, over in _env_overrides(environ).items():
        name = by_env.get(env_key) or env_key.lower().replace("_", "-")
        raw[name] = _merge(raw.get(name, {}), over)
        if any(k in over.get("auth", {}) for k in _SECRET_KEYS):
            env_secret_names.add(name)
    return env_secret_names


# ------------------------------------------------------------------------------------------------- building


def build_auth(target: Target) -> Auth:
    cfg = target.auth
    if cfg.type == "none":
        return NoAuth()
    if cfg.type == "bearer":
        assert cfg.token
        return BearerAuth(cfg.token)
    if cfg.type == "client_credentials":
        assert cfg.client_id and cfg.client_secret and cfg.token_url
        return ClientSecretAuth(
            token_url=cfg.token_url,
            client_id=cfg.client_id,
            client_secret=cfg.client_secret,
            scope=cfg.scope,
            method=cfg.client_auth_method,
        )
    assert cfg.client_id and cfg.private_key_path
    key = SigningKey.from_private_key(load_private_key(cfg.private_key_path), cfg.alg)
    return SmartBackendAuth(
        base_url=target.base_url,
        client_id=cfg.client_id,
        key=key,
        scope=cfg.scope,
        token_url=cfg.token_url,
        jku=cfg.jku,
    )


def build_client(target: Target, **overrides: Any) -> FhirClient:
    """A :class:`FhirClient` for ``target`` (one Session per client; keep one client per target and worker)."""
    retry = overrides.pop("retry", None) or RetryPolicy(max_attempts=target.max_attempts)
    return FhirClient(
        target.base_url,
        auth=overrides.pop("auth", None) or build_auth(target),
        connect_timeout=target.connect_timeout,
        read_timeout=target.read_timeout,
        retry=retry,
        ca_bundle=target.ca_bundle,
        **overrides,
    )
