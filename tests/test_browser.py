"""The catalog in a real browser: Playwright driving Debian's Chromium, with every request that
is not to 127.0.0.1 aborted and recorded (none may be attempted: the catalog must work in a
closed network). A failing test leaves a screenshot in test-artifacts/ (or
$PROMPTAPI_TEST_ARTIFACTS); the tests also save screenshots of the pages they visit there.

Needs `/usr/bin/chromium` (Debian package `chromium`; $PROMPTAPI_CHROMIUM points elsewhere)
and the `playwright` package. Without them the tests are skipped, or fail under CI=true.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import REQUIRE_SERVICES, Server
from tests.fakes import FakeOpenAI

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("PROMPTAPI_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(
    os.environ.get("PROMPTAPI_TEST_ARTIFACTS", Path(__file__).parent.parent / "test-artifacts")
)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 10_000

ORDER: dict[str, Any] = {
    "name": "order",
    "description": "Summarises a customer's order in one line.",
    "tags": ["shop"],
    "input_schema": {
        "type": "object",
        "properties": {
            "customer": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 100},
                    "email": {"type": "string", "format": "email"},
                },
                "required": ["name"],
                "additionalProperties": False,
            },
            "items": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$", "maxLength": 20},
                        "qty": {"type": "integer", "minimum": 1},
                    },
                    "required": ["sku", "qty"],
                    "additionalProperties": False,
                },
            },
            "priority": {"enum": ["low", "normal", "high"]},
            "gift": {"type": "boolean"},
            "note": {"type": "string", "maxLength": 2000},
        },
        "required": ["customer", "items"],
        "additionalProperties": False,
    },
    "output_schema": {
        "type": "object",
        "properties": {"summary": {"type": "string"}, "total_items": {"type": "integer"}},
        "required": ["summary", "total_items"],
    },
    "messages": [
        {
            "role": "user",
            "content": (
                "{{ customer.name }} ordered {% for i in items %}{{ i.qty }}x{{ i.sku }} "
                "{% endfor %}priority={{ priority | default('none') }} "
                "gift={{ gift | default('unset') }}"
            ),
        }
    ],
    "examples": [
        {
            "input": {"customer": {"name": "Ada"}, "items": [{"sku": "ABC-1", "qty": 2}]},
            "output": {"summary": "Ada ordered 2 items", "total_items": 2},
        }
    ],
}
ANSWER = {"summary": "Grace ordered 5 items", "total_items": 5}


def _launch_problem() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PROMPTAPI_CHROMIUM)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = _launch_problem()
    if problem is not None:
        if REQUIRE_SERVICES:
            pytest.fail(f"browser tests cannot run: {problem} (CI forbids skipping)")
        pytest.skip(f"browser tests skipped: {problem}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The pages read only the in-memory registry; one database is enough."""
    return f"sqlite:///{tmp_path / 'promptapi.db'}"


@pytest.fixture
def site(make_server: Callable[..., Server], fake: FakeOpenAI) -> Server:
    server = make_server()
    for definition in (ORDER, _named("greeting", "Writes a friendly greeting.")):
        response = server.admin.post("/admin/v1/prompts", json=definition)
        assert response.status_code == 201, response.text
    fake.default.content = json.dumps(ANSWER)
    fake.default.usage = (42, 9)
    return server


def _named(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "model": "mock",
        "input_schema": {
            "type": "object",
            "properties": {"who": {"type": "string", "maxLength": 50}},
            "required": ["who"],
            "additionalProperties": False,
        },
        "messages": [{"role": "user", "content": "Greet {{ who }}."}],
        "examples": [{"input": {"who": "Ada"}, "output": "Hello, Ada!"}],
    }


class Watch:
    """What a page did: requests that tried to leave 127.0.0.1, requests that carried a key
    to something other than the API, and script errors (CSP violations included)."""

    def __init__(self) -> None:
        self.outside: list[str] = []
        self.leaked_key: list[str] = []
        self.errors: list[str] = []


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    watch = Watch()

    def gate(route: Any) -> None:
        req = route.request
        url = urlsplit(req.url)
        if url.hostname != "127.0.0.1":
            watch.outside.append(req.url)
            route.abort()
            return
        if "authorization" in req.headers and not url.path.startswith("/v1/"):
            watch.leaked_key.append(req.url)
        route.continue_()

    context.route("**/*", gate)
    tab = context.new_page()
    tab.on("pageerror", lambda error: watch.errors.append(str(error)))
    tab.on(
        "console",
        lambda message: watch.errors.append(message.text) if message.type == "error" else None,
    )
    tab.watch = watch
    yield tab
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        tab.screenshot(path=str(ARTIFACTS / f"failed-{request.node.name}.png"), full_page=True)
    context.close()
    assert watch.outside == [], f"requests to the outside were attempted: {watch.outside}"
    assert watch.leaked_key == [], f"the key went to a non-API URL: {watch.leaked_key}"
    # A refused request (401, 422) is logged by Chromium as a console error; anything else is not
    # expected.
    unexpected = [e for e in watch.errors if "the server responded with a status of" not in e]
    assert unexpected == [], unexpected


