"""The page's files (andes.serve.page) on the single-process server: what is served, and how."""

from __future__ import annotations

import re

import httpx
import pytest

from andes.serve.page import STATIC_FILES
from local_server import local_server


@pytest.fixture(scope="module")
def base():
    with local_server() as (url, _):
        yield url


def test_the_page_names_only_its_own_files(base):
    page = httpx.get(f"{base}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    linked = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(u for u in linked if not u.startswith("data:")) == sorted(
        f"static/{name}" for name in STATIC_FILES if name != "index.html")
    for name, media_type in STATIC_FILES.items():
        response = httpx.get(f"{base}/static/{name}")
        assert response.status_code == 200 and response.headers["content-type"] == media_type
        assert "http://" not in response.text and "https://" not in response.text  # no outside host


@pytest.mark.parametrize("name", ["page.py", "..%2Fpage.py", "%2E%2E%2Fprotocol.py", "index.htm"])
def test_nothing_else_is_served(base, name):
    response = httpx.get(f"{base}/static/{name}")
    assert response.status_code == 404
