"""``/metrics`` on the dashboard's own server: the Prometheus metrics of the runs its pages
show, from the same shared monitor (:class:`rdzv.metrics.MonitorCollector`), behind the same
sign-in (:func:`rdzv.ui.auth.scrape_refusal`).

``rdzv dashboard`` serves the route itself. ``panel serve`` takes it as a plugin::

    panel serve app/dashboard.py --plugins rdzv.ui.metrics_route --args --endpoint HOST:PORT ...

and the route then reads the same ``--args`` and ``RDZV_*`` variables as the page.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from tornado.ioloop import IOLoop
from tornado.web import RequestHandler

from .auth import panel_sign_in, scrape_refusal
from .config import ConfigError, DashboardConfig, parse_config

logger = logging.getLogger("rdzv.ui")

__all__ = ["ROUTES", "MetricsHandler"]


class MetricsHandler(RequestHandler):
    """GET ``/metrics``: Prometheus' text format, or one sentence with 401/403 (refused),
    404 (a replay has no live metrics) or 500 (settings the page would also refuse).

    ``config`` and the sign-in are ``rdzv dashboard``'s; without them (``panel serve``'s
    plugin) they are read from the server's own ``--args``, ``RDZV_*`` variables and
    ``--basic-auth``/``--oauth-provider``, once."""

    def initialize(self, config: DashboardConfig | None = None, sign_in: str | None = None,
                   passwords: object = None) -> None:
        self._given = config
        self._sign_in = sign_in
        self._passwords = passwords

    async def get(self) -> None:
        try:
            config, sign_in, passwords = self._settings()
        except ConfigError as exc:
            return self._answer(500, f"The dashboard's settings are refused: {exc}")
        refusal = scrape_refusal(config.serving, sign_in, self.request.remote_ip,
                                 self.request.headers.get("Authorization"), passwords)
        if refusal is not None:
            if refusal.status == 401:
                self.set_header("WWW-Authenticate", 'Basic realm="rdzv dashboard", charset="UTF-8"')
            return self._answer(refusal.status, refusal.reason)
        if config.replay is not None:
            return self._answer(404, "This dashboard replays a recording; it has no live metrics.")
        from prometheus_client import CONTENT_TYPE_LATEST

        # Starting the demo's etcd, or a monitor, must not hold up the pages' event loop.
        body = await IOLoop.current().run_in_executor(None, exposition, config)
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(body)

    def _settings(self) -> tuple[DashboardConfig, str | None, object]:
        if self._given is not None:
            return self._given, self._sign_in, self._passwords
        from panel.config import config as panel_config

        return panel_serve_config(), panel_sign_in(), panel_config.basic_auth

    def _answer(self, status: int, sentence: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(sentence + "\n")


def exposition(config: DashboardConfig) -> bytes:
    """The metrics of the runs ``config`` shows, in Prometheus' text format (the demo's,
    started if need be, when it names no etcd)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from ..metrics import MonitorCollector
    from ..monitor import get_monitor
    from .serving_metrics import serving_collector

    target, settings = config.target, config.settings
    if config.demo:
        from .demo_mode import demo_environment

        demo = demo_environment()
        target, settings = demo.endpoint, demo.settings.merged(settings)
    monitor = get_monitor(target)
    registry = CollectorRegistry()
    registry.register(MonitorCollector(lambda: [monitor], settings))
    registry.register(serving_collector())
    return generate_latest(registry)


_panel_serve_config: DashboardConfig | None = None


def panel_serve_config(argv: Sequence[str] | None = None) -> DashboardConfig:
    """The page's settings under ``panel serve``: what follows its ``--args`` (``panel serve``
    passes the rest of its command line to the app) and the ``RDZV_*`` variables.

    Raises:
        ConfigError: the same sentence the page shows.
    """
    global _panel_serve_config
    if _panel_serve_config is None:
        argv = list(sys.argv if argv is None else argv)
        _panel_serve_config = parse_config(argv[argv.index("--args") + 1:] if "--args" in argv else [])
    return _panel_serve_config


#: Panel's plugin hook (``panel serve --plugins rdzv.ui.metrics_route``).
ROUTES = [("/metrics", MetricsHandler, {})]
