"""The recording file format (rdzv.recording): round trips, appending, a SIGKILLed writer, torn
tails, truncation at every byte, bit flips, hostile lines, and the size bound."""

from __future__ import annotations

import base64
import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import ROOT, subprocess_env

from rdzv import recording
from rdzv.recording import (
    FORMAT,
    MAX_RECORD_BYTES,
    VERSION,
    RecordedEvent,
    Recorder,
    Recording,
    RecordingError,
    load_recording,
)

pytestmark = pytest.mark.timeout(120)

ENDPOINT = "http://127.0.0.1:2379"
PREFIX = "/torch/elastic/rendezvous"
T0 = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
SENTENCE = re.compile(r"^[A-Z`].*[.]$", re.DOTALL)  # one sentence: a capital (or a path) ... a full stop


def event(i: int, **changes) -> RecordedEvent:
    fields = dict(api="v3", key=f"{PREFIX}/run{i % 3}/state", kind="put", value=f"c3RhdGU{i}=",
                  revision=i + 1, seen_at=T0 + timedelta(seconds=i))
    fields.update(changes)
    return RecordedEvent(**fields)


def record(path: Path, events, **kwargs) -> Recorder:
    with Recorder(path, endpoint=kwargs.get("endpoint", ENDPOINT), prefix=kwargs.get("prefix", PREFIX)) as recorder:
        for each in events:
            recorder.write(each)
    return recorder


def checked_line(data: bytes) -> bytes:
    """A line with a valid checksum around ``data`` (how a hostile file would be made)."""
    return data + b"\t%08x\n" % zlib.crc32(data)


def line_starts(data: bytes) -> list[int]:
    """The byte offset of every line of ``data``, and of its end."""
    return [0] + [i + 1 for i, byte in enumerate(data) if byte == 0x0A]


def assert_sentence(text: str) -> None:
    assert SENTENCE.match(text) and "\n" not in text, text




# -- round trips --------------------------------------------------------------------------


def test_round_trip_of_puts_and_deletes_with_unicode_and_surrogate_escapes(tmp_path):
    events = [
        event(0),
        event(1, api="v2", key=f"{PREFIX}/rün-ü/ключ/😀", value="naïve ☃ text\twith\nlines \"quoted\" \\"),
        # bytes that are not UTF-8 reach the KV layer as surrogate escapes (v3): kept exactly
        event(2, key=f"{PREFIX}/raw\udc80\udcff", value="\udcc3\udcc3 and \udcfe"),
        event(3, kind="delete", value=None, read_back=True),
        event(4, value="", time_estimated=True, read_back=True),
        event(5, revision=0),
        event(6, revision=2**63 - 1, seen_at=datetime(2025, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))),
        event(7, key="/", value="x" * 100_000),
    ]
    recorder = record(tmp_path / "r.rec", events)
    assert recorder.count == len(events) and recorder.closed and recorder.path == str(tmp_path / "r.rec")

    loaded = load_recording(tmp_path / "r.rec")
    assert isinstance(loaded, Recording)
    assert loaded.events == tuple(events)
    assert loaded.damage is None
    assert (loaded.endpoint, loaded.prefix, loaded.path) == (ENDPOINT, PREFIX, str(tmp_path / "r.rec"))
    assert abs(loaded.started_at - datetime.now(timezone.utc)) < timedelta(minutes=5)
    assert all(e.seen_at.tzinfo is timezone.utc for e in loaded.events) and loaded.started_at.tzinfo is timezone.utc
    assert loaded.events[6].seen_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)  # from 05:04:05+02:00
    assert [e.key for e in loaded.events] == [e.key for e in events]  # the surrogates, unchanged

    lines = (tmp_path / "r.rec").read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == len(events) + 2
    for line in lines[:-1]:
        assert line.isascii() and re.fullmatch(rb"\{.*\}\t[0-9a-f]{8}", line)
        data, crc = line.rsplit(b"\t", 1)
        assert zlib.crc32(data) == int(crc, 16)
    header = json.loads(lines[0].rsplit(b"\t", 1)[0])
    assert header["format"] == FORMAT == "rdzv-recording" and header["version"] == VERSION == 1
    assert (header["endpoint"], header["prefix"]) == (ENDPOINT, PREFIX)
    assert datetime.fromisoformat(header["started_at"]).utcoffset() == timedelta(0)


