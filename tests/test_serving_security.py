"""Serving the dashboard to a team (issue 17): sign-in through Panel's own basic-auth login form,
who may write, the audit log, refusals before anything is bound, HTTPS, and websocket origins.

Real etcd, real torch rendezvous handlers, ``rdzv dashboard`` and ``panel serve`` as
subprocesses and Debian's Chromium through Playwright. Every server binds to 127.0.0.1; the
non-loopback addresses below are only ever refused before binding.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port
from serving_helpers import clean_env, dashboard_servers
from rendezvous_helpers import params, rdzv_handler

from rdzv.audit import AuditLog
from rdzv.command_line import EXIT_USAGE
from rdzv.options import SERVING_ENVIRONMENT, Serving, resolve_serving
from rdzv.ui.auth import (
    SHARED_PASSWORD,
    Visitor,
    check_serving,
    decide,
    is_loopback_address,
    scrape_refusal,
    websocket_origins,
)
from rdzv.ui.config import ConfigError, parse_config

PASSWORDS = {"alice": "alice-secret-1", "bob": "bob-secret-2"}
WAIT_MS = 30_000




# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def password_file(tmp_path) -> Path:
    path = tmp_path / "users.json"
    path.write_text(json.dumps(PASSWORDS))
    path.chmod(0o600)
    return path


@pytest.fixture
def live_run(etcd_server, unique):
    """A run completed by a real torch handler on rdzv's backend (v2); yields its id."""
    handler = rdzv_handler(params(etcd_server.get_endpoint(), unique, min_nodes=1, max_nodes=1))
    handler.next_rendezvous()
    yield unique
    with contextlib.suppress(Exception):  # the run may have been closed under it
        handler.shutdown()


@pytest.fixture
def servers(tmp_path):
    """``rdzv_dashboard(*argv, env=...)`` and ``panel_serve(before, after, env=...)``, every one
    stopped after the test."""
    with dashboard_servers(tmp_path) as both:
        yield both


def sign_in(page, url: str, user: str, password: str) -> None:
    """Open ``url``, which Panel redirects to its login form, and submit it."""
    page.goto(url)
    page.locator("input[name=username]").fill(user)
    page.locator("input[name=password]").fill(password)
    page.locator("button[type=submit]").click()


def expect_run_shown(page, run_id: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator(".rdzv-banner")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    expect(page.get_by_text(run_id, exact=True).first).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text(str(os.getpid()), exact=True).first).to_be_visible(timeout=WAIT_MS)


# --- the rules, without a server -----------------------------------------------------------------


def test_loopback_is_127_0_0_0_slash_8_and_names_resolving_only_there():
    assert all(map(is_loopback_address, ["127.0.0.1", "127.0.0.2", "::1", "localhost", "[::1]"]))
    assert not any(map(is_loopback_address, ["0.0.0.0", "::", "", "192.0.2.1", "10.1.2.3", "2001:db8::1"]))


@pytest.mark.parametrize("address, serving, refused", [
    ("127.0.0.1", Serving(), None),
    ("127.0.0.1", Serving(allow_writes=True), None),
    ("0.0.0.0", Serving(), ["without sign-in", "--basic-auth", "--oauth-provider", "--insecure-no-sign-in"]),
    ("192.0.2.1", Serving(), ["without sign-in", "--insecure-no-sign-in"]),
    ("0.0.0.0", Serving(insecure_no_sign_in=True), None),
    ("0.0.0.0", Serving(insecure_no_sign_in=True, allow_writes=True), ["--allow-writes is refused", "never covers"]),
    ("::", Serving(allow_writes=True), ["--allow-writes is refused"]),
    ("0.0.0.0", Serving(basic_auth=Path("u.json"), writers=frozenset({"alice"})), None),
    ("0.0.0.0", Serving(oauth_provider="github"), None),
    ("127.0.0.1", Serving(writers=frozenset({"alice"})), ["--writers names signed-in people", "--basic-auth"]),
    ("127.0.0.1", Serving(basic_auth=Path("u.json"), allow_writes=True), ["needs --writers"]),
])
def test_serving_is_refused_before_binding_with_one_sentence(address, serving, refused):
    if refused is None:
        check_serving(address, 5006, serving)
        return
    with pytest.raises(ConfigError) as caught:
        check_serving(address, 5006, serving)
    message = str(caught.value)
    assert all(words in message for words in refused), message
    assert message.endswith(".") and "\n" not in message and message.count(". ") == 0


WRITERS = frozenset({"alice"})


