"""The catalog pages (`/`, `/prompts/{name}`) over HTTP: listing, search and filters, field
tables and form controls for tricky schemas, snippets that really work, escaping, 404 page,
security headers, and the PROMPTAPI_CATALOG setting."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from bs4 import BeautifulSoup, Tag

from promptapi.app import create_app
from promptapi.cli import main
from promptapi.config import Settings
from promptapi.errors import ConfigError
from tests.conftest import ECHO, SENTIMENT, Server
from tests.helpers import assert_problem

HOSTILE = "<script>alert('x')</script>"

# Nested objects, arrays of objects, $defs (also nested and recursive), enums, oneOf, formats,
# booleans, numbers with bounds, long and short strings, a free-form map.
TRICKY: dict[str, Any] = {
    "name": "tricky",
    "description": "A prompt whose input exercises every form control.",
    "tags": ["billing", "demo"],
    "model": "mock",
    "input_schema": {
        "type": "object",
        "$defs": {
            "address": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "maxLength": 80},
                    "country": {"$ref": "#/$defs/country"},
                },
                "required": ["city"],
                "additionalProperties": False,
            },
            "country": {"enum": ["FR", "DE", "JP"], "description": "ISO code."},
            "node": {
                "type": "object",
                "properties": {"label": {"type": "string"}, "child": {"$ref": "#/$defs/node"}},
            },
        },
        "properties": {
            "title": {"type": "string", "maxLength": 60, "description": "A short title."},
            "body": {"type": "string", "maxLength": 5000},
            "email": {"type": "string", "format": "email"},
            "urgent": {"type": "boolean", "default": False},
            "count": {"type": "integer", "minimum": 1, "maximum": 10},
            "ratio": {"type": "number", "exclusiveMaximum": 1},
            "tone": {"enum": ["formal", "casual"]},
            "ship_to": {"$ref": "#/$defs/address"},
            "lines": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]+$"},
                        "qty": {"type": "integer", "minimum": 1},
                    },
                    "required": ["sku", "qty"],
                    "additionalProperties": False,
                },
            },
            "langs": {
                "type": "array",
                "uniqueItems": True,
                "items": {"$ref": "#/$defs/country"},
            },
            "contact": {
                "oneOf": [
                    {"type": "string", "format": "email"},
                    {"type": "object", "properties": {"phone": {"type": "string"}}},
                ]
            },
            "tree": {"$ref": "#/$defs/node"},
            "extra": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "required": ["title", "lines"],
        "additionalProperties": False,
    },
    "output_schema": {
        "type": "object",
        "properties": {"answer": {"type": "string"}, "score": {"type": "number"}},
        "required": ["answer"],
    },
    "messages": [{"role": "user", "content": "{{ title }}"}],
    "examples": [
        {
            "input": {"title": 'It\'s "quoted"', "lines": [{"sku": "ABC-1", "qty": 2}]},
            "output": {"answer": "ok"},
        }
    ],
}

ROOT_ONE_OF: dict[str, Any] = {
    "name": "either",
    "description": "Input is one of two shapes.",
    "input_schema": {
        "oneOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]},
        ]
    },
    "messages": [{"role": "user", "content": "{{ input }}"}],
}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The catalog reads only the in-memory registry; one database is enough."""
    return f"sqlite:///{tmp_path / 'promptapi.db'}"


def soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "html.parser")


def visible_cards(page: BeautifulSoup) -> list[str]:
    return [
        card.select_one(".card-title").get_text(strip=True)
        for card in page.select("li.card")
        if not card.has_attr("hidden")
    ]


def register(server: Server, *definitions: dict[str, Any]) -> None:
    for definition in definitions:
        response = server.admin.post("/admin/v1/prompts", json=definition)
        assert response.status_code == 201, response.text


def assert_page(response: Any, status: int = 200) -> BeautifulSoup:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    page = soup(response.text)
    # No inline script: every executable script is a same-origin file.
    for script in page.find_all("script"):
        assert script.get("src", "").startswith("/static/catalog/") or (
            script.get("type") == "application/json"
        ), script
    for tag in page.find_all(True):
        assert not any(attr.startswith("on") for attr in tag.attrs), tag
        assert "style" not in tag.attrs, tag
    return page


@pytest.fixture
def catalog(make_server: Callable[..., Server]) -> Server:
    server = make_server()
    mocked = {**copy.deepcopy(SENTIMENT), "model": "mock", "tags": ["nlp"]}
    register(server, mocked, ECHO, TRICKY)
    return server


