"""Who may see the dashboard and who may write, for both ways of serving it.

The rules (the README's "Serve it to your team" says the same for people):

* Without sign-in the page is for this machine only. ``rdzv dashboard`` refuses to bind to an
  address that is not loopback unless sign-in (``--basic-auth`` or ``--oauth-provider``) is set
  or ``--insecure-no-sign-in`` is passed; under ``panel serve``, whose binding rdzv does not
  control, a visitor from another machine gets one sentence instead of the page.
* Writes without sign-in are for loopback only, whatever else is set: ``--insecure-no-sign-in``
  never covers them.
* With sign-in, only the names in ``--writers`` (as the sign-in reports them: ``pn.state.user``)
  get the close-run action; everyone else gets the read-only page, which has no write callback
  at all. Names mean nothing without sign-in, so ``--writers`` requires it, and a shared
  password (Panel's ``--basic-auth PASSWORD``: any name signs in) cannot back it.
* Every write is appended to the audit log (:mod:`rdzv.audit`) and shown on the writer's page.
* ``/metrics`` on the dashboard's server (:mod:`rdzv.ui.metrics_route`) sits behind the same
  sign-in: with a password (file or shared), a scraper sends it as HTTP Basic credentials;
  with OAuth, which a scraper cannot go through, and without sign-in, it answers this machine
  only (without sign-in, ``--insecure-no-sign-in`` opens it like the page).
* ``rdzv dashboard`` restricts websocket origins to the served address (plus
  ``--allow-websocket-origin``) and serves HTTPS with ``--ssl-certfile``/``--ssl-keyfile``.

Sign-in itself is Panel's and Bokeh's: a password file through Panel's ``basic_auth`` login
form, or one of Panel's OAuth/OIDC providers; rdzv only decides from the name they report.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
import logging
import os
import secrets
import socket
from pathlib import Path
from dataclasses import dataclass, replace
from typing import Any

from ..audit import AuditError, AuditLog
from ..loopback import is_loopback_address, is_loopback_ip, is_wildcard
from ..options import SERVING_ENVIRONMENT, Serving, flag
from .config import ConfigError, DashboardConfig

logger = logging.getLogger("rdzv.ui")

__all__ = ["Access", "Visitor", "check_serving", "current_visitor", "decide", "is_loopback_address",
           "is_loopback_ip", "panel_serve_page", "panel_sign_in", "scrape_refusal", "server_options",
           "session_page"]

SHARED_PASSWORD = "shared-password"
"""Panel's ``--basic-auth PASSWORD``: one password, any name; a sign-in, but not one that names people."""

def _how_to_sign_in() -> str:
    return ('add sign-in with --basic-auth users.json (a JSON file like {"alice": "her password"}) '
            "or --oauth-provider NAME")


def check_serving(address: str, port: int, serving: Serving) -> None:
    """Refuse settings that would serve more than they should, before anything is bound.

    Raises:
        ConfigError: one sentence saying what is refused and how to add what is missing.
    """
    sign_in = serving.sign_in
    if serving.writers and not sign_in:
        raise ConfigError(f"{serving.origin('writers')} names signed-in people, but the dashboard has no "
                          f"sign-in; {_how_to_sign_in()}.")
    if sign_in and serving.allow_writes and not serving.writers:
        raise ConfigError("--allow-writes with sign-in needs --writers NAME[,NAME...] (or RDZV_WRITERS) saying "
                          "who may close runs; everyone else gets the read-only page.")
    if is_loopback_address(address):
        return
    if serving.writes and not sign_in:
        raise ConfigError(f"--allow-writes is refused on {address or 'every address'}, which is not loopback, "
                          f"without sign-in, whatever else is set (--insecure-no-sign-in never covers writes); "
                          f"{_how_to_sign_in()}, with --writers NAME[,NAME...].")
    if not sign_in and not serving.insecure_no_sign_in:
        raise ConfigError(f"Serving the dashboard on {address or 'every address'} without sign-in would show "
                          f"every node and store value to anyone who can reach port {port}; "
                          f"{_how_to_sign_in()}, or pass --insecure-no-sign-in to serve it to them anyway.")