def test_a_recording_with_no_events_loads_empty(tmp_path):
    record(tmp_path / "r.rec", [])
    loaded = load_recording(str(tmp_path / "r.rec"))
    assert loaded.events == () and loaded.damage is None


def test_appending_to_an_existing_recording(tmp_path):
    path = tmp_path / "r.rec"
    first = record(path, [event(0), event(1)])
    started_at = load_recording(path).started_at
    with Recorder(path, endpoint=ENDPOINT, prefix=PREFIX) as again:
        assert again.existing_records == 2 and again.torn_bytes_dropped == 0
        assert again.started_at == started_at == first.started_at
        again.write(event(2))
        again.write(event(3, kind="delete", value=None))
        assert again.count == 2
    loaded = load_recording(path)
    assert loaded.events == tuple(event(i) for i in range(3)) + (event(3, kind="delete", value=None),)
    assert loaded.damage is None and loaded.started_at == started_at
    assert path.read_bytes().count(b'"format"') == 1  # no second header


def test_an_empty_file_becomes_a_recording(tmp_path):
    path = tmp_path / "r.rec"
    path.touch()
    record(path, [event(0)])
    assert load_recording(path).events == (event(0),)


def test_close_is_idempotent_and_writing_after_close_is_refused(tmp_path):
    recorder = Recorder(tmp_path / "r.rec", endpoint=ENDPOINT, prefix=PREFIX)
    recorder.write(event(0))
    recorder.close()
    recorder.close()
    with pytest.raises(RecordingError) as caught:
        recorder.write(event(1))
    assert_sentence(str(caught.value))
    assert load_recording(tmp_path / "r.rec").events == (event(0),)


def test_one_recorder_at_a_time(tmp_path):
    path = tmp_path / "r.rec"
    with Recorder(path, endpoint=ENDPOINT, prefix=PREFIX) as first:
        first.write(event(0))
        before = path.read_bytes()
        with pytest.raises(RecordingError, match="Another recorder is writing"):
            Recorder(path, endpoint=ENDPOINT, prefix=PREFIX)
        assert path.read_bytes() == before
        first.write(event(1))
    with Recorder(path, endpoint=ENDPOINT, prefix=PREFIX) as second:  # the lock went with the first
        second.write(event(2))
    assert load_recording(path).events == tuple(event(i) for i in range(3))


def test_threads_may_share_a_recorder(tmp_path):
    path = tmp_path / "r.rec"
    with Recorder(path, endpoint=ENDPOINT, prefix=PREFIX) as recorder:
        def write(thread: int) -> None:
            for i in range(200):
                recorder.write(event(thread * 1000 + i, value="v" * (i * 37 % 5000)))

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert recorder.count == 800
    loaded = load_recording(path)
    assert loaded.damage is None
    assert sorted(e.revision for e in loaded.events) == sorted(t * 1000 + i + 1 for t in range(4) for i in range(200))


def test_no_file_descriptor_is_left_open(tmp_path):
    def open_fds() -> list[str]:
        """This process's descriptors on files below tmp_path (other threads' sockets come and go)."""
        found = []
        for name in os.listdir("/proc/self/fd"):
            try:
                target = os.readlink(f"/proc/self/fd/{name}")
            except OSError:  # closed while listing
                continue
            if target.startswith(str(tmp_path)):
                found.append(target)
        return sorted(found)

    record(tmp_path / "r.rec", [event(0)])
    (tmp_path / "text").write_text("not a recording\n")
    before = open_fds()
    for _ in range(3):
        load_recording(tmp_path / "r.rec")
        for bad in (tmp_path, tmp_path / "missing", tmp_path / "text"):
            with pytest.raises(RecordingError):
                load_recording(bad)
        for bad in (tmp_path, tmp_path / "text"):
            with pytest.raises(RecordingError):
                Recorder(bad, endpoint=ENDPOINT, prefix=PREFIX)
        with pytest.raises(RecordingError):
            Recorder(tmp_path / "r.rec", endpoint=ENDPOINT, prefix="/other")
    assert open_fds() == before


# -- refusing to append ---------------------------------------------------------------------


def newer_header() -> bytes:
    return checked_line(json.dumps({"format": FORMAT, "version": VERSION + 1, "endpoint": ENDPOINT, "prefix": PREFIX,
                                    "started_at": T0.isoformat(), "compression": "zstd"}).encode())