def test_index_lists_every_published_prompt(catalog: Server) -> None:
    page = assert_page(catalog.client.get("/"))
    assert visible_cards(page) == ["echo", "sentiment", "tricky"]
    card = next(c for c in page.select("li.card") if "tricky" in c.get_text())
    text = card.get_text(" ", strip=True)
    assert "A prompt whose input exercises every form control." in text
    assert "v1" in text and "published" in text and "mock" in text
    assert [c.get_text(strip=True) for c in card.select(".chip")] == ["#billing", "#demo"]
    assert page.select_one("#count").get_text(strip=True) == "3 prompt APIs"
    # Every form control has a label.
    for control in page.select("input, select"):
        assert page.select_one(f"label[for='{control['id']}']") is not None
    # A new version shows up at once.
    register(catalog, {**ECHO, "description": "Says the text back, louder."})
    page = soup(catalog.client.get("/").text)
    echo = next(c for c in page.select("li.card") if "echo" in c.get_text())
    assert "v2" in echo.get_text() and "louder" in echo.get_text()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"q": "sentiment"}, ["sentiment"]),
        ({"q": "SAYS"}, ["echo"]),  # case-insensitive, matches descriptions
        ({"q": "lines"}, ["tricky"]),  # matches input field names
        ({"q": "text back"}, ["echo"]),  # every term must match
        ({"q": "text nothing"}, []),
        ({"tag": "billing"}, ["tricky"]),
        ({"tag": "nlp", "q": "tricky"}, []),
        ({"model": "mock"}, ["sentiment", "tricky"]),
        ({"model": "default"}, ["echo"]),
        ({"model": "mock", "tag": "nlp"}, ["sentiment"]),
    ],
)
def test_search_and_filters_work_on_the_server(
    catalog: Server, query: dict[str, str], expected: list[str]
) -> None:
    page = assert_page(catalog.client.get("/", params=query))
    assert visible_cards(page) == expected
    assert page.select_one("#no-match").has_attr("hidden") == bool(expected)
    # The form keeps what was asked, so the search is visible and editable.
    if "q" in query:
        assert page.select_one("#q")["value"] == query["q"]
    if "tag" in query:
        assert page.select_one("#tag option[selected]")["value"] == query["tag"]
    if "model" in query:
        assert page.select_one("#model option[selected]")["value"] == query["model"]


def test_empty_catalog_says_so(make_server: Callable[..., Server]) -> None:
    server = make_server()
    page = assert_page(server.client.get("/"))
    assert "No prompts are published yet" in page.get_text()


def rows(table: Tag) -> dict[str, list[str]]:
    found = {}
    for tr in table.select("tbody tr"):
        cells = [c.get_text(" ", strip=True) for c in tr.find_all(["th", "td"])]
        found[cells[0]] = cells[1:]
    return found


def test_prompt_page_documents_a_tricky_schema(catalog: Server) -> None:
    page = assert_page(catalog.client.get("/prompts/tricky"))
    assert page.select_one("h1").get_text(strip=True) == "tricky"
    inputs = rows(page.select_one("#input table"))
    assert inputs["title"][:2] == ["string", "required"]
    assert "at most 60 characters" in inputs["title"][2]
    assert inputs["title"][3] == "A short title."
    assert inputs["count"][0] == "integer" and "≥ 1" in inputs["count"][2]
    assert "≤ 10" in inputs["count"][2]
    assert "< 1" in inputs["ratio"][2]
    assert 'one of: "formal", "casual"' in inputs["tone"][2]
    assert "format email" in inputs["email"][2]
    # $ref followed, nested object flattened with dotted paths.
    assert inputs["ship_to"][:2] == ["object", "optional"]
    assert inputs["ship_to.city"][:2] == ["string", "required"]
    assert 'one of: "FR", "DE", "JP"' in inputs["ship_to.country"][2]
    assert inputs["ship_to.country"][3] == "ISO code."
    # Arrays of objects: the item fields under `lines[]`.
    assert inputs["lines"][:2] == ["array of object", "required"]
    assert "at least 1 item" in inputs["lines"][2]
    assert inputs["lines[].sku"][:2] == ["string", "required"]
    assert 'matches "^[A-Z]{3}-[0-9]+$"' in inputs["lines[].sku"][2]
    # Arrays of an enum $ref: the item rule is on the array's row.
    assert inputs["langs"][0] == "array of string"
    assert 'each one of: "FR", "DE", "JP"' in inputs["langs"][2]
    # oneOf: each option listed.
    assert inputs["contact"][0] == "one of"
    assert inputs["contact ⟨option 1⟩"][0] == "string"
    assert inputs["contact ⟨option 2⟩.phone"][0] == "string"
    # A recursive $ref stops instead of looping.
    assert inputs["tree.label"][0] == "string"
    assert inputs["tree.child"][0] == "recursive (#/$defs/node)"
    assert not any(path.startswith("tree.child.") for path in inputs)
    outputs = rows(page.select_one("#output table"))
    assert outputs["answer"][:2] == ["string", "required"]
    assert outputs["score"][:2] == ["number", "optional"]
    # Version history, endpoint, example.
    history = rows(page.select_one("#versions table"))
    assert history["v1 current"][0] == "published"
    assert page.select_one("#endpoint").get_text() == "/v1/prompts/tricky"
    assert "ABC-1" in page.select_one("#examples").get_text()