def websocket_origins(address: str, port: int, extra: tuple[str, ...] = ()) -> list[str]:
    """The origins a page served at ``address:port`` may open its websocket from: that address
    (for a wildcard bind, this machine's name), the loopback names when they can reach it, and
    ``extra``. Bokeh takes an origin without a port as port 80, so at 80 and 443 the bare host
    is allowed too; it has no way to write an IPv6 origin, so a page served on an IPv6
    address is opened by name (add it with ``--allow-websocket-origin``)."""
    hosts = []
    if is_wildcard(address):
        hosts += [socket.gethostname(), "localhost", "127.0.0.1"]
    else:
        hosts.append(address.strip().strip("[]"))
        if is_loopback_address(address):
            hosts += ["localhost", "127.0.0.1"]
    hosts = [host for host in dict.fromkeys(hosts) if ":" not in host]  # Bokeh cannot name IPv6 origins
    origins = [f"{host}:{port}" for host in hosts] + (hosts if port in (80, 443) else [])
    return list(dict.fromkeys([*origins, *extra]))


def server_options(address: str, port: int, serving: Serving) -> dict[str, Any]:
    """The keyword arguments of ``pn.serve`` that carry ``serving``: sign-in, cookie secret,
    HTTPS, websocket origins. Call after :func:`check_serving`.

    Raises:
        ConfigError: an OAuth provider Panel does not have, a missing client id or secret, or a
            ``BOKEH_ALLOW_WS_ORIGIN`` variable that would widen the origins.
    """
    from panel.config import config as panel_config

    if os.environ.get("BOKEH_ALLOW_WS_ORIGIN", "").strip():
        raise ConfigError("BOKEH_ALLOW_WS_ORIGIN is set and would replace the origins rdzv dashboard allows; "
                          "unset it and name extra origins with --allow-websocket-origin HOST:PORT.")
    options: dict[str, Any] = {"websocket_origin": websocket_origins(address, port, serving.websocket_origins)}
    if serving.ssl_certfile:
        options["ssl_certfile"] = str(serving.ssl_certfile.resolve())
        if serving.ssl_keyfile:
            options["ssl_keyfile"] = str(serving.ssl_keyfile.resolve())
    if serving.sign_in is None:
        return options
    options["cookie_secret"] = serving.cookie_secret or panel_config.cookie_secret or secrets.token_urlsafe(32)
    if serving.basic_auth:
        options["basic_auth"] = str(serving.basic_auth.resolve())
        return options
    from panel.auth import AUTH_PROVIDERS
    from panel.io.state import state

    provider, origin = serving.oauth_provider, serving.origin("oauth_provider")
    if provider not in AUTH_PROVIDERS:
        raise ConfigError(f"{origin} {provider!r} is not one of Panel's OAuth providers "
                          f"({', '.join(sorted(AUTH_PROVIDERS))}).")
    if provider != "pam" and not (panel_config.oauth_key and panel_config.oauth_secret):
        raise ConfigError(f"{origin} {provider} needs the OAuth application's client id and secret in "
                          "PANEL_OAUTH_KEY and PANEL_OAUTH_SECRET.")
    from cryptography.fernet import Fernet

    key = panel_config.oauth_encryption_key
    try:  # tokens in cookies are encrypted; without a given key, with a random one per start
        state.encryption = Fernet(key if key else Fernet.generate_key())
    except ValueError:
        raise ConfigError("PANEL_OAUTH_ENCRYPTION is not a valid key; make one with `panel oauth-secret`.") from None
    options["oauth_provider"] = provider
    return options


# -- one visitor ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Visitor:
    """Who opened this page: the signed-in name (``None``: nobody signed in) and the address the
    request came from (``None``: not a served request, e.g. a notebook)."""

    user: str | None = None
    client: str | None = None

    @property
    def local(self) -> bool:
        return self.client is None or is_loopback_ip(self.client)


@dataclass(frozen=True)
class Access:
    """What one visitor gets: the page or a sentence (``refusal``), and the close-run action or not."""

    may_write: bool = False
    refusal: str | None = None