@pytest.mark.parametrize("serving, sign_in, visitor, may_write, refused", [
    (Serving(), None, Visitor(client="127.0.0.1"), False, None),
    (Serving(), None, Visitor(client="10.0.0.7"), False, "without sign-in"),
    (Serving(), None, Visitor(client="unknown"), False, "without sign-in"),  # unreadable: another machine
    (Serving(insecure_no_sign_in=True), None, Visitor(client="10.0.0.7"), False, None),
    (Serving(allow_writes=True), None, Visitor(client="127.0.0.1"), True, None),
    (Serving(allow_writes=True), None, Visitor(client="::ffff:127.0.0.1"), True, None),
    (Serving(allow_writes=True, insecure_no_sign_in=True), None, Visitor(client="10.0.0.7"), False, None),
    (Serving(allow_writes=True), None, Visitor(), True, None),  # a notebook: no request at all
    (Serving(writers=WRITERS), "basic", Visitor("alice", "10.0.0.7"), True, None),
    (Serving(writers=WRITERS), "basic", Visitor("bob", "10.0.0.7"), False, None),
    (Serving(writers=WRITERS), "oauth", Visitor("Alice", "10.0.0.7"), False, None),  # names as reported
    (Serving(), "basic", Visitor(None, "127.0.0.1"), False, "not signed in"),
    (Serving(writers=WRITERS), None, Visitor(client="127.0.0.1"), False, "has no sign-in"),
    (Serving(writers=WRITERS), SHARED_PASSWORD, Visitor("alice", "127.0.0.1"), False, "shared password"),
    (Serving(allow_writes=True), "basic", Visitor("alice", "127.0.0.1"), False, "needs --writers"),
])
def test_each_visitor_gets_the_page_they_may_have(serving, sign_in, visitor, may_write, refused):
    access = decide(serving, sign_in, visitor)
    assert access.may_write is may_write
    assert (access.refusal is None) if refused is None else (refused in access.refusal)


def test_serving_settings_come_from_flags_and_rdzv_variables(password_file, tmp_path):
    environ = {"RDZV_WRITERS": "alice, bob", "RDZV_AUDIT_LOG": str(tmp_path / "audit.log"),
               "RDZV_BASIC_AUTH": str(password_file), "RDZV_COOKIE_SECRET": "s3cret",
               "RDZV_SSL_CERTFILE": str(password_file), "RDZV_SSL_KEYFILE": str(password_file),
               "RDZV_ALLOW_WEBSOCKET_ORIGIN": "dash.example:443,other:5006"}
    assert set(environ) == set(SERVING_ENVIRONMENT.values()) - {"RDZV_OAUTH_PROVIDER"}
    serving = resolve_serving({}, environ)
    assert serving.writers == {"alice", "bob"} and serving.sign_in == "basic" and serving.cookie_secret == "s3cret"
    assert serving.audit_log == tmp_path / "audit.log" and serving.ssl_certfile == password_file
    assert serving.websocket_origins == ("dash.example:443", "other:5006")
    assert serving.origin("writers") == "RDZV_WRITERS" and "s3cret" not in repr(serving)
    assert resolve_serving({"writers": "carol"}, environ).writers == {"carol"}  # the argument wins
    oauth = resolve_serving({"oauth_provider": "GitHub"}, {})
    assert oauth.sign_in == "oauth" and oauth.oauth_provider == "github"


@pytest.mark.parametrize("content, given, words", [
    ("alice:pw\n", {}, "cannot be read as a password file"),
    ('["alice"]', {}, "is not a password file"),
    ('{"alice": ""}', {}, "is not a password file"),
    ('{"alice": "pw"}', {"oauth_provider": "github"}, "choose one way to sign in"),
    ('{"alice": "pw"}', {"writers": " , "}, "names nobody"),
    ('{"alice": "pw"}', {"ssl_keyfile": __file__}, "without --ssl-certfile"),
    ('{"alice": "pw"}', {"ssl_certfile": "/nonexistent/cert.pem"}, "does not exist"),
])
def test_bad_serving_settings_are_one_sentence(tmp_path, content, given, words):
    path = tmp_path / "users.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        parse_config([], {"RDZV_BASIC_AUTH": str(path), "RDZV_WRITERS": "alice", **{
            SERVING_ENVIRONMENT[name]: value for name, value in given.items()}})
    message = str(caught.value)
    assert words in message and "\n" not in message, message
    if "password file" in words:
        assert "RDZV_BASIC_AUTH" in message