def test_try_it_form_is_generated_from_the_input_schema(catalog: Server) -> None:
    page = assert_page(catalog.client.get("/prompts/tricky"))
    form = page.select_one("#tryit")
    assert form["data-url"] == "/v1/prompts/tricky"
    assert form["data-has-form"] == "true"

    def field(key: str, scope: Tag = form) -> Tag:
        found = scope.select_one(f".pa-field[data-key='{key}']")
        assert found is not None, key
        return found

    assert field("title")["data-kind"] == "string"
    assert field("title").select_one("input")["type"] == "text"
    assert field("body")["data-kind"] == "text"  # maxLength > 200: a text area
    assert field("body").select_one("textarea") is not None
    assert field("email").select_one("input")["type"] == "email"
    urgent = field("urgent").select_one("input")
    assert urgent["type"] == "checkbox" and not urgent.has_attr("checked")
    count = field("count").select_one("input")
    assert (count["type"], count["min"], count["max"], count["step"]) == ("number", "1", "10", "1")
    assert field("ratio").select_one("input")["step"] == "any"
    tone = [o["value"] for o in field("tone").select("option")]
    assert tone == ["", '"formal"', '"casual"']
    ship_to = field("ship_to")
    assert ship_to["data-kind"] == "object" and ship_to.select_one("legend") is not None
    assert field("city", ship_to)["data-required"] == "true"
    assert field("country", ship_to)["data-kind"] == "enum"
    lines = field("lines")
    assert lines["data-kind"] == "array"
    assert lines.select_one("fieldset")["data-min-items"] == "1"
    template = lines.select_one("template")
    assert field("sku", template)["data-kind"] == "string"
    assert field("qty", template)["data-kind"] == "integer"
    langs = field("langs")
    assert langs["data-kind"] == "enum-set"
    assert [b["value"] for b in langs.select("input[type=checkbox]")] == ['"FR"', '"DE"', '"JP"']
    assert field("contact")["data-kind"] == "json"  # oneOf: raw JSON for that field
    assert field("extra")["data-kind"] == "json"  # a free-form map
    # Every control has a label, or sits in a fieldset with a legend (checkbox groups).
    for control in form.select("input, select, textarea"):
        if control.find_parent("template") is not None or control.get("type") == "radio":
            continue
        labelled = form.select_one(f"label[for='{control['id']}']") is not None
        assert labelled or control.find_parent("label") is not None, control
    # Raw JSON mode starts with the example input.
    assert '"ABC-1"' in page.select_one("#raw-json").get_text()


def test_a_schema_the_form_cannot_express_gets_raw_json_only(
    make_server: Callable[..., Server],
) -> None:
    server = make_server()
    register(server, ROOT_ONE_OF)
    page = assert_page(server.client.get("/prompts/either"))
    assert page.select_one("#tryit")["data-has-form"] == "false"
    assert page.select_one("#form-mode") is None
    assert not page.select_one("#json-mode").has_attr("hidden")
    assert page.select_one("input[name=mode][value=form]").has_attr("disabled")
    assert rows(page.select_one("#input table"))["(body)"][0] == "one of"


def snippet(page: BeautifulSoup, language: str) -> str:
    return page.select_one(f"#snippet-{language}-code").get_text()


