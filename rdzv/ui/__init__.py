"""The live dashboard (Panel + Bokeh): one small view per file, composed by :class:`Dashboard`.

``rdzv.ui.dashboard(endpoint=None, run_id=None, prefix="/torch/elastic", **tls)`` gives a
dashboard for a notebook cell; ``panel serve app/dashboard.py --args --endpoint HOST:PORT``
serves one page per browser tab. Every view is read-only and shows node names and store
values as text, never as markup.
"""

from __future__ import annotations

from .app import Dashboard
from .config import ConfigError, DashboardConfig, parse_config
from .launch import dashboard, page

__all__ = ["ConfigError", "Dashboard", "DashboardConfig", "dashboard", "page", "parse_config"]