def shoot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def key_for(server: Server) -> str:
    response = server.admin.post("/admin/v1/keys", json={"name": "browser"})
    assert response.status_code == 201
    return response.json()["key"]


def visible_titles(page: Any) -> list[str]:
    return page.locator("li.card:visible .card-title").all_inner_texts()


def test_catalog_search_filter_and_open_a_prompt(site: Server, page: Any) -> None:
    page.goto(site.url + "/")
    assert visible_titles(page) == ["greeting", "order"]
    shoot(page, "catalog")
    search = page.get_by_label("Search")
    search.fill("ORDER")  # instant, case-insensitive
    assert visible_titles(page) == ["order"]
    assert page.locator("#count").inner_text() == "1 of 2 prompt APIs match"
    assert page.url.endswith("/?q=ORDER")
    search.fill("nothing like this")
    assert visible_titles(page) == []
    assert page.locator("#no-match").is_visible()
    search.fill("")
    page.get_by_label("Model", exact=True).select_option("mock")
    assert visible_titles(page) == ["greeting"]
    page.get_by_label("Tag", exact=True).select_option("shop")
    assert visible_titles(page) == []
    # The filtered URL reloads to the same result, rendered by the server.
    page.reload()
    assert page.url.endswith("/?tag=shop&model=mock")
    assert visible_titles(page) == []
    page.goto(site.url + "/?q=order")
    assert visible_titles(page) == ["order"]
    # Keyboard: tab to the card's link and open it.
    page.locator("li.card:visible a").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**/prompts/order")
    assert page.locator("h1").inner_text() == "order"
    assert page.locator("#input table").is_visible()
    shoot(page, "prompt")


def test_try_it_form_calls_the_api_and_shows_the_answer(
    site: Server, page: Any, fake: FakeOpenAI
) -> None:
    page.goto(site.url + "/prompts/order")
    key = key_for(site)
    page.get_by_label("API key").fill(key)
    page.get_by_label("name").fill("Grace")
    page.get_by_label("email").fill("grace@example.com")
    # minItems 1: one item is there already; add a second.
    page.locator("#tryit [data-key=items] .pa-item").nth(0).get_by_label("sku").fill("ABC-1")
    page.locator("#tryit [data-key=items] .pa-item").nth(0).get_by_label("qty").fill("2")
    page.get_by_role("button", name="Add item to items").click()
    second = page.locator("#tryit [data-key=items] .pa-item").nth(1)
    second.get_by_label("sku").fill("XYZ-9")
    second.get_by_label("qty").fill("3")
    page.get_by_label("priority").select_option("high")
    page.get_by_label("gift").check()
    page.get_by_role("button", name="Send request").click()
    page.locator("#result.ok").wait_for()
    shoot(page, "try-it-answer")
    assert json.loads(page.locator("#result-output").inner_text()) == ANSWER
    usage = page.locator("#result-usage").inner_text()
    assert re.search(r"Input tokens\s+42", usage, re.I), usage
    assert re.search(r"Output tokens\s+9", usage, re.I), usage
    assert re.search(r"Latency\s+[\d.]+ ms", usage, re.I), usage
    assert re.search(r"Round trip\s+\d+ ms", usage, re.I), usage
    # The form built exactly this body (the template rendered every field).
    sent = fake.requests[-1]["body"]["messages"][-1]["content"]
    assert sent == "Grace ordered 2xABC-1 3xXYZ-9 priority=high gift=True"
    # The key stays in this tab's session storage, nowhere else.
    assert page.evaluate("sessionStorage.getItem('promptapi.key')") == key
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []
    page.reload()
    assert page.get_by_label("API key").input_value() == key
    page.get_by_role("button", name="Forget key").click()
    assert page.evaluate("sessionStorage.getItem('promptapi.key')") is None