def flipped(data: bytes, offset: int, bit: int = 0) -> bytes:
    return data[:offset] + bytes([data[offset] ^ (1 << bit)]) + data[offset + 1:]


@pytest.mark.parametrize(
    "content", ["text", "binary", "newer", "damaged", "other endpoint", "other prefix", "header only torn"]
)
def test_a_file_that_cannot_be_appended_to_is_refused_and_left_unchanged(tmp_path, content):
    path = tmp_path / "r.rec"
    if content == "text":
        path.write_text("my precious notes\nline two\n")
    elif content == "binary":
        path.write_bytes(bytes(range(256)) * 10)
    elif content == "newer":
        path.write_bytes(newer_header() + b"whatever the future holds\n")
    elif content == "header only torn":
        record(path, [])
        path.write_bytes(path.read_bytes()[:40])
    else:
        record(path, [event(i) for i in range(5)])
        if content == "damaged":  # damage in the middle, not a torn tail: appending would hide what follows
            path.write_bytes(flipped(path.read_bytes(), line_starts(path.read_bytes())[3] + 5))
    before = path.read_bytes()
    endpoint = "http://10.0.0.1:2379" if content == "other endpoint" else ENDPOINT
    prefix = "/other" if content == "other prefix" else PREFIX
    with pytest.raises(RecordingError) as caught:
        Recorder(path, endpoint=endpoint, prefix=prefix)
    message = str(caught.value)
    assert_sentence(message)
    assert str(path) in message
    if content == "newer":
        assert "upgrade rdzv" in message
    elif content == "damaged":
        assert "record 3" in message and "another file" in message
    elif content in ("text", "binary"):
        assert "not an rdzv recording" in message
    assert path.read_bytes() == before


def test_recording_into_a_directory_or_a_missing_directory_is_refused(tmp_path):
    for path in (tmp_path, tmp_path / "missing" / "r.rec"):
        with pytest.raises(RecordingError) as caught:
            Recorder(path, endpoint=ENDPOINT, prefix=PREFIX)
        assert_sentence(str(caught.value))


@pytest.mark.parametrize("bad, field", [
    (dict(api="v4"), "api"),
    (dict(kind="create"), "kind"),
    (dict(key=""), "key"),
    (dict(key=b"/k"), "key"),
    (dict(key="/k\ud800"), "key"),  # a lone surrogate no etcd byte string decodes to
    (dict(value=None), "value"),
    (dict(value=b"bytes"), "value"),
    (dict(kind="delete", value="x"), "value"),
    (dict(revision=-1), "revision"),
    (dict(revision=2**63), "revision"),
    (dict(revision=True), "revision"),
    (dict(revision=1.0), "revision"),
    (dict(seen_at=datetime(2025, 1, 1)), "seen_at"),
    (dict(seen_at="2025-01-01T00:00:00+00:00"), "seen_at"),
    (dict(seen_at=datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))), "seen_at"),
    (dict(read_back=1), "read_back"),
    (dict(time_estimated=None), "time_estimated"),
])
def test_an_invalid_event_is_refused_and_nothing_is_written(tmp_path, bad, field):
    path = tmp_path / "r.rec"
    with Recorder(path, endpoint=ENDPOINT, prefix=PREFIX) as recorder:
        recorder.write(event(0))
        size = path.stat().st_size
        with pytest.raises(RecordingError) as caught:
            recorder.write(event(1, **bad))
        assert repr(field) in str(caught.value)
        assert_sentence(str(caught.value))
        with pytest.raises(RecordingError):
            recorder.write(("v3", "/k", "put", "v", 1, T0))
        assert path.stat().st_size == size and recorder.count == 1
        recorder.write(event(2))
    assert load_recording(path).events == (event(0), event(2))


# -- a writer killed with SIGKILL -------------------------------------------------------------

WRITER = r"""
import sys
from datetime import datetime, timezone
from rdzv.recording import Recorder, RecordedEvent

def value(i):
    size = (12, 3_000, 1_000_000)[i % 3]
    return (str(i) + ":").ljust(size, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i % 26])

with Recorder(sys.argv[1], endpoint="http://127.0.0.1:2379", prefix="/torch/elastic/rendezvous") as recorder:
    first = recorder.existing_records
    print("opened", first, recorder.torn_bytes_dropped, flush=True)
    written = 0
    for i in range(first, first + 100_000):
        recorder.write(RecordedEvent("v3", "/torch/elastic/rendezvous/run%d" % (i % 3), "put", value(i), i + 1,
                                     datetime.now(timezone.utc)))
        written += len(value(i))
        if i == first + 8:
            print("ready", flush=True)
        if written > 300_000_000:  # never reached unless the test fails to kill it
            break
sys.exit(3)
"""