def decide(serving: Serving, sign_in: str | None, visitor: Visitor) -> Access:
    """The page ``visitor`` gets under ``serving`` when the server's sign-in is ``sign_in``
    (``"basic"``, ``"oauth"``, :data:`SHARED_PASSWORD` or ``None``)."""
    if serving.writers and sign_in in (None, SHARED_PASSWORD):
        why = "has no sign-in" if sign_in is None else "signs in with one shared password, under any name"
        return Access(refusal=f"--writers names signed-in people, but this dashboard {why}; start it with a "
                              'password file ({"alice": "her password", ...}) or an OAuth provider.')
    if sign_in and serving.allow_writes and not serving.writers:
        return Access(refusal="--allow-writes with sign-in needs --writers NAME[,NAME...] saying who may close "
                              "runs; restart the dashboard with it.")
    if sign_in and not visitor.user:
        return Access(refusal="You are not signed in; open the sign-in page (/login) first.")
    if not sign_in and not visitor.local and not serving.insecure_no_sign_in:
        return Access(refusal="This dashboard is served without sign-in, so it answers only on its own machine; "
                              "whoever runs it can add --basic-auth FILE or --oauth-provider NAME (or pass "
                              "--insecure-no-sign-in).")
    if not serving.writes:
        return Access()
    if sign_in:
        return Access(may_write=visitor.user in serving.writers)
    return Access(may_write=visitor.local)


@dataclass(frozen=True)
class ScrapeRefusal:
    """Why a request for ``/metrics`` gets no metrics: the HTTP ``status`` (401 asks for
    credentials, 403 refuses) and one sentence."""

    status: int
    reason: str


def scrape_refusal(serving: Serving, sign_in: str | None, client: str | None, authorization: str | None,
                   passwords: str | os.PathLike | dict | None) -> ScrapeRefusal | None:
    """Whether a scrape of ``/metrics`` from ``client`` (its address) with the ``Authorization``
    header ``authorization`` is refused, when the server's sign-in is ``sign_in`` (as for
    :func:`decide`) and ``passwords`` is where its passwords are (Panel's ``basic_auth``: a
    JSON file of names and passwords, the mapping itself, or one shared password); ``None`` when
    the metrics may be served."""
    local = client is not None and is_loopback_ip(client)
    if sign_in in ("basic", SHARED_PASSWORD):
        if _password_matches(passwords, authorization):
            return None
        return ScrapeRefusal(401, "These metrics are behind the dashboard's sign-in; send a name and password it "
                                  "accepts as HTTP Basic credentials (Prometheus: basic_auth in the scrape config).")
    if local:
        return None
    if sign_in:
        return ScrapeRefusal(403, "This dashboard signs in with OAuth, which a scraper cannot go through, so its "
                                  "metrics answer only on its own machine; scrape from there, or run rdzv exporter.")
    if serving.insecure_no_sign_in:
        return None
    return ScrapeRefusal(403, "This dashboard is served without sign-in, so its metrics answer only on its own "
                              "machine; whoever runs it can add --basic-auth FILE (or pass --insecure-no-sign-in).")