def test_panel_serves_own_flags_after_args_are_refused_with_where_they_go(password_file):
    with pytest.raises(ConfigError, match=r"--basic-auth is panel serve's own flag .* give it before"):
        parse_config(["--basic-auth", str(password_file), "--writers", "alice"], {})
    config = parse_config(["--writers", "alice", "--audit-log", "/tmp/x.log"], {})
    assert config.serving.writes and config.serving.writers == {"alice"}


def test_websocket_origins_are_the_served_address():
    assert websocket_origins("127.0.0.1", 5006) == ["127.0.0.1:5006", "localhost:5006"]
    assert websocket_origins("10.0.0.5", 8443, ("dash.example:8443",)) == ["10.0.0.5:8443", "dash.example:8443"]
    assert websocket_origins("::1", 5006) == ["localhost:5006", "127.0.0.1:5006"]
    assert websocket_origins("192.0.2.7", 443) == ["192.0.2.7:443", "192.0.2.7"]  # Bokeh: no port = 80
    for bad in ("*", "http://dash.example", "dash.example:*", "[::1]:5006"):
        with pytest.raises(ConfigError, match="is not HOST or HOST:PORT"):
            parse_config([], {"RDZV_ALLOW_WEBSOCKET_ORIGIN": f"ok.example:1,{bad}"})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("serving, sign_in, client, authorization, refused", [
    (Serving(), None, "127.0.0.1", None, None),
    (Serving(), None, "::1", None, None),
    (Serving(), None, "192.0.2.9", None, (403, "without sign-in")),
    (Serving(), None, None, None, (403, "without sign-in")),  # unreadable: another machine
    (Serving(insecure_no_sign_in=True), None, "192.0.2.9", None, None),
    # Behind a password, everyone sends it, this machine included.
    (Serving(), "basic", "127.0.0.1", None, (401, "HTTP Basic")),
    (Serving(), "basic", "192.0.2.9", basic("bob", PASSWORDS["bob"]), None),
    (Serving(), "basic", "127.0.0.1", basic("bob", PASSWORDS["alice"]), (401, "HTTP Basic")),
    (Serving(), "basic", "127.0.0.1", basic("carol", "x"), (401, "HTTP Basic")),
    (Serving(), "basic", "127.0.0.1", "Basic not-base64!", (401, "HTTP Basic")),
    (Serving(), "basic", "127.0.0.1", "Bearer " + PASSWORDS["bob"], (401, "HTTP Basic")),
    (Serving(), SHARED_PASSWORD, "192.0.2.9", basic("anyone", "shared-secret"), None),
    (Serving(), SHARED_PASSWORD, "192.0.2.9", basic("anyone", "wrong"), (401, "HTTP Basic")),
    (Serving(), "oauth", "127.0.0.1", None, None),
    (Serving(insecure_no_sign_in=True), "oauth", "192.0.2.9", None, (403, "OAuth")),
])
def test_who_may_scrape_the_metrics(password_file, serving, sign_in, client, authorization, refused):
    passwords = "shared-secret" if sign_in == SHARED_PASSWORD else password_file
    refusal = scrape_refusal(serving, sign_in, client, authorization, passwords)
    if refused is None:
        assert refusal is None, refusal
    else:
        assert refusal is not None and refusal.status == refused[0] and refused[1] in refusal.reason, refusal


def test_an_unreadable_password_file_refuses_every_scrape(tmp_path):
    broken = tmp_path / "users.json"
    broken.write_text("{not json")
    refusal = scrape_refusal(Serving(), "basic", "127.0.0.1", basic("bob", PASSWORDS["bob"]), broken)
    assert refusal is not None and refusal.status == 401


# --- the audit log, through the library call -------------------------------------------------------