def expected_value(i: int) -> str:
    size = (12, 3_000, 1_000_000)[i % 3]
    return (str(i) + ":").ljust(size, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[i % 26])


def test_a_writer_killed_with_sigkill_loses_at_most_the_record_it_was_writing(tmp_path):
    """Five rounds on one file: a real writer process writes as fast as it can, is SIGKILLed
    mid-way, the file is loaded, and the next round's writer appends to what is left."""
    path = tmp_path / "killed.rec"
    total = tail_size = torn_tails = 0
    for round_ in range(5):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                                  env=subprocess_env(), cwd=ROOT)
        try:
            opened = writer.stdout.readline().split()
            assert opened[0] == "opened", opened
            assert int(opened[1]) == total  # every complete record of earlier rounds is still there
            if round_ > 0:
                assert int(opened[2]) == tail_size  # the torn tail, and nothing else, was cut off
            assert writer.stdout.readline() == "ready\n"
            # kill it when it has written more and is inside a write (the file does not end in a newline)
            grown = path.stat().st_size + 3_000_000
            with open(path, "rb") as file:
                def mid_write(writer=writer, grown=grown) -> bool:
                    size = os.fstat(file.fileno()).st_size
                    ended = writer.poll() is not None
                    return ended or (size > grown and os.pread(file.fileno(), 1, size - 1) != b"\n")
                deadline = time.monotonic() + 60
                while not mid_write() and time.monotonic() < deadline:
                    pass  # no sleep: a write of a megabyte takes about a millisecond
            writer.send_signal(signal.SIGKILL)
        finally:
            writer.kill()
            writer.wait(timeout=30)
            writer.stdout.close()
        assert writer.returncode == -signal.SIGKILL  # killed mid-way, not finished

        data = path.read_bytes()
        loaded = load_recording(path)
        starts = line_starts(data)
        complete = len(starts) - 2  # lines ending in a newline, less the header
        tail_size = len(data) - starts[-1]
        assert len(loaded.events) == complete > total + 8
        for i, each in enumerate(loaded.events):
            assert (each.key, each.kind, each.revision) == (f"{PREFIX}/run{i % 3}", "put", i + 1)
            assert each.value == expected_value(i)
        if tail_size:  # the kill landed inside a write: only that record is lost, and said so
            torn_tails += 1
            assert loaded.damage == (
                f"The recording stops being readable at byte {starts[-1]} (record {complete + 1}): the record is "
                "cut short, as when the recorder was killed while writing; "
                f"the {complete} records before it were loaded."
            )
        else:
            assert loaded.damage is None
        total = complete

    with Recorder(path, endpoint=ENDPOINT, prefix=PREFIX) as after:
        assert after.existing_records == total and after.torn_bytes_dropped == tail_size
    final = load_recording(path)
    assert final.damage is None and len(final.events) == total
    print(f"{torn_tails} of 5 kills tore a record")


# -- torn, truncated and corrupted files ------------------------------------------------------


def small_recording(tmp_path: Path) -> tuple[bytes, list[RecordedEvent]]:
    events = [event(0), event(1, key=f"{PREFIX}/ü", value="é\udc80"), event(2, kind="delete", value=None), event(3)]
    record(tmp_path / "small.rec", events)
    return (tmp_path / "small.rec").read_bytes(), events


def test_a_file_cut_at_every_byte_loads_every_complete_record_and_reopens_for_append(tmp_path):
    data, events = small_recording(tmp_path)
    starts = line_starts(data)
    header_end = starts[1]
    path = tmp_path / "cut.rec"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        if cut < header_end:
            with pytest.raises(RecordingError) as caught:
                load_recording(path)
            assert_sentence(str(caught.value))
            assert ("is empty" if cut == 0 else "header is cut short") in str(caught.value)
            continue
        complete = sum(1 for start in starts[2:] if start <= cut)
        loaded = load_recording(path)
        assert loaded.events == tuple(events[:complete])
        if cut in starts:
            assert loaded.damage is None
        else:
            assert loaded.damage.startswith(
                f"The recording stops being readable at byte {starts[complete + 1]} (record {complete + 1}): "
                "the record is cut short")
            assert_sentence(loaded.damage)
        # reopening drops the torn tail, and what is appended after it reads back
        with Recorder(path, endpoint=ENDPOINT, prefix=PREFIX) as recorder:
            assert recorder.existing_records == complete
            assert recorder.torn_bytes_dropped == cut - starts[complete + 1]
            recorder.write(event(9))
        again = load_recording(path)
        assert again.damage is None and again.events == tuple(events[:complete]) + (event(9),)