def _password_matches(passwords: str | os.PathLike | dict | None, authorization: str | None) -> bool:
    """Whether HTTP Basic ``authorization`` names a user and password Panel's ``basic_auth``
    would sign in (read anew each time, as Panel does, so an edited file applies at once)."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or passwords is None:
        return False
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    if not sep:
        return False
    known = passwords
    if isinstance(passwords, Path) or (isinstance(passwords, str) and os.path.isfile(passwords)):
        try:
            known = json.loads(Path(passwords).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            logger.error("The password file %s could not be read; /metrics refuses every scrape.", passwords)
            return False
    if isinstance(known, dict):
        expected = known.get(user)
        return isinstance(expected, str) and hmac.compare_digest(expected.encode(), password.encode())
    return isinstance(known, str) and hmac.compare_digest(known.encode(), password.encode())


def current_visitor() -> Visitor:
    """The visitor of the session being built: ``pn.state.user`` (not Panel's guest) and the
    request's remote address. Outside a served session: ``Visitor()``."""
    import panel as pn

    doc = pn.state.curdoc
    context = getattr(doc, "session_context", None) if doc is not None else None
    request = getattr(context, "request", None) if context is not None else None
    if request is None:
        return Visitor()
    # Bokeh's request proxy keeps tornado's request; unreadable counts as another machine.
    client = getattr(getattr(request, "_request", None), "remote_ip", None) or "unknown"
    user = None if pn.state.cookies.get("is_guest") else pn.state.user
    return Visitor(user=user or None, client=client)


def panel_sign_in() -> str | None:
    """The sign-in ``panel serve`` was started with (its ``--basic-auth``/``--oauth-provider``
    or their PANEL_* variables): ``"basic"`` for a password file, :data:`SHARED_PASSWORD`,
    ``"oauth"`` or ``None``."""
    from panel.config import config as panel_config

    if panel_config.oauth_provider:
        return "oauth"
    auth = panel_config.basic_auth
    if not auth:
        return None
    return "basic" if isinstance(auth, dict) or os.path.isfile(str(auth)) else SHARED_PASSWORD


# -- the page -----------------------------------------------------------------------------------


def session_page(config: DashboardConfig, sign_in: str | None):
    """The page for the visitor of the current session: the dashboard (with the close-run
    action only if they may write, recording into the audit log), under a line saying who is
    signed in; or one sentence saying why not."""
    import panel as pn

    from .launch import build_dashboard, error_page
    from .style import STYLESHEET

    visitor = current_visitor()
    serving = replace(config.serving, allow_writes=config.serving.allow_writes or config.allow_writes)
    access = decide(serving, sign_in, visitor)
    if access.refusal:
        logger.warning("Refused the dashboard to %s: %s", visitor.user or visitor.client or "a visitor", access.refusal)
        return error_page(access.refusal)
    dashboard = build_dashboard(replace(config, allow_writes=access.may_write))
    if dashboard.close_action is not None:
        dashboard.close_action.param.update(audit=AuditLog(config.serving.audit_log), user=visitor.user,
                                            client=visitor.client)
    if not sign_in:
        return dashboard
    role = "may close runs" if access.may_write else "read-only"
    logout = f"{(pn.state.base_url or '/').rstrip('/')}/logout"
    bar = pn.pane.HTML(
        f"<div class='rdzv-muted' data-role='signed-in'>Signed in as <b>{html.escape(visitor.user or '')}</b> "
        f"· <span data-role='access'>{role}</span> · <a href='{html.escape(logout)}'>Sign out</a></div>",
        stylesheets=[STYLESHEET], sizing_mode="stretch_width", margin=(2, 10),
    )
    return pn.Column(bar, dashboard, sizing_mode="stretch_width")


def panel_serve_page(config: DashboardConfig):
    """:func:`session_page` under ``panel serve``, whose sign-in is its own: an ``RDZV_BASIC_AUTH``
    or ``RDZV_OAUTH_PROVIDER`` variable it cannot apply, while it serves without sign-in, is
    refused rather than silently ignored."""
    sign_in = panel_sign_in()
    wanted = [name for name in ("basic_auth", "oauth_provider") if getattr(config.serving, name)]
    if wanted and sign_in is None:
        from .launch import error_page

        name = wanted[0]
        return error_page(f"{SERVING_ENVIRONMENT[name]} is set, but panel serve applies only its own sign-in; "
                          f"start it with {flag(name)} ... before --args, or use rdzv dashboard.")
    return session_page(config, sign_in)


def check_audit_log(serving: Serving) -> AuditLog | None:
    """The audit log, checked writable, when writes are on (``None`` otherwise).

    Raises:
        ConfigError: it cannot be written.
    """
    if not serving.writes:
        return None
    log = AuditLog(serving.audit_log)
    try:
        log.check()
    except AuditError as exc:
        raise ConfigError(f"{str(exc).rstrip('.')}; name another file with --audit-log FILE.") from None
    return log
