"""The web console in a real browser: Debian's Chromium driven by Playwright against a live stack of our
own (Redis, the simulator over HTTP, one worker per provider, the API).

The tests run in file order on one stack and one browser: logging in and seeing both providers healthy,
refusals counted, a batch's progress bar reaching 100% and its results downloaded, a log entry opened with
the email of its prompt masked and a `<script>` model name shown as text, a user token kept to its
tenant (the server refusing it the rest), expired and forged tokens sent back to the login page with the
reason, and last one provider made to fail until its breaker opens and its error line rises. Every wait
is Playwright's `expect` (it polls the page until a deadline). Screenshots of each page go to
tests/artifacts/console/ (gitignored).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from devstack.procs import wait_until
from devstack.stack import Stack
from tests.integration.conftest import Upstream, dump_logs, start_stack

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
expect = sync_api.expect

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
REFRESH_S = 2.0  # the console's refresh period (console.js REFRESH_MS)
# a page update is seen within one refresh period, plus the answer's own time and the browser's
WITHIN_REFRESH_MS = int((2 * REFRESH_S + 1) * 1000)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EMAIL = "jane.doe@example.com"
SCRIPT_MODEL = "<script>window.pwned=1</script>"


def _chromium() -> Path:
    """Debian's Chromium, installed once if missing; the tests skip only when it cannot be."""
    if not CHROMIUM.exists() and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, timeout=600, check=False)
    if not CHROMIUM.exists():
        pytest.skip("no browser: /usr/bin/chromium is missing and `apt-get install -y chromium` did not install it")
    return CHROMIUM


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    s = start_stack(
        {"openai": [{}], "anthropic": [{}]},
        # a failing provider's breaker opens after 3 failures in a row and stays open past the test
        BREAKER_FAILURE_THRESHOLD="3",
        BREAKER_COOLDOWN_S="120",
        RETRY_MAX_ATTEMPTS="1",
    )
    try:
        yield s
    except BaseException:
        dump_logs(s)
        raise
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = _chromium()
    with tempfile.TemporaryDirectory(prefix="console-chromium-") as profile, sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(executable),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 800},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    p = browser.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("dialog", lambda dialog: errors.append(f"unexpected dialog: {dialog.message}"))
    try:
        yield p
    finally:
        p.close()
    assert not errors, errors  # no script error, and no alert() from injected markup


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def log_in(page: Any, stack: Stack, token: str, view: str = "overview") -> None:
    page.goto(f"{stack.api_url}/console#{view}")
    page.get_by_label("Gateway token").fill(token)
    page.get_by_role("button", name="Open the console").click()


