"""/docs: Swagger UI served entirely by promptapi itself, under a CSP that forbids other
origins, and shipped in the package."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from tests.conftest import Server
from tests.helpers import ROOT, assert_problem, sqlite_only


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def _same_origin(base: str, url: str) -> bool:
    absolute = urlsplit(urljoin(base, url))
    return (absolute.scheme, absolute.netloc) == urlsplit(base)[:2]


@sqlite_only
def test_docs_page_and_every_asset_come_from_this_server(server: Server) -> None:
    page = server.client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    assert "script-src 'self'" in csp and "unsafe-eval" not in csp
    assert not re.search(r"https?:|\*", csp), csp
    links = _Links()
    links.feed(page.text)
    assert len(links.urls) >= 4, links.urls
    base = f"{server.url}/docs"
    fetched: dict[str, str] = {}
    for url in links.urls:
        assert _same_origin(base, url), url
        answer = server.client.get(urljoin(base, url))
        assert answer.status_code == 200, url
        fetched[urlsplit(urljoin(base, url)).path] = answer.headers["content-type"]
    assert fetched["/docs/assets/swagger-ui-bundle.js"].startswith("text/javascript")
    assert fetched["/docs/assets/swagger-ui.css"].startswith("text/css")
    assert fetched["/openapi.json"] == "application/json"
    # The initializer loads the document from this server and disables the outside validator.
    init = server.client.get("/docs/assets/docs.js").text
    assert '"openapi.json"' in init and "validatorUrl: null" in init
    assert not re.search(r"https?://", init)
    # The stylesheet pulls nothing in: its only url()s are inline data.
    css = server.client.get("/docs/assets/swagger-ui.css").text
    urls = re.findall(r"url\(\s*['\"]?([^'\")]+)", css)
    assert urls and all(u.startswith("data:") for u in urls)
    assert "@import" not in css and "sourceMappingURL" not in css
    # Licenses ship with the vendored files.
    assert "Apache License" in server.client.get("/docs/assets/LICENSE").text


@sqlite_only
def test_only_the_vendored_files_are_served(server: Server) -> None:
    for name in ("index.html", "..%2F..%2Fapp.py", "swagger-ui-bundle.js.map", "nope.js"):
        assert_problem(server.client.get(f"/docs/assets/{name}"), 404, "not_found")
    assert_problem(server.client.get("/docs/assets/../openapi.py"), 404)
    head = server.client.head("/docs/assets/swagger-ui-bundle.js")
    assert head.status_code == 200 and int(head.headers["content-length"]) > 100_000
    assert_problem(server.client.post("/docs", content=b""), 405, "method_not_allowed")


@pytest.mark.slow
def test_the_wheel_ships_the_docs_assets(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("promptapi-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("index.html", "docs.js", "swagger-ui-bundle.js", "swagger-ui.css", "LICENSE"):
        assert f"promptapi/web/static/docs/{name}" in names
