"""From command-line flags and ``RDZV_*`` variables to a :class:`~rdzv.kv.Target`, a run id and
the run's :class:`~rdzv.rendezvous_settings.RendezvousSettings`: the one builder every entry point
uses (``rdzv status``, ``rdzv dashboard``, ``panel serve app/dashboard.py --args``, ``rdzv.dashboard``).

The rule everywhere: a value given as an argument wins over its variable; a variable set to an
empty string counts as unset. Every mistake raises :class:`OptionsError`, one sentence that names
the flag and the variable it may have come from.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kv import DEFAULT_PREFIX, Target, TargetError
from .rendezvous_settings import RendezvousSettings, SettingsError

__all__ = ["ENVIRONMENT", "SERVER_ONLY", "SERVING_ENVIRONMENT", "OptionsError", "Resolved", "Serving", "add_dashboard_arguments",
           "add_target_arguments", "flag", "resolve", "resolve_serving"]

#: Each setting and the variable it is read from when no argument gives it.
ENVIRONMENT = {
    "endpoint": "RDZV_ENDPOINT",
    "run_id": "RDZV_RUN_ID",
    "prefix": "RDZV_PREFIX",
    "api": "RDZV_API",
    "protocol": "RDZV_PROTOCOL",
    "ca_cert": "RDZV_CA_CERT",
    "ssl_cert": "RDZV_SSL_CERT",
    "ssl_cert_key": "RDZV_SSL_CERT_KEY",
    "timeout": "RDZV_TIMEOUT",
    "nnodes": "RDZV_NNODES",
    "rdzv_conf": "RDZV_RDZV_CONF",
}

_TARGET_FIELDS = {"prefix", "api", "protocol", "ca_cert", "ssl_cert", "ssl_cert_key"}


class OptionsError(ValueError):
    """A bad setting; the message is one sentence for the person who gave it."""


@dataclass(frozen=True)
class Resolved:
    """What the settings say: where etcd is (``None``: no endpoint was given), which run, and
    what the run's handlers were configured with."""

    target: Target | None
    run_id: str | None
    settings: RendezvousSettings


def flag(name: str) -> str:
    """The command-line spelling of a setting: ``ca_cert`` -> ``--ca-cert``."""
    return "--" + name.replace("_", "-")


def add_target_arguments(parser: argparse.ArgumentParser, *, rendezvous_settings: bool = True) -> None:
    """Add the flags of every setting in :data:`ENVIRONMENT` (all default to unset, so the
    variables can fill them); without ``rendezvous_settings``, leave out ``--nnodes`` and ``--rdzv-conf``."""
    parser.add_argument("--endpoint", help="etcd endpoint(s) HOST:PORT[,HOST:PORT...] [RDZV_ENDPOINT]")
    parser.add_argument("--run-id", help="the run to show [RDZV_RUN_ID]")
    parser.add_argument("--prefix", help=f"key prefix of the runs and store (default {DEFAULT_PREFIX}) [RDZV_PREFIX]")
    parser.add_argument("--api", type=str.lower,
                        help="etcd API to read, v2 or v3 (default: every API the server offers) [RDZV_API]")
    parser.add_argument("--protocol", type=str.lower, help="http (default) or https [RDZV_PROTOCOL]")
    parser.add_argument("--ca-cert", help="CA certificate file, for https [RDZV_CA_CERT]")
    parser.add_argument("--ssl-cert", help="client certificate file, for https [RDZV_SSL_CERT]")
    parser.add_argument("--ssl-cert-key", help="client certificate key file, for https [RDZV_SSL_CERT_KEY]")
    parser.add_argument("--timeout", help="seconds to wait for each etcd request [RDZV_TIMEOUT]")
    if rendezvous_settings:
        parser.add_argument("--nnodes", help="the job's torchrun --nnodes, N or MIN:MAX [RDZV_NNODES]")
        parser.add_argument("--rdzv-conf", help="the job's torchrun --rdzv-conf, e.g. join_timeout=600,"
                            "last_call_timeout=30,keep_alive_interval=5,keep_alive_max_attempt=3 [RDZV_RDZV_CONF]")


