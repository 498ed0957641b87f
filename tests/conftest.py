"""Shared fixtures: one real etcd per test session (v2 and v3 APIs both on), and
KV clients on either API. Tests isolate themselves with unique key prefixes."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

from rdzv.server import EtcdServer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


@pytest.fixture(scope="session")
def etcd_server():
    """A throwaway etcd 3.5 serving both the v2 and v3 APIs."""
    with EtcdServer(enable_v2=True) as server:
        yield server


@pytest.fixture(params=["v2", "v3"])
def api(request) -> str:
    return request.param


@pytest.fixture
def kv(etcd_server, api):
    client = etcd_server.kv(api=api)
    yield client
    client.close()


@pytest.fixture
def unique() -> str:
    """A fresh name for keys, prefixes and run ids."""
    return "t" + uuid.uuid4().hex[:12]


def subprocess_env() -> dict[str, str]:
    """The environment for child Python processes: this checkout importable, no proxies."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.pop("http_proxy", None)
    env.pop("HTTP_PROXY", None)
    return env