@pytest.mark.timeout(120)
def test_close_run_appends_who_when_which_run_revisions_and_outcome(etcd_server, live_run, tmp_path):
    from rdzv.run_closing import CloseRunError, close_run
    from rdzv.state import decode_state_b64

    endpoint = etcd_server.get_endpoint()
    audit = AuditLog(tmp_path / "logs" / "audit.log")
    closed = close_run(endpoint, live_run, audit=audit, user="teacher", client=None)
    again = close_run(endpoint, live_run, audit=audit, user="teacher")
    with pytest.raises(CloseRunError, match="no state") as missing:
        close_run(endpoint, live_run + "-absent", audit=audit, user="teacher")
    first, second, third = audit.entries()
    assert (first.user, first.action, first.run_id, first.api, first.endpoint) == (
        "teacher", "close-run", live_run, "v2", endpoint)
    assert first.revision_before == closed.revision_before < first.revision_after == closed.revision_after
    assert first.outcome == "closed" and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.time)
    assert second.outcome == "unchanged" and second.revision_before == second.revision_after == again.revision_after
    assert third.outcome.startswith("failed: ") and third.revision_before is None and missing.value.audit == third
    assert closed.audit == first and "teacher closed run" in first.sentence()
    assert (audit.path.stat().st_mode & 0o777) == 0o600

    # No audit, no write: an audit log that cannot be written stops the close before etcd is touched.
    with etcd_server.kv(api="v2") as kv:
        key = f"/torch/elastic/rendezvous/{live_run}"
        revision = kv.get(key).revision
        blocked = AuditLog(tmp_path / "logs" / "audit.log" / "nested")
        with pytest.raises(CloseRunError, match="was not closed: The audit log"):
            close_run(endpoint, live_run, audit=blocked)
        assert kv.get(key).revision == revision and decode_state_b64(kv.get(key).value).closed


# --- refusals of `rdzv dashboard`, before binding ---------------------------------------------------


def rdzv_dashboard_exit(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rdzv", "dashboard", *argv], capture_output=True, text=True,
                          timeout=60, env=env or clean_env(), check=False)


