"""GET /search.html in headless Chromium against a live gunicorn with an API key: the key typed once, a search, an upload, the upload found."""

from __future__ import annotations

import json
import shutil

import pytest
import requests

from tests.helpers import ROOT, Browser, chromium, start_server

pytestmark = pytest.mark.clients

KEY = "page-test-key-0123456789"


@pytest.fixture()
def server(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("texts_demo.json", "pages_demo.csv"):
        shutil.copy(ROOT / "data" / name, data / name)
    server = start_server(tmp_path, workers=1, SMLS_API_KEY=KEY, SMLS_DATA_DIR=str(data), SMLS_CACHE_DIR=str(tmp_path / "cache"))
    yield server
    server.stop()


@pytest.fixture()
def browser(tmp_path):
    browser = Browser(chromium(), tmp_path / "profile")
    yield browser
    browser.close()


def results(browser: Browser) -> list[dict]:
    return browser.evaluate(
        "[...document.querySelectorAll('#results li')].map(li => ({doc: li.dataset.docId,"
        " text: li.querySelector('.text').textContent, meta: li.querySelector('.meta').textContent}))"
    )  # type: ignore[return-value]


def test_the_page_searches_and_uploads_behind_an_api_key(server, browser, tmp_path):
    page = requests.get(server.url + "/search.html", timeout=10)  # public: the page holds no data
    assert page.status_code == 200 and "connect-src 'self'" in page.headers["Content-Security-Policy"]
    assert "http://" not in page.text.replace(server.url, "") and "https://" not in page.text  # no external assets

    browser.open(server.url + "/search.html")
    browser.wait_for("!document.getElementById('key-form').hidden")  # /models answered 401: the page asks for the key
    assert "API key" in browser.evaluate("document.getElementById('status').textContent")
    browser.evaluate(f"document.getElementById('key').value = {json.dumps(KEY)}; document.getElementById('key-form').requestSubmit()")
    browser.wait_for("document.getElementById('model').options.length > 0")

    browser.evaluate("document.getElementById('q').value = 'Call me Ishmael'; document.getElementById('search-form').requestSubmit()")
    browser.wait_for("document.querySelectorAll('#results li').length > 0")
    first = results(browser)[0]
    assert first["doc"] == "demo" and first["text"] == "Call me Ishmael."
    assert "demo, page " in first["meta"] and "score " in first["meta"]

    texts = tmp_path / "logbook.json"
    texts.write_text(json.dumps([{"text": "The zeppelin <b>Aurora</b> landed at dawn.", "pages": ["p1"]}]))
    pages = tmp_path / "logbook.csv"
    pages.write_text("page_id,page_number\np1,7\n")
    browser.evaluate("document.getElementById('doc-id').value = 'logbook'")
    browser.set_files("#texts", texts)
    browser.set_files("#pages", pages)
    browser.evaluate("document.getElementById('upload-form').requestSubmit()")
    browser.wait_for("document.getElementById('status').textContent.startsWith('uploaded logbook')")

    browser.evaluate(
        "document.getElementById('q').value = 'Aurora zeppelin'; document.getElementById('mode').value = 'keyword';"
        " document.getElementById('search-form').requestSubmit()"
    )
    browser.wait_for("[...document.querySelectorAll('#results li')].some(li => li.dataset.docId === 'logbook')")
    hit = results(browser)[0]
    assert hit == {"doc": "logbook", "text": "The zeppelin <b>Aurora</b> landed at dawn.", "meta": hit["meta"]}  # shown as text
    assert hit["meta"].startswith("logbook, page 7")
    assert browser.evaluate("document.querySelectorAll('#results b').length") == 0  # markup in a text never renders

    # The key was typed once and kept in the page's memory: never in a URL, the storage or a cookie.
    assert KEY not in browser.evaluate("location.href + document.cookie + JSON.stringify(localStorage) + JSON.stringify(sessionStorage)")
    log = server.access_log.read_text()
    assert "/search?" in log and "PUT /documents/logbook" in log and KEY not in log