def chat(stack: Stack, token: str, content: str, **extra: Any) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": 16, **extra}
    return httpx.post(
        f"{stack.api_url}/api/v1/llm/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def admin(stack: Stack) -> str:
    return stack.token("admin", "operator")


def test_login_shows_both_providers_healthy(stack: Stack, page: Any) -> None:
    for provider in ("openai", "anthropic"):
        assert chat(stack, admin(stack), "hello", provider=provider).status_code == 200
    log_in(page, stack, admin(stack))
    for provider in ("openai", "anthropic"):
        card = page.locator(f'article[data-provider="{provider}"]')
        expect(card).to_have_attribute("data-status", "healthy")
        expect(card).to_have_attribute("data-breaker", "closed")
        expect(card).to_contain_text("Live workers1")
    expect(page.locator('.gauge[data-scope="global"][data-unit="tokens"] meter')).to_have_count(1)
    expect(page.locator("#overview-traffic .summary")).to_contain_text("requests openai")
    # the page's own headers: no inline script, no other origin
    csp = httpx.get(f"{stack.api_url}/console").headers["content-security-policy"]
    assert csp.startswith("default-src 'self'") and "unsafe-inline" not in csp
    shot(page, "overview")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    shot(page, "overview-phone")
    page.set_viewport_size({"width": 1280, "height": 800})
    page.emulate_media(color_scheme="dark")  # the browser's dark mode: the page follows it
    background = "() => getComputedStyle(document.body).backgroundColor"
    page.wait_for_function(f"() => ({background})() === 'rgb(21, 23, 27)'")
    shot(page, "overview-dark")
    page.emulate_media(color_scheme="light")
    page.goto(f"{stack.api_url}/console#charts")
    expect(page.locator("#c-latency .uplot")).to_have_count(1)
    expect(page.locator("#c-cost-tenant figcaption")).to_have_text("Cost per minute by tenant (USD)")
    shot(page, "charts")
    page.goto(f"{stack.api_url}/console#alerts")
    expect(page.locator("#alerts-open")).not_to_be_empty()
    shot(page, "alerts")


def test_refusals_in_the_api_are_counted(stack: Stack, page: Any) -> None:
    token = stack.token("user", "refused-tenant")
    bad = httpx.post(
        f"{stack.api_url}/api/v1/llm/chat/completions",
        json={"messages": "not a list"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert bad.status_code == 422
    assert httpx.get(f"{stack.api_url}/api/v1/llm/console/session").status_code == 401

    def refused() -> dict[str, float]:
        overview = httpx.get(
            f"{stack.api_url}/api/v1/llm/console/overview", headers={"Authorization": f"Bearer {admin(stack)}"}
        )
        return dict(overview.json()["data"]["refusedPerMin"])

    # both are counted by the next flush of the process's counts (each second): not always the same one
    wait_until(
        lambda: refused().get("invalid_request_error", 0) >= 1 and refused().get("authentication_error", 0) >= 1,
        10,
        "both refusals counted",
    )
    log_in(page, stack, admin(stack))
    expect(page.locator("#refused")).to_contain_text("invalid_request_error")


def test_batch_progress_reaches_100_and_downloads(stack: Stack, page: Any) -> None:
    token = stack.token("user", "batch-tenant")
    items = [{"customId": f"item-{i}", "messages": [{"role": "user", "content": f"n {i}"}]} for i in range(12)]
    created = httpx.post(
        f"{stack.api_url}/api/v1/llm/batches",
        content=json.dumps(items),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    batch_id = created.json()["data"]["id"]
    log_in(page, stack, token, "batches")
    card = page.locator(f'article[data-batch="{batch_id}"]')
    expect(card.locator("progress")).to_have_attribute("value", "100", timeout=30_000)
    expect(card.locator(".share")).to_have_text("100% (12 of 12)")
    expect(card).to_have_attribute("data-status", "completed")
    shot(page, "batches")
    with page.expect_download() as download:
        card.get_by_role("button", name="Download results").click()
    lines = Path(download.value.path()).read_text().splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == sorted(i["customId"] for i in items)


def test_log_entry_is_masked_and_markup_is_text(stack: Stack, page: Any) -> None:
    answered = chat(stack, admin(stack), f"Please write to {EMAIL} today", provider="openai", model=SCRIPT_MODEL)
    assert answered.status_code == 200, answered.text
    log_in(page, stack, admin(stack), "logs")
    page.get_by_label("Type").select_option("request")
    page.get_by_label("Model").fill(SCRIPT_MODEL)
    page.get_by_role("button", name="Apply").click()
    entry = page.locator("#logs details").first
    expect(entry.locator(".model")).to_have_text(SCRIPT_MODEL)  # the name as text, not as markup
    entry.locator("summary").click()
    body = entry.locator("pre")
    expect(body).to_contain_text("Please write to [EMAIL] today")
    expect(body).not_to_contain_text(EMAIL)
    assert page.evaluate("() => window.pwned") is None
    assert page.locator("main script").count() == 0
    shot(page, "logs")


def test_a_user_token_sees_only_its_tenant(stack: Stack, page: Any) -> None:
    other = stack.token("user", "tenant-other")
    mine = stack.token("user", "tenant-mine")
    assert chat(stack, other, f"other tenant's secret {EMAIL}").status_code == 200
    assert chat(stack, mine, "my own request").status_code == 200
    log_in(page, stack, mine)
    expect(page.locator("#who")).to_have_text("tenant-mine (tenant tenant-mine)")
    expect(page.locator('a[data-nav="admin"]')).to_be_hidden()
    expect(page.locator('.gauge[data-scope="tenant:tenant-mine"]')).to_have_count(2)
    shot(page, "overview-user")
    page.goto(f"{stack.api_url}/console#logs")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#logs details").first).to_be_visible()
    tenants = {t.removeprefix("tenant ") for t in page.locator("#logs details summary .muted").all_inner_texts()}
    assert tenants == {"tenant-mine"}
    page.goto(f"{stack.api_url}/console#admin")
    expect(page.locator("#admin-refused")).to_be_visible()
    expect(page.get_by_role("button", name="Clear the response cache")).to_be_hidden()
    # the server refuses what the page hides
    headers = {"Authorization": f"Bearer {mine}"}
    api = f"{stack.api_url}/api/v1/llm"
    assert httpx.post(f"{api}/cache/clear", headers=headers).status_code == 403
    assert httpx.post(f"{api}/test", headers=headers, json={}).status_code == 403
    assert httpx.get(f"{api}/console/overview", params={"tenant": "tenant-other"}, headers=headers).status_code == 403
    assert httpx.get(f"{api}/console/logs", params={"tenant": "tenant-other"}, headers=headers).status_code == 403
    series = httpx.get(f"{api}/console/series", headers=headers).json()["data"]
    assert set(series["costByTenant"]) == {"tenant-mine"}
    logs = httpx.get(f"{api}/console/logs", headers=headers).json()["data"]["logs"]
    assert logs and {e["tenant"] for e in logs} == {"tenant-mine"}


def test_an_admin_action_asks_first(stack: Stack, page: Any) -> None:
    log_in(page, stack, admin(stack), "admin")
    page.get_by_role("button", name="Clear the response cache").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#admin-result")).to_have_text("")
    page.get_by_role("button", name="Clear the response cache").click()
    page.get_by_role("button", name="Confirm").click()
    expect(page.locator("#admin-result")).to_contain_text('"cleared"')
    shot(page, "admin")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("expired", "expired"), ("forged", "signature")],
)
def test_a_bad_token_lands_on_the_login_page_with_the_reason(stack: Stack, page: Any, kind: str, reason: str) -> None:
    if kind == "expired":
        token = stack.token("admin", "operator", ttl_s=-60)
    else:
        token = jwt.encode({"sub": "operator", "role": "admin", "exp": 2**31}, "x" * 64, algorithm="HS256")
    log_in(page, stack, token)
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#login-reason")).to_contain_text(reason, ignore_case=True)
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("() => sessionStorage.length") == 0
    shot(page, f"login-{kind}")


def test_a_failing_provider_opens_its_breaker_on_the_page(stack: Stack, page: Any) -> None:
    up = Upstream(stack)
    log_in(page, stack, admin(stack))
    card = page.locator('article[data-provider="openai"]')
    expect(card).to_have_attribute("data-breaker", "closed")
    summary = page.locator("#overview-traffic .summary")
    expect(summary).to_contain_text("errors openai")
    before = json.loads(summary.get_attribute("data-totals") or "{}").get("errors openai", 0)
    up.fault("openai", mode="status", status=500)
    try:
        for _ in range(4):
            chat(stack, admin(stack), "hello", provider="openai")  # fails over to anthropic
        health = httpx.get(
            f"{stack.api_url}/api/v1/llm/health", headers={"Authorization": f"Bearer {admin(stack)}"}
        ).json()["data"]
        assert health["providers"]["openai"]["breaker"]["state"] == "open"
        # seen by the page within its refresh period
        expect(card).to_have_attribute("data-breaker", "open", timeout=WITHIN_REFRESH_MS)
        expect(card).to_have_attribute("data-status", "unhealthy", timeout=WITHIN_REFRESH_MS)
        expect(card).to_contain_text("half-open probe in")
        page.wait_for_function(
            "([before]) => JSON.parse(document.querySelector('#overview-traffic .summary').dataset.totals)"
            "['errors openai'] >= before + 3",
            arg=[before],
            timeout=WITHIN_REFRESH_MS,
        )
        expect(page.locator('article[data-provider="anthropic"]')).to_have_attribute("data-breaker", "closed")
        shot(page, "overview-breaker-open")
    finally:
        up.release()