def test_bad_input_shows_each_error_at_its_field(site: Server, page: Any) -> None:
    page.goto(site.url + "/prompts/order")
    page.get_by_label("API key").fill(key_for(site))
    item = page.locator("#tryit [data-key=items] .pa-item").nth(0)
    item.get_by_label("sku").fill("bad sku")
    item.get_by_label("qty").fill("0")
    page.get_by_role("button", name="Send request").click()
    page.locator("#result.bad").wait_for()
    shoot(page, "try-it-errors")
    assert (
        page.locator("#result-title").inner_text()
        == "Input does not match the prompt's input schema"
    )
    assert "3 problems" in page.locator("#result-detail").inner_text()
    listed = page.locator("#result-errors li").all_inner_texts()
    assert [line.split(" ")[0] for line in listed] == [
        "/customer/name",
        "/items/0/qty",
        "/items/0/sku",
    ]

    def error_at(scope: Any) -> str:
        box = scope.locator(".pa-error").first
        assert box.is_visible()
        return box.inner_text()

    name = page.locator("#tryit [data-key=customer] [data-key=name]")
    assert "'name' is required" in error_at(name)
    assert name.locator("input").get_attribute("aria-invalid") == "true"
    assert "less than the minimum of 1" in error_at(item.locator("[data-key=qty]"))
    assert "does not match" in error_at(item.locator("[data-key=sku]"))
    # Focus went to the first offending field, and the errors are described by it.
    assert page.evaluate("document.activeElement.closest('[data-key]').dataset.key") == "name"
    described = name.locator("input").get_attribute("aria-describedby")
    assert name.locator(".pa-error").get_attribute("id") in described.split()
    # Fixing the input clears the errors.
    name.locator("input").fill("Grace")
    item.get_by_label("sku").fill("ABC-1")
    item.get_by_label("qty").fill("1")
    page.get_by_role("button", name="Send request").click()
    page.locator("#result.ok").wait_for()
    assert page.locator("#tryit .pa-error:visible").count() == 0
    assert page.locator("#tryit [aria-invalid]").count() == 0


def test_missing_key_shows_the_problem(site: Server, page: Any) -> None:
    page.goto(site.url + "/prompts/greeting")
    page.get_by_role("button", name="Fill with the example").click()
    assert page.get_by_label("who").input_value() == "Ada"
    page.get_by_role("button", name="Send request").click()
    page.locator("#result.bad").wait_for()
    assert page.locator("#result-title").inner_text() == "Missing or invalid credential"
    assert "needs an API key" in page.locator("#result-detail").inner_text()


def test_raw_json_mode(site: Server, page: Any, fake: FakeOpenAI) -> None:
    page.goto(site.url + "/prompts/order")
    page.get_by_label("API key").fill(key_for(site))
    page.get_by_label("name").fill("Grace")
    page.get_by_label("Raw JSON").check()
    raw = page.get_by_label("Request body (JSON)")
    # The form's value carries over.
    assert json.loads(raw.input_value()) == {
        "customer": {"name": "Grace"},
        "items": [{}],
        "gift": False,
    }
    raw.fill("{not json")
    page.get_by_role("button", name="Send request").click()
    assert "Not valid JSON" in page.locator("#raw-json-error").inner_text()
    assert page.locator("#result.ok, #result.bad").count() == 0
    raw.fill(
        json.dumps({"customer": {"name": "Lin"}, "items": [{"sku": "ABC-7", "qty": 1}], "x": 1})
    )
    page.get_by_role("button", name="Send request").click()
    page.locator("#result.bad").wait_for()
    assert page.locator("#result-errors li").all_inner_texts() == ["/x unexpected property 'x'"]
    body = {
        "customer": {"name": "Lin"},
        "items": [{"sku": "ABC-7", "qty": 4}],
        "note": "ring twice",
    }
    raw.fill(json.dumps(body))
    page.get_by_role("button", name="Send request").click()
    page.locator("#result.ok").wait_for()
    assert fake.requests[-1]["body"]["messages"][-1]["content"].startswith("Lin ordered 4xABC-7")
    # Back to the form: it shows what the JSON said.
    page.get_by_label("Form").check()
    assert page.get_by_label("name").input_value() == "Lin"
    assert page.get_by_label("note").input_value() == "ring twice"
    assert page.locator("#tryit [data-key=items] .pa-item").count() == 1
    assert page.locator("#tryit [data-key=items] .pa-item").get_by_label("qty").input_value() == "4"
    # Remove the item with the keyboard-reachable button; the form keeps its structure.
    page.get_by_role("button", name=re.compile("^Remove")).click()
    assert page.locator("#tryit [data-key=items] .pa-item").count() == 0