def test_a_bit_flip_in_the_middle_is_reported_with_its_record_number(tmp_path):
    data, events = small_recording(tmp_path)
    starts = line_starts(data)
    path = tmp_path / "flipped.rec"
    path.write_bytes(flipped(data, (starts[3] + starts[4]) // 2, 3))  # inside record 3's JSON
    loaded = load_recording(path)
    assert loaded.events == tuple(events[:2])
    assert loaded.damage == (
        f"The recording stops being readable at byte {starts[3]} (record 3): the record has a checksum that does "
        "not match its contents, so the file was changed or corrupted here; the 2 records before it were loaded."
    )


def test_single_bit_flips_are_all_caught(tmp_path):
    data, events = small_recording(tmp_path)
    starts = line_starts(data)
    path = tmp_path / "flipped.rec"
    for offset in range(len(data)):
        line = next(n for n in range(len(starts) - 1) if starts[n] <= offset < starts[n + 1])  # 0 = the header
        # every bit of the framing (checksum, tab, newline) and of the JSON's first bytes; two bits elsewhere
        framing = offset >= starts[line + 1] - 10 or offset < starts[line] + 12
        for bit in range(8) if framing else (offset % 8, (offset * 3 + 1) % 8):
            path.write_bytes(flipped(data, offset, bit))
            if line == 0:
                with pytest.raises(RecordingError) as caught:
                    load_recording(path)
                assert_sentence(str(caught.value))
                continue
            # (a flipped newline runs the line into the next, or leaves the last one cut short)
            loaded = load_recording(path)
            assert loaded.events == tuple(events[:line - 1]), (offset, bit)
            assert loaded.damage is not None and f"(record {line}):" in loaded.damage, (offset, bit)
            assert f"at byte {starts[line]} " in loaded.damage
            assert_sentence(loaded.damage)


# -- not a recording ------------------------------------------------------------------------


def test_missing_empty_garbage_and_directory_files_are_not_recordings(tmp_path):
    cases = {
        "missing": (tmp_path / "missing.rec", "There is no recording at"),
        "directory": (tmp_path, "cannot be read"),
    }
    (tmp_path / "empty.rec").write_bytes(b"")
    cases["empty"] = (tmp_path / "empty.rec", "is empty")
    rng = random.Random(14)
    for n in range(20):
        garbage = tmp_path / f"garbage{n}.rec"
        garbage.write_bytes(rng.randbytes(rng.choice([1, 10, 1000, 100_000])))
        cases[f"garbage{n}"] = (garbage, "not an rdzv recording")
    (tmp_path / "json.rec").write_text('{"format": "something-else", "version": 1}\n')
    cases["other json"] = (tmp_path / "json.rec", "not an rdzv recording")
    (tmp_path / "other.rec").write_bytes(checked_line(b'{"format":"other","version":1}'))
    cases["other format"] = (tmp_path / "other.rec", "not an rdzv recording")
    (tmp_path / "long.rec").write_bytes(b"x" * (recording.MAX_HEADER_BYTES + 10))
    cases["long first line"] = (tmp_path / "long.rec", "not an rdzv recording")
    os.mkfifo(tmp_path / "fifo")
    cases["fifo"] = (tmp_path / "fifo", "not a regular file")
    for name, (path, words) in cases.items():
        with pytest.raises(RecordingError) as caught:
            load_recording(path)
        assert words in str(caught.value), name
        assert_sentence(str(caught.value))


def test_a_newer_version_asks_for_an_upgrade(tmp_path):
    path = tmp_path / "newer.rec"
    path.write_bytes(newer_header() + b"a line of a format this version does not know\n")
    with pytest.raises(RecordingError) as caught:
        load_recording(path)
    assert str(caught.value) == (
        f"The file {path} was recorded by a newer rdzv (recording format version 2; this rdzv reads version 1 and "
        "older); upgrade rdzv to read it."
    )


@pytest.mark.parametrize("header", [
    {"format": FORMAT, "version": 0, "endpoint": ENDPOINT, "prefix": PREFIX, "started_at": T0.isoformat()},
    {"format": FORMAT, "version": "1", "endpoint": ENDPOINT, "prefix": PREFIX, "started_at": T0.isoformat()},
    {"format": FORMAT, "version": 1, "endpoint": 5, "prefix": PREFIX, "started_at": T0.isoformat()},
    {"format": FORMAT, "version": 1, "endpoint": ENDPOINT, "prefix": None, "started_at": T0.isoformat()},
    {"format": FORMAT, "version": 1, "endpoint": ENDPOINT, "prefix": PREFIX, "started_at": "2025-01-01T00:00:00"},
    {"format": FORMAT, "version": 1, "endpoint": ENDPOINT, "prefix": PREFIX},
    {"format": FORMAT, "version": 1, "endpoint": ENDPOINT, "prefix": PREFIX, "started_at": T0.isoformat(), "x": 1},
])
def test_a_bad_header_is_refused(tmp_path, header):
    path = tmp_path / "bad.rec"
    path.write_bytes(checked_line(json.dumps(header, separators=(",", ":")).encode()))
    with pytest.raises(RecordingError) as caught:
        load_recording(path)
    assert "header" in str(caught.value)
    assert_sentence(str(caught.value))


# -- hostile records with valid checksums ------------------------------------------------------


def good_fields(**changes) -> dict:
    fields = {"api": "v3", "key": "/k", "kind": "put", "value": "dmFsdWU=", "revision": 7,
              "seen_at": "2025-01-01T00:00:00.000000+00:00", "read_back": False, "time_estimated": False}
    fields.update(changes)
    return fields


def as_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


HOSTILE = {
    "top-level list": (b"[1,2,3]", "is not a JSON object"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, "is not a JSON object"),
    "deep nesting in a field": (
        as_json(good_fields()).replace(b'"dmFsdWU="', b"[" * 100_000 + b"]" * 100_000), "is not a JSON object"),
    "a million fields": (b"{" + b",".join(b'"k%d":1' % i for i in range(1_000_000)) + b"}", "is not a JSON object"),
    "a million empty objects": (b"[" + b",".join([b"{}"] * 1_000_000) + b"]", "is not a JSON object"),
    "a huge number": (as_json(good_fields()).replace(b'"revision":7', b'"revision":' + b"9" * 100_000), "JSON object"),
    "not JSON": (b"{this is not json}", "is not a JSON object"),
    "UTF-16": ('{"api":"v3"}'.encode("utf-16"), "is not a JSON object"),
    "invalid UTF-8": (b'{"api":"\xff\xfe"}', "is not a JSON object"),
    "float revision": (as_json(good_fields(revision=7.0)), "field 'revision'"),
    "bool revision": (as_json(good_fields(revision=True)), "field 'revision'"),
    "negative revision": (as_json(good_fields(revision=-1)), "field 'revision'"),
    "string revision": (as_json(good_fields(revision="7")), "field 'revision'"),
    "NaN revision": (as_json(good_fields()).replace(b'"revision":7', b'"revision":NaN'), "field 'revision'"),
    "api": (as_json(good_fields(api="v9")), "field 'api'"),
    "kind": (as_json(good_fields(kind="__import__('os').system('touch canary')")), "field 'kind'"),
    "value object": (as_json(good_fields(value={"__reduce__": ["os.system", ["true"]]})), "field 'value'"),
    "value list": (as_json(good_fields(value=["a"])), "field 'value'"),
    "delete with a value": (as_json(good_fields(kind="delete")), "field 'value'"),
    "key null": (as_json(good_fields(key=None)), "field 'key'"),
    "key with a lone high surrogate": (as_json(good_fields(key="/k\ud83d")), "field 'key'"),
    "naive seen_at": (as_json(good_fields(seen_at="2025-01-01T00:00:00")), "field 'seen_at'"),
    "garbage seen_at": (as_json(good_fields(seen_at="yesterday")), "field 'seen_at'"),
    "huge seen_at": (as_json(good_fields(seen_at="2" * 10_000)), "field 'seen_at'"),
    "seen_at number": (as_json(good_fields(seen_at=1.5e9)), "field 'seen_at'"),
    "read_back string": (as_json(good_fields(read_back="false")), "field 'read_back'"),
    "time_estimated 0": (as_json(good_fields(time_estimated=0)), "field 'time_estimated'"),
    "missing field": (as_json({k: v for k, v in good_fields().items() if k != "revision"}), "has no field 'revision'"),
    "unknown field": (as_json(good_fields(**{"\x1b[31mevil": 1})), "has an unknown field '\\x1b[31mevil'"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_record_with_a_valid_checksum_is_damage_not_a_crash(tmp_path, name):
    data, reason = HOSTILE[name]
    path = tmp_path / "hostile.rec"
    record(path, [event(0)])
    with open(path, "ab") as file:
        file.write(checked_line(data) + checked_line(as_json(good_fields())))
    loaded = load_recording(path)
    assert loaded.events == (event(0),)
    assert "(record 2): the record " in loaded.damage and reason in loaded.damage, loaded.damage
    assert loaded.damage.endswith("; the one record before it was loaded.")
    assert_sentence(loaded.damage)
    assert loaded.damage.isprintable()


def test_a_hostile_pickle_stays_text(tmp_path):
    """The loader never unpickles: a recorded state is base64 text for the safe decoder."""
    canary = tmp_path / "canary"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {canary}",))

    value = base64.b64encode(pickle.dumps(Evil())).decode()
    record(tmp_path / "r.rec", [event(0, value=value)])
    loaded = load_recording(tmp_path / "r.rec")
    assert loaded.events[0].value == value and not canary.exists()


def test_the_valid_good_fields_line_loads(tmp_path):
    """The hostile cases above differ from a good line only where they say."""
    path = tmp_path / "good.rec"
    record(path, [])
    with open(path, "ab") as file:
        file.write(checked_line(as_json(good_fields())))
    assert load_recording(path).events == (
        RecordedEvent("v3", "/k", "put", "dmFsdWU=", 7, datetime(2025, 1, 1, tzinfo=timezone.utc)),)


# -- the size bound -----------------------------------------------------------------------------


def test_the_bound_leaves_room_for_the_largest_state():
    from rdzv.state import MAX_STATE_BYTES

    assert MAX_RECORD_BYTES == 128 * 1024 * 1024
    assert MAX_RECORD_BYTES > (MAX_STATE_BYTES + 2) // 3 * 4 + 1024 * 1024


def test_a_line_longer_than_the_bound_is_refused_without_being_read_unboundedly(tmp_path):
    """A sparse file: the header, then a 'line' of zeros one byte longer than the bound allows."""
    path = tmp_path / "huge.rec"
    record(path, [event(0)])
    start = path.stat().st_size
    with open(path, "r+b") as file:
        file.seek(start + MAX_RECORD_BYTES)
        file.write(b"\n" + checked_line(as_json(good_fields())))
    loaded = load_recording(path)
    assert loaded.events == (event(0),)
    assert loaded.damage == (
        f"The recording stops being readable at byte {start} (record 2): the record is longer than the 128 MiB "
        "a record may take; the one record before it was loaded."
    )


def test_the_bound_is_enforced_when_writing_and_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(recording, "MAX_RECORD_BYTES", 1000)
    path = tmp_path / "r.rec"
    with Recorder(path, endpoint=ENDPOINT, prefix=PREFIX) as recorder:
        recorder.write(event(0, value="x" * 700))
        size = path.stat().st_size
        with pytest.raises(RecordingError, match="more than the 1000 bytes a record may take"):
            recorder.write(event(1, value="x" * 1000))
        assert path.stat().st_size == size
        recorder.write(event(2))
    # the loader refuses the same lines the writer would have refused
    with open(path, "ab") as file:
        line = checked_line(as_json(good_fields(value="y" * 1000)))
        assert len(line) > 1000
        file.write(line)
    loaded = load_recording(path)
    assert loaded.events == (event(0, value="x" * 700), event(2))
    assert "(record 3): the record is longer than" in loaded.damage


# -- hygiene --------------------------------------------------------------------------------------


def test_importing_the_module_loads_neither_torch_nor_panel_nor_bokeh():
    code = ("import sys, rdzv.recording; "
            "print(sorted(m for m in ('torch', 'panel', 'bokeh', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env=subprocess_env(), cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"