def one_sentence(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("rdzv: ") and lines[0].endswith("."), lines[0]
    return lines[0]


# 192.0.2.1 (TEST-NET-1) is on no interface here: binding it would fail with another message, so
# the sentence proves the refusal came before any bind.
@pytest.mark.parametrize("address", ["0.0.0.0", "192.0.2.1"])
def test_a_non_loopback_bind_without_sign_in_exits_with_the_sentence(address):
    port = free_port()
    result = rdzv_dashboard_exit("--address", address, "--port", str(port))
    assert result.returncode == EXIT_USAGE and result.stdout == ""
    message = one_sentence(result.stderr)
    assert f"on {address} without sign-in" in message and f"port {port}" in message
    assert "--basic-auth" in message and "--oauth-provider" in message and "--insecure-no-sign-in" in message


@pytest.mark.parametrize("argv, env", [
    (["--allow-writes"], {}),
    (["--allow-writes", "--insecure-no-sign-in"], {}),
    (["--insecure-no-sign-in"], {"RDZV_WRITERS": "alice"}),
])
def test_allow_writes_on_a_non_loopback_address_without_sign_in_exits(argv, env):
    result = rdzv_dashboard_exit("--address", "0.0.0.0", "--port", str(free_port()), *argv, env=clean_env(**env))
    assert result.returncode == EXIT_USAGE and result.stdout == ""
    message = one_sentence(result.stderr)
    assert ("--allow-writes is refused on 0.0.0.0" in message) or ("RDZV_WRITERS names signed-in people" in message)
    assert "--basic-auth" in message


def test_an_unknown_oauth_provider_or_missing_client_secret_exits(password_file):
    unknown = rdzv_dashboard_exit("--oauth-provider", "myspace", env=clean_env())
    assert unknown.returncode == EXIT_USAGE and "'myspace' is not one of Panel's OAuth providers" in unknown.stderr
    env = {k: v for k, v in clean_env(RDZV_OAUTH_PROVIDER="github").items() if not k.startswith("PANEL_OAUTH")}
    missing = rdzv_dashboard_exit(env=env)
    assert missing.returncode == EXIT_USAGE
    assert "PANEL_OAUTH_KEY and PANEL_OAUTH_SECRET" in one_sentence(missing.stderr)


# --- in Chromium ---------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_a_wrong_password_is_refused_and_the_right_one_admitted(etcd_server, live_run, password_file, servers,
                                                                 page):
    from playwright.sync_api import expect

    rdzv_dashboard, _ = servers
    # Sign-in from the variables alone.
    served = rdzv_dashboard("--endpoint", etcd_server.get_endpoint(), "--run-id", live_run,
                            env=clean_env(RDZV_BASIC_AUTH=str(password_file), RDZV_COOKIE_SECRET="cookie-secret-x"))
    assert "Sign-in: the password file" in served.output()

    with pytest.raises(urllib.error.HTTPError) as unsigned:  # no cookie: no page, no websocket
        urllib.request.build_opener(NoRedirect).open(served.url, timeout=10)
    assert unsigned.value.code == 302 and "/login" in unsigned.value.headers["Location"]

    sign_in(page, served.url, "bob", "not-his-password")
    expect(page.locator(".errormessage")).to_have_text("Invalid username or password!", timeout=WAIT_MS)
    assert "/login" in page.url
    page.goto(served.url)
    expect(page.locator("input[name=password]")).to_be_visible(timeout=WAIT_MS)  # back at the form
    assert page.locator(".rdzv-banner").count() == 0

    sign_in(page, served.url, "bob", PASSWORDS["bob"])
    expect_run_shown(page, live_run)
    expect(page.locator("[data-role=signed-in]")).to_contain_text("Signed in as bob", timeout=WAIT_MS)
    # Panel's cookie, signed with RDZV_COOKIE_SECRET.
    from tornado.web import decode_signed_value

    [cookie] = [c for c in page.context.cookies() if c["name"] == "user"]
    assert decode_signed_value("cookie-secret-x", "user", cookie["value"]) == b"bob" and cookie["httpOnly"]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_a_signed_in_reader_sees_the_run_but_no_close_action(etcd_server, live_run, password_file, servers, page,
                                                             tmp_path):
    from playwright.sync_api import expect

    rdzv_dashboard, _ = servers
    audit = tmp_path / "audit.log"
    served = rdzv_dashboard("--endpoint", etcd_server.get_endpoint(), "--run-id", live_run,
                            env=clean_env(RDZV_BASIC_AUTH=str(password_file), RDZV_WRITERS="alice",
                                          RDZV_AUDIT_LOG=str(audit)))
    assert "writers: alice" in served.output() and str(audit) in served.output()
    sign_in(page, served.url, "bob", PASSWORDS["bob"])
    expect_run_shown(page, live_run)
    expect(page.locator("[data-role=access]")).to_have_text("read-only", timeout=WAIT_MS)
    assert page.get_by_role("button", name="Close run…").count() == 0
    assert page.get_by_role("button", name="Yes, close it").count() == 0
    assert audit.read_text() == ""  # checked writable at start, nothing written


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_a_writer_closes_a_run_after_confirming_and_the_audit_log_has_the_line(etcd_server, live_run, password_file,
                                                                                servers, page, tmp_path):
    from playwright.sync_api import expect

    from rdzv.state import decode_state_b64

    rdzv_dashboard, _ = servers
    audit = tmp_path / "audit.log"
    served = rdzv_dashboard("--endpoint", etcd_server.get_endpoint(), "--run-id", live_run,
                            "--basic-auth", str(password_file), "--writers", "alice", "--audit-log", str(audit))
    sign_in(page, served.url, "alice", PASSWORDS["alice"])
    expect_run_shown(page, live_run)
    expect(page.locator("[data-role=access]")).to_have_text("may close runs", timeout=WAIT_MS)

    key = f"/torch/elastic/rendezvous/{live_run}"
    with etcd_server.kv(api="v2") as kv:
        page.get_by_role("button", name="Close run…").click(timeout=WAIT_MS)
        confirm = page.get_by_role("button", name="Yes, close it")
        expect(confirm).to_be_visible(timeout=WAIT_MS)
        assert decode_state_b64(kv.get(key).value).closed is False, "closed before the confirmation"
        assert AuditLog(audit).entries() == []
        confirm.click()
        expect(page.get_by_text(f"Run '{live_run}' is closed.", exact=True)).to_be_visible(timeout=WAIT_MS)
        state = kv.get(key)
        assert decode_state_b64(state.value).closed is True

    [entry] = AuditLog(audit).entries()
    assert (entry.user, entry.client, entry.action, entry.run_id, entry.outcome) == (
        "alice", "127.0.0.1", "close-run", live_run, "closed")
    assert entry.revision_before < entry.revision_after <= state.revision and entry.time.endswith("Z")
    shown = page.locator("[data-role=audit]")
    expect(shown).to_contain_text(f"alice from 127.0.0.1 closed run '{live_run}' (revision "
                                  f"{entry.revision_before} -> {entry.revision_after})", timeout=WAIT_MS)
    expect(shown).to_contain_text(entry.time)