DEFAULT_POLL_MS = 300


def add_dashboard_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the dashboard page, shared by ``panel serve app/dashboard.py --args`` and
    ``rdzv dashboard``: every target and rendezvous setting, what the page may do and who may do
    it, and how ``rdzv dashboard`` serves it (sign-in, HTTPS, websocket origins; for ``panel
    serve`` those are its own flags, given before ``--args``)."""
    add_target_arguments(parser)
    parser.add_argument("--allow-writes", action="store_true",
                        help="offer write actions (behind a confirmation); without sign-in only on loopback")
    parser.add_argument("--poll-ms", type=int, default=DEFAULT_POLL_MS, help="how often a page checks for changes")
    parser.add_argument("--replay", metavar="FILE", help="show a recording (rdzv record) instead of etcd: no etcd "
                        "is needed, and time travel covers the whole recording")
    page = parser.add_argument_group("who may see and write (see README: Serve it to your team)")
    page.add_argument("--writers", metavar="NAMES", help="the signed-in names that may close runs, NAME[,NAME...]; everyone else "
                      "gets the read-only page (implies --allow-writes; needs sign-in) [RDZV_WRITERS]")
    page.add_argument("--audit-log", metavar="FILE", help="file every write is appended to (default "
                      "$XDG_STATE_HOME/rdzv/audit.log, i.e. ~/.local/state/rdzv/audit.log) [RDZV_AUDIT_LOG]")
    page.add_argument("--insecure-no-sign-in", action="store_true",
                      help="serve the page to other machines without sign-in: anyone who reaches the port sees "
                      "every node and store value (never allows writes); deliberately has no variable")
    serving = parser.add_argument_group("serving (rdzv dashboard; for panel serve use its own flags before --args)")
    serving.add_argument("--basic-auth", metavar="FILE", help='sign-in with a password file, JSON '
                         '{"name": "password", ...} [RDZV_BASIC_AUTH]')
    serving.add_argument("--oauth-provider", metavar="NAME", help="sign-in through Panel's OAuth/OIDC provider "
                         "NAME (github, google, azure, okta, auth0, gitlab, generic, ...); client id and secret "
                         "from PANEL_OAUTH_KEY and PANEL_OAUTH_SECRET [RDZV_OAUTH_PROVIDER]")
    serving.add_argument("--cookie-secret", help="secret that signs the sign-in cookies (default: a random one "
                         "per start, so a restart signs everyone out); prefer the variable [RDZV_COOKIE_SECRET]")
    serving.add_argument("--ssl-certfile", metavar="FILE", help="serve the page over HTTPS with this certificate "
                         "(PEM; independent of etcd's --ssl-cert) [RDZV_SSL_CERTFILE]")
    serving.add_argument("--ssl-keyfile", metavar="FILE", help="the private key of --ssl-certfile, unless that "
                         "file holds it [RDZV_SSL_KEYFILE]")
    serving.add_argument("--allow-websocket-origin", metavar="HOST[:PORT]", help="more origins the page may be "
                         "opened from, comma-separated (default: only the served address) [RDZV_ALLOW_WEBSOCKET_ORIGIN]")


#: The dashboard's serving settings and the variables they are read from (``rdzv dashboard``
#: reads them all; ``panel serve app/dashboard.py --args`` reads the page's: writers and audit log).
SERVING_ENVIRONMENT = {
    "writers": "RDZV_WRITERS",
    "audit_log": "RDZV_AUDIT_LOG",
    "basic_auth": "RDZV_BASIC_AUTH",
    "oauth_provider": "RDZV_OAUTH_PROVIDER",
    "cookie_secret": "RDZV_COOKIE_SECRET",
    "ssl_certfile": "RDZV_SSL_CERTFILE",
    "ssl_keyfile": "RDZV_SSL_KEYFILE",
    "allow_websocket_origin": "RDZV_ALLOW_WEBSOCKET_ORIGIN",
}

#: The settings only ``rdzv dashboard`` can apply: ``panel serve`` has its own flags for them.
SERVER_ONLY = ("basic_auth", "oauth_provider", "cookie_secret", "ssl_certfile", "ssl_keyfile",
               "allow_websocket_origin")


@dataclass(frozen=True)
class Serving:
    """How the dashboard is served and who may do what: sign-in (a password file or an OAuth
    provider, never both), the names that may write, where writes are recorded, HTTPS for the
    page, extra websocket origins, and the two explicit switches. Checked for consistency with
    the address it is served on by :func:`rdzv.ui.auth.check_serving`."""

    allow_writes: bool = False
    writers: frozenset[str] = frozenset()
    audit_log: Path | None = None
    insecure_no_sign_in: bool = False
    basic_auth: Path | None = None
    oauth_provider: str | None = None
    cookie_secret: str | None = field(default=None, repr=False)
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    websocket_origins: tuple[str, ...] = ()
    sources: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
    """(setting, where it came from: a flag or a variable) for each setting given."""

    @property
    def sign_in(self) -> str | None:
        """``"basic"``, ``"oauth"`` or ``None`` (no sign-in)."""
        return "basic" if self.basic_auth else "oauth" if self.oauth_provider else None

    @property
    def writes(self) -> bool:
        """Whether writes were asked for, by ``--allow-writes`` or by naming ``--writers``."""
        return self.allow_writes or bool(self.writers)

    def origin(self, name: str) -> str:
        """Where setting ``name`` came from (its flag or variable)."""
        return dict(self.sources).get(name, flag(name))


def resolve_serving(
    given: Mapping[str, Any] | argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    *,
    spell: Callable[[str], str] = flag,
) -> Serving:
    """The :class:`Serving` settings from ``given`` (as for :func:`resolve`) and the variables
    of :data:`SERVING_ENVIRONMENT` in ``environ`` (default ``os.environ``); arguments win.

    Raises:
        OptionsError: the first setting that cannot work (a missing file, a password file that
            is not a JSON object of names to passwords, two kinds of sign-in, ...).
    """
    values, where = _gather(given, environ, SERVING_ENVIRONMENT, spell)

    writers = frozenset(_names(values["writers"])) if values["writers"] else frozenset()
    if values["writers"] and not writers:
        raise OptionsError(f"{where('writers')} names nobody; give the signed-in names, e.g. alice,bob.")
    basic_auth = _existing_file(values["basic_auth"], where("basic_auth"))
    if basic_auth is not None:
        _check_password_file(basic_auth, where("basic_auth"))
    if basic_auth is not None and values["oauth_provider"]:
        raise OptionsError(f"{where('basic_auth')} and {where('oauth_provider')} are both given; choose one "
                           "way to sign in.")
    certfile = _existing_file(values["ssl_certfile"], where("ssl_certfile"))
    keyfile = _existing_file(values["ssl_keyfile"], where("ssl_keyfile"))
    if keyfile is not None and certfile is None:
        raise OptionsError(f"{where('ssl_keyfile')} was given without {spell('ssl_certfile')}; add the "
                           "certificate it belongs to.")
    origins = _names(values["allow_websocket_origin"] or "")
    for origin in origins:
        if not re.fullmatch(r"[A-Za-z0-9._-]+(:\d{1,5})?", origin):
            raise OptionsError(f"{where('allow_websocket_origin')} {origin!r} is not HOST or HOST:PORT (no scheme, "
                               "no wildcard: name each origin the page is opened from).")
    audit_log = Path(values["audit_log"]).expanduser() if values["audit_log"] else None
    if audit_log is not None and audit_log.is_dir():
        raise OptionsError(f"{where('audit_log')} {str(audit_log)!r} is a directory; name a file in it.")
    return Serving(
        allow_writes=bool(values.get("allow_writes")),
        writers=writers,
        audit_log=audit_log,
        insecure_no_sign_in=bool(values.get("insecure_no_sign_in")),
        basic_auth=basic_auth,
        oauth_provider=values["oauth_provider"].lower() if values["oauth_provider"] else None,
        cookie_secret=values["cookie_secret"],
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
        websocket_origins=tuple(origins),
        sources=tuple(sorted((name, where(name)) for name in SERVING_ENVIRONMENT if values[name] is not None)),
    )


def _names(text: str) -> list[str]:
    return [name.strip() for name in str(text).split(",") if name.strip()]


def _existing_file(text: object, origin: str) -> Path | None:
    if text is None:
        return None
    path = Path(str(text)).expanduser()
    if not path.is_file():
        raise OptionsError(f"{origin} names {str(path)!r}, which does not exist or is not a file.")
    return path


def _check_password_file(path: Path, origin: str) -> None:
    example = '{"alice": "her password", "bob": "his password"}'
    try:
        accounts = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or "not JSON"
        raise OptionsError(f"{origin} {str(path)!r} cannot be read as a password file ({reason}); write it as "
                           f"JSON like {example}.") from None
    if not (isinstance(accounts, dict) and accounts
            and all(isinstance(k, str) and k and isinstance(v, str) and v for k, v in accounts.items())):
        raise OptionsError(f"{origin} {str(path)!r} is not a password file: write it as a JSON object of "
                           f"names and passwords like {example}.")


def resolve(
    given: Mapping[str, Any] | argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    *,
    spell: Callable[[str], str] = flag,
    timeout: float | None = None,
) -> Resolved:
    """Build the settings from ``given`` (an argparse namespace, or a mapping from setting
    names to values, ``None`` meaning unset) and ``environ`` (default ``os.environ``).

    ``spell`` writes a setting's name as the person gave it (``--ca-cert``, or ``ca_cert=``
    for Python calls); ``timeout`` is the read timeout when none is given.

    Raises:
        OptionsError: the first setting that cannot work.
    """
    values, where = _gather(given, environ, ENVIRONMENT, spell)

    read_timeout = _seconds(values["timeout"], where("timeout")) if values["timeout"] is not None else timeout
    target = None
    if values["endpoint"] is not None:
        fields = {name: values[name] for name in _TARGET_FIELDS if values[name] is not None}
        try:
            target = Target.of(values["endpoint"], read_timeout=read_timeout, **fields)
        except TargetError as exc:
            setting = {"read_timeout": "timeout"}.get(exc.setting, exc.setting)
            raise OptionsError(f"{str(exc).rstrip('.')} (from {where(setting)}).") from None
    else:
        given_elsewhere = sorted(name for name in _TARGET_FIELDS if values[name] is not None)
        if given_elsewhere:
            raise OptionsError(f"{where(given_elsewhere[0])} was given without an etcd endpoint; add "
                               f"{spell('endpoint')} HOST:PORT (or set RDZV_ENDPOINT).")
    try:
        settings = RendezvousSettings.from_torchrun(values.get("nnodes"), values.get("rdzv_conf"))
    except SettingsError as exc:
        names = [where(name) for name in ("nnodes", "rdzv_conf") if values.get(name) is not None]
        raise OptionsError(f"{str(exc).rstrip('.')} (from {' / '.join(names)}).") from None
    return Resolved(target=target, run_id=values["run_id"], settings=settings)


def _gather(given: Mapping[str, Any] | argparse.Namespace, environ: Mapping[str, str] | None,
            variables: Mapping[str, str], spell: Callable[[str], str]
            ) -> tuple[dict[str, Any], Callable[[str], str]]:
    """The values of ``given`` with each setting of ``variables`` that no argument gave taken
    from its variable (blank values count as unset), and ``where(name)``: the variable a value
    came from, or its spelling as an argument."""
    values = dict(vars(given) if isinstance(given, argparse.Namespace) else given)
    environ = os.environ if environ is None else environ
    sources: dict[str, str] = {}
    for name, variable in variables.items():
        value = values.get(name)
        if isinstance(value, str):
            value = value.strip() or None
        if value is None and environ.get(variable, "").strip():
            value, sources[name] = environ[variable].strip(), variable
        values[name] = value
    return values, lambda name: sources.get(name) or spell(name)


def _seconds(text: object, origin: str) -> float:
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise OptionsError(f"{origin} must be a number of seconds, not {text!r}.") from None
    if not value > 0 or value == float("inf"):
        raise OptionsError(f"{origin} must be a positive number of seconds, not {text!r}.")
    return value
