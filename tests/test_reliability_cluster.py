"""Member loss: a 3-member etcd cluster on loopback loses the member the clients talk to;
rendezvous writes, store reads, the monitor and the served dashboard carry on through the
other two."""

from __future__ import annotations

import threading

import pytest
from waiting import wait_for
from browser_helpers import WAIT_MS
from rendezvous_helpers import params, rdzv_handler, rendezvous_all

from rdzv.backend import RENDEZVOUS_PREFIX
from rdzv.cluster import EtcdCluster
from rdzv.monitor import get_monitor

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(240)]




@pytest.mark.browser
def test_losing_the_member_in_use_is_survived_by_handlers_store_monitor_and_dashboard(
    api, unique, serve, page, monkeypatch
):
    from playwright.sync_api import expect

    monkeypatch.setenv("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    with EtcdCluster(size=3, enable_v2=True) as cluster:
        endpoints = cluster.endpoints  # every client starts with member 0
        # torch counts a node dead after keep_alive_interval * keep_alive_max_attempt seconds
        # without a heartbeat; a write that waits out a leader election (up to read_timeout on
        # each member tried) must not make the late joiner's sanitizer drop both participants.
        config = dict(min_nodes=2, max_nodes=3, keep_alive_interval=1, keep_alive_max_attempt=20, read_timeout=5)
        handlers = [rdzv_handler(params(endpoints, unique, **config), api=api) for _ in range(2)]
        late = rdzv_handler(params(endpoints, unique, **config), api=api)
        joiner = None
        monitor = get_monitor(endpoints, api=api)
        try:
            store = rendezvous_all(handlers)[0].store  # torch's PrefixStore over our EtcdStore
            store.set("before", "loss")
            dashboard = serve(["--endpoint", endpoints, "--run-id", unique, "--api", api])
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            page.on("console", lambda message: page_errors.append(message.text) if message.type == "error" else None)
            page.goto(dashboard.url)
            expect(page.get_by_text("participant", exact=True)).to_have_count(2, timeout=WAIT_MS)

            cluster.kill_member(0)

            # Store reads and writes go to the other members.
            assert store.get("before") == b"loss"
            store.set("after", "loss")
            assert store.get("after") == b"loss"
            # A late joiner writes itself into the state: it waits for the next round.
            joined: list[object] = []

            def join_late() -> None:
                try:
                    joined.append(late.next_rendezvous())
                except BaseException as exc:  # noqa: BLE001 - asserted below
                    joined.append(exc)

            joiner = threading.Thread(target=join_late, daemon=True)
            joiner.start()
            wait_for(lambda: (run := monitor.run(unique, api)) and run.snapshot and len(run.snapshot.wait_list) == 1,
                     "the monitor to see the late joiner")
            expect(page.get_by_text("waiting", exact=True).first).to_be_visible(timeout=WAIT_MS)
            # The two participants re-rendezvous with it: a new round of three, written via members 1 and 2.
            infos = rendezvous_all(handlers)
            joiner.join(timeout=90)
            assert not joiner.is_alive(), "the late joiner never got through its rendezvous"
            (late_info,) = joined
            assert not isinstance(late_info, BaseException), f"the late joiner failed: {late_info!r}"
            infos.append(late_info)
            assert sorted(info.rank for info in infos) == [0, 1, 2]
            assert {info.world_size for info in infos} == {3}
            run = wait_for(lambda: (run := monitor.run(unique, api)) and run.snapshot.world_size == 3 and run,
                           "round 2 with three participants")
            assert run.snapshot.complete and sorted(run.snapshot.participants.values()) == [0, 1, 2]
            try:
                expect(page.get_by_text("participant", exact=True)).to_have_count(3, timeout=WAIT_MS)
            except AssertionError as stale:  # seen rarely under load; keep what the next look needs
                shown = [page.locator(selector).all_inner_texts()
                         for selector in ("[data-role=as-of]", ".rdzv-banner", ".rdzv-finding", ".slick-row")]
                raise AssertionError(f"{stale}\nmonitor: {run.snapshot!r} at {run.revision}; page: {shown}\n"
                                     f"page errors: {page_errors[-10:]}\n"
                                     f"dashboard log:\n{dashboard.log.read_text(errors='replace')[-4000:]}") from None
            assert monitor.connection.state in ("connected", "recovered")
            with cluster.kv(api) as kv:
                assert kv.get(f"{RENDEZVOUS_PREFIX}/{unique}") is not None
        finally:
            monitor.stop()
            for handler in (*handlers, late):
                try:
                    handler.shutdown()
                except Exception:  # noqa: BLE001 - best-effort cleanup
                    pass