@pytest.mark.browser
@pytest.mark.timeout(240)
def test_panel_serve_with_its_own_basic_auth_applies_the_writers(etcd_server, live_run, password_file, servers,
                                                                 browser, tmp_path):
    from playwright.sync_api import expect

    _, panel_serve = servers
    served = panel_serve(["--basic-auth", str(password_file), "--cookie-secret", "test-cookie-secret"],
                         ["--endpoint", etcd_server.get_endpoint(), "--run-id", live_run],
                         env=clean_env(RDZV_WRITERS="alice", RDZV_AUDIT_LOG=str(tmp_path / "audit.log")))
    for user, role, buttons in (("bob", "read-only", 0), ("alice", "may close runs", 1)):
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        try:
            tab = context.new_page()
            sign_in(tab, served.url, user, PASSWORDS[user])
            expect_run_shown(tab, live_run)
            expect(tab.locator("[data-role=access]")).to_have_text(role, timeout=WAIT_MS)
            expect(tab.get_by_role("button", name="Close run…")).to_have_count(buttons, timeout=WAIT_MS)
            if buttons:
                tab.get_by_role("button", name="Close run…").click()
                tab.get_by_role("button", name="Yes, close it").click(timeout=WAIT_MS)
                expect(tab.locator("[data-role=audit]")).to_contain_text(f"alice from 127.0.0.1 closed run "
                                                                         f"'{live_run}'", timeout=WAIT_MS)
        finally:
            context.close()
    [entry] = AuditLog(tmp_path / "audit.log").entries()
    assert (entry.user, entry.run_id, entry.outcome) == ("alice", live_run, "closed")

    # A sign-in variable panel serve cannot apply is refused on the page, not silently ignored.
    unsigned = panel_serve([], ["--endpoint", etcd_server.get_endpoint(), "--run-id", live_run],
                           env=clean_env(RDZV_BASIC_AUTH=str(password_file)))
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.goto(unsigned.url)
        expect(tab.locator("[data-role=config-error]")).to_contain_text(
            "RDZV_BASIC_AUTH is set, but panel serve applies only its own sign-in", timeout=WAIT_MS)
        assert tab.locator(".rdzv-banner").count() == 0
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_the_page_over_https_with_a_self_signed_certificate(etcd_server, live_run, servers, browser, tmp_path):
    from playwright.sync_api import expect
    from tls_certs import make_certificates

    certs = make_certificates(tmp_path / "certs")
    rdzv_dashboard, _ = servers
    served = rdzv_dashboard("--endpoint", etcd_server.get_endpoint(), "--run-id", live_run,
                            env=clean_env(RDZV_SSL_CERTFILE=str(certs.server_cert),
                                          RDZV_SSL_KEYFILE=str(certs.server_key)), scheme="https")
    assert served.url.startswith("https://")
    trusted = ssl.create_default_context(cafile=str(certs.ca_cert))
    with urllib.request.urlopen(served.url, context=trusted, timeout=30) as answer:
        assert answer.status == 200
    with pytest.raises(urllib.error.URLError):  # the default trust store does not know the test CA
        urllib.request.urlopen(served.url, timeout=30)
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(served.url.replace("https://", "http://"), timeout=30)

    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 1000})
    try:
        tab = context.new_page()
        tab.goto(served.url)
        expect_run_shown(tab, live_run)  # the live updates arrive over wss://
        expect(tab.locator(".rdzv-banner")).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    finally:
        context.close()


def test_a_websocket_from_another_origin_is_refused(etcd_server, servers):
    import websocket

    rdzv_dashboard, _ = servers
    port = free_port()
    served = rdzv_dashboard("--endpoint", etcd_server.get_endpoint(), port=port,
                            env=clean_env(RDZV_ALLOW_WEBSOCKET_ORIGIN=f"friend.example:{port}"))
    assert f"websocket origins: 127.0.0.1:{port}, localhost:{port}, friend.example:{port}." in served.output()
    with urllib.request.urlopen(served.url, timeout=60) as answer:
        token = re.search(r'"token":\s*"([^"]+)"', answer.read().decode()).group(1)
    ws_url = f"ws://127.0.0.1:{served.port}/dashboard/ws"

    for foreign in (f"http://evil.example:{port}", "http://evil.example", f"http://0.0.0.0:{port}",
                    f"http://friend.example:{port + 1}", "null"):
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(ws_url, origin=foreign, subprotocols=["bokeh", token], timeout=30)
        assert refused.value.status_code == 403, foreign
    # The same request from the served address's own origin, or one named with
    # RDZV_ALLOW_WEBSOCKET_ORIGIN, is accepted: the origin alone decided.
    for own in (f"http://127.0.0.1:{served.port}", f"http://friend.example:{served.port}"):
        accepted = websocket.create_connection(ws_url, origin=own, subprotocols=["bokeh", token], timeout=30)
        try:
            assert accepted.getstatus() == 101 and accepted.getsubprotocol() == "bokeh"
        finally:
            accepted.close()
