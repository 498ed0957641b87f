"""From settings to a page: the public :func:`dashboard` (notebooks, scripts) and :func:`page`
(what ``panel serve app/dashboard.py`` serves), which shows a bad setting as one sentence."""

from __future__ import annotations

import html
import logging
from dataclasses import replace
from collections.abc import Sequence

import panel as pn

from .app import Dashboard
from ..kv import Target
from ..recording import RecordingError
from ..rendezvous_settings import RendezvousSettings
from .config import DEFAULT_POLL_MS, ConfigError, DashboardConfig, config_from_args, parse_config
from .style import STYLESHEET

logger = logging.getLogger("rdzv.ui")

TITLE = "rdzv dashboard"


def load_extensions() -> None:
    """Make sure the page can show the views; cheap when it already can.

    In a Jupyter kernel, the first call for a page sends it BokehJS and Panel inline from the
    installed packages (no CDN, no ``pn.extension`` cell needed), once per page (see
    :mod:`rdzv.ui.jupyter`). Elsewhere (``panel serve``, a script) Panel serves the code itself."""
    from .jupyter import jupyter_page, load_in_notebook

    page = jupyter_page()
    if page is None:
        pn.extension()
    else:
        load_in_notebook(page)


def dashboard(
    endpoint: str | Target | None = None,
    run_id: str | None = None,
    prefix: str | None = None,
    *,
    api: str | None = None,
    allow_writes: bool = False,
    poll_ms: int = DEFAULT_POLL_MS,
    nnodes: str | None = None,
    rdzv_conf: str | None = None,
    settings: RendezvousSettings | None = None,
    protocol: str | None = None,
    ca_cert: str | None = None,
    ssl_cert: str | None = None,
    ssl_cert_key: str | None = None,
    timeout: float | None = None,
    replay: str | None = None,
) -> Dashboard:
    """A live dashboard of the rendezvous runs at ``endpoint`` (``"host:port[,host:port]"`` or a
    :class:`~rdzv.kv.Target`), for a notebook cell or any Panel layout; ``run_id`` is selected first.

    Settings not given here come from the ``RDZV_*`` variables, as for ``rdzv dashboard``. The
    run's rendezvous settings come from ``settings``, or torchrun's own syntax (``nnodes="2:4"``,
    ``rdzv_conf="last_call_timeout=30,keep_alive_interval=5"``): they decide when a node counts as
    stale. It shares the process's monitor for these settings (``rdzv.monitor.get_monitor``), so
    several dashboards cost one etcd watcher. With no endpoint anywhere it shows the demo: a
    throwaway etcd and a simulated cluster on autopilot, shared by the whole process. With
    ``replay=FILE`` it shows a recording (``rdzv record``) instead, with no etcd at all.
    The result is a Panel ``Viewer``: display it, put it in a layout, or call ``.servable()``.

    Raises:
        ConfigError: a bad setting, with a sentence saying which.
    """
    given = dict(run_id=run_id, prefix=prefix, api=api, protocol=protocol, ca_cert=ca_cert, ssl_cert=ssl_cert,
                 ssl_cert_key=ssl_cert_key, timeout=timeout, nnodes=nnodes, rdzv_conf=rdzv_conf,
                 allow_writes=allow_writes, poll_ms=poll_ms, replay=replay)
    if isinstance(endpoint, Target):  # its fields, unless given here too
        for name in ("prefix", "api", "protocol", "ca_cert", "ssl_cert", "ssl_cert_key"):
            given[name] = given[name] if given[name] is not None else getattr(endpoint, name)
        given["timeout"] = given["timeout"] or endpoint.read_timeout
        endpoint = endpoint.endpoint
    config = config_from_args({**given, "endpoint": endpoint}, spell=_keyword)
    if settings is not None:
        config = replace(config, settings=config.settings.merged(settings) if config.settings.given else settings)
    load_extensions()
    return build_dashboard(config)


def _keyword(name: str) -> str:
    return f"{name}="


def build_dashboard(config: DashboardConfig) -> Dashboard:
    """The Dashboard for checked settings; the demo (with the demo cluster's settings, unless
    some were given) when ``config.target`` is None."""
    from ..monitor import get_monitor

    target, run_id, settings, subtitle = config.target, config.run_id, config.settings, ""
    if config.replay is not None:
        from ..monitor import replay

        monitor = replay(config.replay)
        return Dashboard(monitor=monitor, run_id=run_id, allow_writes=False, poll_ms=config.poll_ms,
                         settings=settings, subtitle=f"replay of {config.replay}")
    if config.demo:
        from .demo_mode import demo_environment

        demo = demo_environment()
        target, run_id = Target.of(demo.endpoint), run_id or demo.run_id
        settings = demo.settings.merged(settings)
        subtitle = "demo: simulated nodes on a throwaway etcd (start with --endpoint HOST:PORT to watch yours)"
    return Dashboard(monitor=get_monitor(target), run_id=run_id, allow_writes=config.allow_writes,
                     poll_ms=config.poll_ms, settings=settings, subtitle=subtitle)


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
        from .auth import panel_serve_page  # who may see and write (rdzv.ui.auth)

        return panel_serve_page(parse_config(argv))
    except (ConfigError, RecordingError) as exc:
        message = str(exc)
    except Exception as exc:  # etcd or the demo failing to start: say so on the page
        logger.exception("The dashboard could not start.")
        message = f"The dashboard could not start: {exc}"
    logger.error("%s", message)
    return error_page(message)