def test_snippets_call_the_real_url_with_the_example(catalog: Server) -> None:
    """The Python and curl snippets, run as they are shown, get a 200 from this server."""
    page = assert_page(catalog.client.get("/prompts/tricky"))
    url = f"{catalog.url}/v1/prompts/tricky"
    for language in ("curl", "python", "javascript"):
        assert url in snippet(page, language)
    key = catalog.admin.post("/admin/v1/keys", json={"name": "snippet"}).json()["key"]
    env = {**os.environ, "PROMPTAPI_KEY": key}
    ran = subprocess.run(
        [sys.executable, "-c", snippet(page, "python")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert "{'answer': 'ok'}" in ran.stdout
    if shutil.which("curl") and shutil.which("bash"):
        ran = subprocess.run(
            ["bash", "-c", snippet(page, "curl") + " -sS -o /dev/null -w '%{http_code}'"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.stdout == "200", ran.stderr


def test_unknown_prompt_is_a_404_page(catalog: Server) -> None:
    response = catalog.client.get("/prompts/nope")
    page = assert_page(response, 404)
    assert page.select_one("h1").get_text(strip=True) == "Not found"
    assert "No prompt named 'nope'" in page.get_text()
    assert page.select_one("a[href='/']") is not None
    assert response.headers["x-request-id"] in page.get_text()
    # A version that does not exist, or is not a number, is a 404 page too.
    assert_page(catalog.client.get("/prompts/tricky?version=9"), 404)
    for odd in ("x", "²", "-1", "1.0", "9" * 400):
        assert_page(catalog.client.get("/prompts/tricky", params={"version": odd}), 404)
    # The API keeps answering problem+json.
    assert_problem(catalog.client.get("/v1/prompts/nope"), 401)
    assert_problem(catalog.client.get("/static/catalog/nope.css"), 404)


def test_older_version_page_targets_the_pinned_endpoint(catalog: Server) -> None:
    register(catalog, {**ECHO, "description": "Second version."})
    page = assert_page(catalog.client.get("/prompts/echo?version=1"))
    assert page.select_one("#endpoint").get_text() == "/v1/prompts/echo/versions/1"
    assert page.select_one("#tryit")["data-url"] == "/v1/prompts/echo/versions/1"
    assert "not the current version 2" in page.get_text()
    history = rows(page.select_one("#versions table"))
    assert list(history) == ["v2 current", "v1"]


def test_everything_an_admin_writes_is_escaped(make_server: Callable[..., Server]) -> None:
    server = make_server()
    hostile = copy.deepcopy(ECHO)
    hostile["name"] = "hostile"
    hostile["description"] = f"Nice {HOSTILE} prompt & <b>bold</b>"
    prop = {"type": "string", "description": HOSTILE, "enum": [HOSTILE, "ok"]}
    hostile["input_schema"]["properties"] = {"text": {"type": "string"}, '"><i>x': prop}
    hostile["examples"] = [{"input": {"text": HOSTILE}}]
    register(server, hostile)
    tag = "<svg onload=alert(1)>"
    for path in ("/", f"/?q={HOSTILE}", "/prompts/hostile", f"/prompts/{tag}", f"/?model={tag}"):
        response = server.client.get(path)
        assert "<script>alert" not in response.text and tag not in response.text, path
        assert "<b>bold</b>" not in response.text and "<i>x" not in response.text, path
        page = soup(response.text)
        assert all(s.get("src") or s.get("type") == "application/json" for s in page("script"))
    page = soup(server.client.get("/prompts/hostile").text)
    assert f"Nice {HOSTILE} prompt & <b>bold</b>" in page.select_one(".description").get_text()
    assert page.select_one(".pa-field[data-key='\"><i>x']") is not None
    # The JSON data block cannot be closed early by the data it carries.
    assert "</script><script>" not in page.select_one("#examples-data").decode()


@pytest.mark.parametrize("value", ["off", "OFF"])
def test_catalog_off(make_server: Callable[..., Server], value: str) -> None:
    server = make_server(catalog=value)
    register(server, ECHO)
    for path in ("/", "/prompts/echo", "/static/catalog/catalog.css"):
        assert_problem(server.client.get(path), 404, "not_found")
    # The API is unaffected.
    with server.consumer() as client:
        assert client.get("/v1/prompts/echo").status_code == 200


def test_catalog_setting_is_checked() -> None:
    assert Settings.from_env({"PROMPTAPI_CATALOG": "off"}).catalog == "off"
    with pytest.raises(ConfigError, match="PROMPTAPI_CATALOG must be one of public, off"):
        create_app(Settings(catalog="private"))


def test_static_assets_are_served_with_their_hash(catalog: Server) -> None:
    page = soup(catalog.client.get("/").text)
    for url in [page.select_one("link[rel=stylesheet]")["href"], page.select_one("script")["src"]]:
        response = catalog.client.get(url)
        assert response.status_code == 200
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "max-age" in response.headers["cache-control"]
        assert "?v=" in url and len(url.split("?v=")[1]) == 12
    # Nothing on the page points outside this server.
    for tag in page.find_all(["link", "script", "img"]):
        target = tag.get("href") or tag.get("src") or ""
        assert target.startswith("/"), target


def test_tags_are_validated(make_server: Callable[..., Server]) -> None:
    server = make_server()
    response = server.admin.post("/admin/v1/prompts", json={**ECHO, "tags": ["Bad Tag", "ok"]})
    body = assert_problem(response, 422, "definition_invalid")
    assert {e["path"] for e in body["errors"]} == {"/tags/0"}


def test_tags_in_prompt_files_are_shown_and_exported(
    make_server: Callable[..., Server],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "prompts" / "tagged"
    folder.mkdir(parents=True)
    definition = {**copy.deepcopy(ECHO), "name": "tagged", "version": 1, "tags": ["billing", "eu"]}
    (folder / "1.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))
    server = make_server()  # syncs the folder at start
    page = assert_page(server.client.get("/", params={"tag": "eu"}))
    assert visible_cards(page) == ["tagged"]
    card = page.select_one("li.card:not([hidden])")
    assert [c.get_text(strip=True) for c in card.select(".chip")] == ["#billing", "#eu"]
    # `export` writes the tags back, right after the description, and the file syncs unchanged.
    monkeypatch.setenv("PROMPTAPI_DATABASE_URL", database_url)
    out = tmp_path / "exported"
    assert main(["export", str(out)]) == 0
    text = (out / "tagged" / "1.yaml").read_text()
    keys = [line.split(":")[0] for line in text.splitlines() if line[:1].isalpha()]
    assert keys[keys.index("description") + 1] == "tags"
    assert yaml.safe_load(text)["tags"] == ["billing", "eu"]
    capsys.readouterr()
    assert main(["sync", "--dir", str(out)]) == 0
    assert "0 created, 1 unchanged, 0 errors" in capsys.readouterr().out


def test_lifecycle_states_labels_and_drafts(catalog: Server) -> None:
    """Drafts never appear; labels, deprecation (sunset, successor) and retirement do."""
    draft_only = {**copy.deepcopy(ECHO), "name": "secret", "state": "draft"}
    register(catalog, draft_only, {**ECHO, "description": "Echo v2."})
    register(catalog, {**ECHO, "description": "Echo v3, a draft.", "state": "draft"})
    admin = catalog.admin
    assert admin.put("/admin/v1/prompts/echo/labels/staging", json={"version": 1}).is_success
    assert admin.put("/admin/v1/prompts/echo/labels/production", json={"version": 2}).is_success
    sunset = "2030-01-31T00:00:00Z"
    deprecated = admin.post(
        "/admin/v1/prompts/echo/versions/1/deprecate", json={"sunset": sunset, "successor": 2}
    )
    assert deprecated.is_success, deprecated.text

    page = assert_page(catalog.client.get("/"))
    assert "secret" not in visible_cards(page) and "secret" not in page.get_text()
    echo = next(c for c in page.select("li.card") if "echo" in c.get_text())
    assert "v2" in echo.get_text()
    assert [c.get_text(strip=True) for c in echo.select(".chip-label")] == ["production"]
    assert_page(catalog.client.get("/prompts/secret"), 404)

    page = assert_page(catalog.client.get("/prompts/echo"))
    history = rows(page.select_one("#versions table"))
    assert list(history) == ["v2 current", "v1"]  # the draft v3 is not shown
    assert history["v2 current"][:2] == ["published", "production"]
    assert history["v1"][:2] == ["deprecated sunset 2030-01-31", "staging"]
    assert_page(catalog.client.get("/prompts/echo?version=3"), 404)

    old = assert_page(catalog.client.get("/prompts/echo?version=1"))
    notice = " ".join(n.get_text(" ", strip=True) for n in old.select(".notice"))
    assert "deprecated" in notice and "2030-01-31" in notice and "version 2" in notice

    assert admin.delete("/admin/v1/prompts/echo/labels/staging").is_success
    assert admin.post("/admin/v1/prompts/echo/versions/1/retire").is_success
    retired = assert_page(catalog.client.get("/prompts/echo?version=1"))
    assert "retired" in retired.select_one(".notice-bad").get_text()


def test_a_prompt_whose_versions_are_all_retired_is_gone(catalog: Server) -> None:
    register(catalog, {**copy.deepcopy(ECHO), "name": "old"})
    assert catalog.admin.post("/admin/v1/prompts/old/versions/1/retire").is_success
    assert "old" not in visible_cards(assert_page(catalog.client.get("/")))
    page = assert_page(catalog.client.get("/prompts/old"), 410)
    assert page.select_one("h1").get_text(strip=True) == "Prompt version retired"
    assert_page(catalog.client.get("/prompts/old?version=1"), 410)