def test_javascript_snippet_works_in_the_browser(site: Server, page: Any) -> None:
    page.goto(site.url + "/prompts/greeting")
    page.get_by_role("tab", name="JavaScript (fetch)").click()
    code = page.locator("#snippet-javascript-code")
    assert code.is_visible()
    assert not page.locator("#snippet-curl-code").is_visible()
    # Arrow keys move between tabs.
    page.get_by_role("tab", name="JavaScript (fetch)").press("ArrowLeft")
    assert page.locator("#snippet-python-code").is_visible()
    snippet = code.text_content()
    key = key_for(site)
    result = page.evaluate(
        """async ([snippet, key]) => {
            const logged = [];
            const process = {env: {PROMPTAPI_KEY: key}};
            const console = {log: (...args) => logged.push(args)};
            await new Function("process", "console", `return (async () => { ${snippet} })()`)(
                process, console);
            return logged;
        }""",
        [snippet, key],
    )
    assert result[0][0] == "Hello, Ada!"
    assert result[0][1]["input_tokens"] >= 0
    # The copy button puts the snippet on the clipboard.
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("tab", name="JavaScript (fetch)").click()
    page.get_by_role("button", name="Copy JavaScript (fetch) code").click()
    assert page.evaluate("navigator.clipboard.readText()") == snippet


def test_try_it_works_from_the_keyboard(site: Server, page: Any) -> None:
    page.goto(site.url + "/prompts/greeting")
    page.get_by_label("API key").focus()
    page.keyboard.type(key_for(site))
    page.keyboard.press("Tab")  # Forget key
    page.keyboard.press("Tab")  # the mode radios
    page.keyboard.press("Tab")  # Fill with the example
    page.keyboard.press("Enter")
    page.keyboard.press("Tab")  # who
    assert page.evaluate("document.activeElement.id") == page.get_by_label("who").get_attribute(
        "id"
    )
    page.keyboard.press("Enter")  # submits the form
    page.locator("#result.ok").wait_for()
    assert page.locator("#result-output").inner_text() == "Hello, Ada!"


def test_pages_fit_a_phone_screen(site: Server, page: Any) -> None:
    page.set_viewport_size({"width": 375, "height": 740})
    for path, name in (("/", "catalog-phone"), ("/prompts/order", "prompt-phone")):
        page.goto(site.url + path)
        shoot(page, name)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px"


def test_unknown_prompt_page(site: Server, page: Any) -> None:
    response = page.goto(site.url + "/prompts/missing")
    assert response.status == 404
    assert page.locator("h1").inner_text() == "Not found"
    page.get_by_role("link", name="Back to the catalog").click()
    page.wait_for_url(site.url + "/")


def test_every_control_round_trips_between_form_and_json(
    make_server: Callable[..., Server], page: Any
) -> None:
    """A value using every field of a tricky schema goes JSON -> form -> JSON unchanged, and
    the form's body is accepted by the server."""
    from tests.test_catalog import TRICKY

    server = make_server()
    assert server.admin.post("/admin/v1/prompts", json=TRICKY).status_code == 201
    value = {
        "title": "Hi",
        "body": "A long body\nover two lines.",
        "email": "a@example.com",
        "urgent": True,
        "count": 3,
        "ratio": 0.5,
        "tone": "casual",
        "ship_to": {"city": "Paris", "country": "FR"},
        "lines": [{"sku": "ABC-1", "qty": 2}, {"sku": "XYZ-2", "qty": 1}],
        "langs": ["FR", "JP"],
        "contact": {"phone": "123"},
        "tree": {"label": "root", "child": {"label": "leaf"}},
        "extra": {"k": "v"},
    }
    page.goto(server.url + "/prompts/tricky")
    page.get_by_label("API key").fill(key_for(server))
    page.get_by_label("Raw JSON").check()
    page.get_by_label("Request body (JSON)").fill(json.dumps(value))
    page.get_by_label("Form", exact=True).check()
    assert page.locator("#tryit [data-key=lines] .pa-item").count() == 2
    langs = page.locator("#tryit [data-key=langs]")
    assert langs.get_by_label("JP").is_checked() and not langs.get_by_label("DE").is_checked()
    assert page.get_by_label("urgent").is_checked()
    assert page.locator("#tryit [data-key=tone] select").input_value() == '"casual"'
    shoot(page, "try-it-tricky")
    page.get_by_label("Raw JSON").check()
    assert json.loads(page.get_by_label("Request body (JSON)").input_value()) == value
    page.get_by_label("Form", exact=True).check()
    page.get_by_role("button", name="Send request").click()
    page.locator("#result.ok").wait_for()
    assert json.loads(page.locator("#result-output").inner_text()) == {"answer": "ok"}
    # A JSON box with bad JSON is caught before anything is sent.
    page.locator("#tryit [data-key=extra] textarea").fill("{oops")
    page.get_by_role("button", name="Send request").click()
    error = page.locator("#tryit [data-key=extra] .pa-error")
    assert "not valid JSON" in error.inner_text()


