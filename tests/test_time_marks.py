"""Time marks (rdzv.time_marks): a marked sentence reads, at any moment, exactly what the plain
functions of rdzv.text say; the diagnosis's sentences stay the same from one second to the next
while what they read moves; text from the state can never forge a mark."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from rendezvous_helpers import torch_state_b64

from rdzv import time_marks
from rdzv.diagnosis import diagnose
from rdzv.rendezvous_settings import RendezvousSettings
from rdzv.state import decode_state_b64
from rdzv.text import age, countdown, utc_time

NOW = datetime(2026, 12, 1, 4, 10, 35, 250_000, tzinfo=timezone.utc)
SPANS = [timedelta(microseconds=micros) for micros in (
    -5_000_000, 0, 999_999, 1_000_000, 59_999_999, 60_000_000, 605_000_000, 3_599_999_999, 3_600_000_000,
    86_399_999_999, 86_400_000_000, 10 * 86_400_000_000 + 5_000_000)]


@pytest.mark.parametrize("span", SPANS, ids=str)
def test_each_mark_reads_what_rdzv_text_says(span):
    moment = NOW - span
    assert time_marks.expand(time_marks.since(moment), NOW) == age(NOW - moment)
    assert time_marks.expand(time_marks.ahead(NOW + span), NOW) == age(span)
    assert time_marks.expand(time_marks.countdown(NOW + span), NOW) == countdown(NOW + span, NOW)
    assert time_marks.expand(time_marks.clock_after(span), NOW) == utc_time(NOW + span)


def test_a_marked_sentence_keeps_its_text_around_the_marks():
    sentence = f"a <b> for {time_marks.since(NOW - timedelta(seconds=65))}, by {time_marks.clock_after(timedelta(minutes=10))}."
    assert time_marks.has_marks(sentence)
    assert time_marks.expand(sentence, NOW) == "a <b> for 1 min 05 s, by 04:20:35 UTC."
    assert time_marks.expand(sentence, NOW + timedelta(seconds=1)) == "a <b> for 1 min 06 s, by 04:20:36 UTC."
    assert [(before, kind) for before, kind, _ in time_marks.pieces(sentence)] == [
        ("a <b> for ", time_marks.SINCE), (", by ", time_marks.CLOCK_AFTER), (".", None)]


def test_diagnosis_sentences_stay_the_same_while_their_words_move():
    """All nodes dead, nothing changes in etcd: the findings' marked text is the same one second
    and one minute later, and their plain text is that text read at each moment."""
    beat = NOW - timedelta(seconds=40)
    snapshot = decode_state_b64(torch_state_b64({("host-a", 1, 0): 0, ("host-b", 2, 0): 0}, complete=False,
                                                heartbeats={("host-a", 1, 0): beat, ("host-b", 2, 0): beat}))
    settings = RendezvousSettings.provided(min_nodes=3, max_nodes=4, join_timeout=600)
    readings = {offset: diagnose(snapshot, settings, NOW + timedelta(seconds=offset)) for offset in (0, 1, 60)}
    marked = [[finding.marked for finding in findings] for findings in readings.values()]
    assert marked[0] == marked[1] == marked[2]
    stale = next(finding for finding in readings[0] if finding.code == "stale-heartbeat")
    assert "for 40 s" in stale.message
    assert "for 41 s" in next(finding for finding in readings[1] if finding.code == "stale-heartbeat").message
    forming = next(finding for finding in readings[60] if finding.code == "forming")
    assert "given up by 04:21:35 UTC at the latest" in forming.next  # now + join_timeout, read a minute later
    for offset, findings in readings.items():
        for finding in findings:
            at = NOW + timedelta(seconds=offset)
            assert (finding.message, finding.next) == tuple(time_marks.expand(text, at) for text in finding.marked)
            assert not time_marks.has_marks(finding.message + finding.next)


def test_a_node_name_cannot_forge_a_mark():
    forged = f"{time_marks.START}s0{time_marks.END}"
    snapshot = decode_state_b64(torch_state_b64({(forged, 1, 0): 0}, heartbeats={(forged, 1, 0): NOW - timedelta(minutes=2)}))
    findings = diagnose(snapshot, RendezvousSettings(), NOW)
    stale = next(finding for finding in findings if finding.code == "stale-heartbeat")
    assert stale.message.startswith("Node \ufffds0\ufffd_1_0 has sent no keep-alive for 2 min 00 s")
    assert time_marks.plain(forged) == "\ufffds0\ufffd" and time_marks.plain("host-a") == "host-a"


def test_a_finding_made_without_marks_reads_the_same_marked():
    from rdzv.diagnosis import Finding

    finding = Finding("complete", "info", "Round 0 is complete.", "Nothing happens.")
    assert finding.marked == ("Round 0 is complete.", "Nothing happens.")


def test_a_marked_tile_keeps_its_mark_out_of_attributes():
    from datetime import datetime, timedelta, timezone

    from rdzv.ui.browser_clock import live_markup
    from rdzv.ui.style import tile

    now = datetime.now(timezone.utc)
    shown = live_markup(tile("deadline", time_marks.countdown(now + timedelta(seconds=12))), now)
    assert "title=" not in shown and shown.count("<span data-rdzv-mark=") == 1 and ">in 12 s</span>" in shown
    assert "title='4'" in tile("participants", 4)
