"""From settings to a page: the public :func:`dashboard` (notebooks, scripts) and :func:`page`
(what ``panel serve app/dashboard.py`` serves), which shows a bad setting as one sentence."""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence
from typing import Any

import panel as pn

from .app import Dashboard
from .config import DEFAULT_POLL_MS, DEFAULT_PREFIX, ConfigError, DashboardConfig, check_config, parse_config
from .style import STYLESHEET

logger = logging.getLogger("rdzv.ui")

TITLE = "rdzv dashboard"


def load_extensions() -> None:
    """Load the browser code the views need (Tabulator); harmless when already loaded."""
    pn.extension("tabulator")


def dashboard(
    endpoint: str | None = None,
    run_id: str | None = None,
    prefix: str = DEFAULT_PREFIX,
    *,
    api: str | None = None,
    allow_writes: bool = False,
    poll_ms: int = DEFAULT_POLL_MS,
    heartbeat_expiry: float | None = None,
    protocol: str = "http",
    ca_cert: str | None = None,
    ssl_cert: str | None = None,
    ssl_cert_key: str | None = None,
) -> Dashboard:
    """A live dashboard of the rendezvous runs at ``endpoint`` (``"host:port[,host:port]"``),
    for a notebook cell or any Panel layout; ``run_id`` is selected first.

    It shares the process's monitor for these settings (``rdzv.monitor.get_monitor``), so
    several dashboards cost one etcd watcher. With ``endpoint=None`` it shows the demo: a
    throwaway etcd and a simulated cluster on autopilot, shared by the whole process.
    ``heartbeat_expiry`` (default 15 s, the demo's 3 s) is when a silent node counts as stale.
    The result is a Panel ``Viewer``: display it, put it in a layout, or call ``.servable()``.

    Raises:
        ConfigError: a bad setting, with a sentence saying which.
    """
    config = DashboardConfig(
        endpoint=endpoint, run_id=run_id, prefix=prefix, api=api, protocol=protocol, ca_cert=ca_cert,
        ssl_cert=ssl_cert, ssl_cert_key=ssl_cert_key, allow_writes=allow_writes, poll_ms=poll_ms,
        heartbeat_expiry=heartbeat_expiry if heartbeat_expiry is not None else DashboardConfig.heartbeat_expiry,
    )
    check_config(config)
    load_extensions()
    return build_dashboard(config, demo_expiry=heartbeat_expiry is None)


def build_dashboard(config: DashboardConfig, *, demo_expiry: bool = True) -> Dashboard:
    """The Dashboard for checked settings; the demo when ``config.endpoint`` is None (then the
    demo's heartbeat expiry replaces the configured one if ``demo_expiry``)."""
    from ..monitor import get_monitor

    endpoint, run_id, expiry, subtitle = config.endpoint, config.run_id, config.heartbeat_expiry, ""
    if config.demo:
        from .demo_mode import demo_environment

        demo = demo_environment()
        endpoint, run_id = demo.endpoint, run_id or demo.run_id
        expiry = demo.heartbeat_expiry if demo_expiry else expiry
        subtitle = "demo: simulated nodes on a throwaway etcd (start with --endpoint HOST:PORT to watch yours)"
    monitor = get_monitor(endpoint, config.prefix, api=config.api, **config.tls)
    options: dict[str, Any] = dict(config.tls)
    return Dashboard(monitor=monitor, run_id=run_id, allow_writes=config.allow_writes, poll_ms=config.poll_ms,
                     heartbeat_expiry=expiry, connect_options=options, subtitle=subtitle)


def error_page(message: str) -> pn.viewable.Viewable:
    """A page that shows ``message`` (escaped) and nothing else."""
    return pn.Column(
        pn.pane.HTML("<div class='rdzv-header'><span class='rdzv-brand'>rdzv</span></div>", stylesheets=[STYLESHEET]),
        pn.pane.HTML(f"<div class='rdzv-error' data-role='config-error'>{html.escape(message)}</div>",
                     stylesheets=[STYLESHEET], sizing_mode="stretch_width"),
        sizing_mode="stretch_width",
    )


def page(argv: Sequence[str] | None = None) -> pn.viewable.Viewable | Dashboard:
    """The page for ``panel serve app/dashboard.py --args ARGV`` (settings also from RDZV_*):
    the dashboard, or one sentence saying what is wrong with the settings."""
    load_extensions()
    try:
        return build_dashboard(parse_config(argv))
    except ConfigError as exc:
        message = str(exc)
    except Exception as exc:  # etcd or the demo failing to start: say so on the page
        logger.exception("The dashboard could not start.")
        message = f"The dashboard could not start: {exc}"
    logger.error("%s", message)
    return error_page(message)