def test_api_docs_load_with_the_network_cut_off(site: Server, page: Any) -> None:
    """/docs (interactive API docs, built by another part of promptapi) renders every prompt's
    operation from assets served by promptapi itself."""
    if "/docs" not in {getattr(r, "path", None) for r in site.app.routes}:
        pytest.skip("this build has no /docs page")
    page.goto(site.url + "/docs")
    page.locator(".opblock").first.wait_for()
    shoot(page, "docs")
    operations = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/v1/prompts/order" in op for op in operations), operations
    assert any("/v1/prompts/greeting" in op for op in operations), operations
    # The catalog links to it.
    page.goto(site.url + "/")
    page.get_by_role("link", name="API reference").click()
    page.wait_for_url(site.url + "/docs")


def _line_boxes(page: Any, selector: str) -> list[dict[str, Any]]:
    """Per element: its text and the boxes of the lines it is laid out in."""
    return page.eval_on_selector_all(
        selector,
        """els => els.filter(e => e.offsetParent !== null).map(e => {
            const range = document.createRange();
            range.selectNodeContents(e);
            const rects = [...range.getClientRects()].filter(r => r.width > 0);
            const tops = new Set(rects.map(r => Math.round(r.top)));
            return {text: e.textContent, lines: tops.size,
                    rects: rects.map(r => ({x: r.left, y: r.top, w: r.width, h: r.height}))};
        })""",
    )


def _overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and (a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"])
    )


def test_api_docs_read_well_on_a_phone(site: Server, page: Any) -> None:
    """At phone width an operation id is never squeezed into a column a few letters wide, and
    the cURL command shows its whole URL with the copy button over none of it."""
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(site.url + "/docs")
    page.locator(".opblock").first.wait_for()
    ids = _line_boxes(page, ".opblock-summary-operation-id")
    assert len(ids) > 10
    squeezed = [i["text"] for i in ids if i["lines"] > 1]
    assert squeezed == [], f"operation ids wrapped over several lines: {squeezed}"
    op = page.locator("#operations-prompts-call_greeting")
    op.scroll_into_view_if_needed()
    shoot(page, "docs-phone")
    op.locator(".opblock-summary").click()
    op.locator(".execute").click()
    curl = op.locator(".curl-command")
    curl.wait_for()
    curl.scroll_into_view_if_needed()
    shoot(page, "docs-phone-curl")
    code = curl.locator("code")
    text = code.inner_text()
    assert f"{site.url}/v1/prompts/greeting" in text.replace("\n", ""), text
    # The command wraps: nothing hides off to the side of its box.
    assert code.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "the cURL command scrolls"
    button = curl.locator(".copy-to-clipboard").bounding_box()
    assert button is not None
    box = {"x": button["x"], "y": button["y"], "w": button["width"], "h": button["height"]}
    (lines,) = _line_boxes(page, "#operations-prompts-call_greeting .curl-command code")
    covered = [r for r in lines["rects"] if _overlap(box, r)]
    assert covered == [], f"the copy button covers the command: {covered}"


def test_try_it_key_field_asks_for_a_consumer_key_on_a_phone(site: Server, page: Any) -> None:
    from promptapi.keys import ADMIN_TOKEN_PREFIX, KEY_PREFIX
    from tests.helpers import ENVELOPE_FIELDS

    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(site.url + "/prompts/greeting")
    placeholder = page.locator("#api-key").get_attribute("placeholder") or ""
    assert placeholder.startswith(KEY_PREFIX) and ADMIN_TOKEN_PREFIX not in placeholder
    # The note on the answer names every field of the envelope.
    note = page.locator("p", has_text="Every answer is an envelope").inner_text()
    missing = [field for field in sorted(ENVELOPE_FIELDS) if field not in note]
    assert missing == [], f"the envelope note omits {missing}"
    shoot(page, "prompt-phone-key")
