"""http_fetch against a local server on loopback (the only address a test may reach):
what it returns, its limits, and the SSRF guard. Addresses that must never be reached
are only ever classified, never connected to."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from troupe.config import HttpFetchSettings
from troupe.orchestrator.devserver import free_port
from troupe.tools import http_fetch
from troupe.tools.base import ToolRegistry
from troupe.tools.http_fetch import HttpFetch, HttpFetchArguments, address_class

pytestmark = pytest.mark.integration


class Pages(BaseHTTPRequestHandler):
    hosts: list[str] = []  # noqa: RUF012 - shared with the test

    def do_GET(self) -> None:
        Pages.hosts.append(self.headers.get("Host", ""))
        routes: dict[str, tuple[int, str, bytes, dict[str, str]]] = {
            "/text": (200, "text/plain; charset=utf-8", "héllo".encode(), {}),
            "/json": (200, "application/json", json.dumps({"a": 1}).encode(), {}),
            "/binary": (200, "image/png", b"\x89PNG" + b"\0" * 100, {}),
            "/big": (200, "text/plain", b"x" * 5000, {}),
            "/hop": (302, "text/plain", b"", {"Location": "/text"}),
            "/loop": (302, "text/plain", b"", {"Location": "/loop"}),
            "/to-metadata": (302, "text/plain", b"", {"Location": "http://metadata.test/latest"}),
            "/to-intranet": (301, "text/plain", b"", {"Location": "https://wiki.intranet.test/"}),
        }
        status, kind, body, extra = routes.get(self.path, (404, "text/plain", b"nope", {}))
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Pages)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _tool(**settings: Any) -> ToolRegistry:
    config = HttpFetchSettings.model_validate({"allow_private_hosts": ["127.0.0.1"], **settings})
    return ToolRegistry([HttpFetch(config)], max_result_chars=100_000)


async def _fetched(tools: ToolRegistry, url: str) -> str:
    output = await tools.call("http_fetch", {"url": url})
    assert output.ok, output.text
    assert output.confidence == 0.6  # a page is a lead, not a proven fact
    return output.text


async def _refused(tools: ToolRegistry, url: str) -> str:
    output = await tools.call("http_fetch", {"url": url})
    assert not output.ok, output.text
    return output.text


async def test_text_and_json_come_back_decoded(site: str) -> None:
    tools = _tool()
    text = await _fetched(tools, f"{site}/text")
    assert text.startswith("HTTP 200 text/plain, 6 bytes")
    assert text.endswith("\n\nhéllo")
    assert (await _fetched(tools, f"{site}/json")).endswith('{"a": 1}')


async def test_binary_is_described_not_shown(site: str) -> None:
    answer = await _fetched(_tool(), f"{site}/binary")
    assert answer == "HTTP 200 image/png, 104 bytes\n(binary content, not shown)"


async def test_a_large_answer_is_cut_at_the_limit(site: str) -> None:
    answer = await _fetched(_tool(max_bytes=1000), f"{site}/big")
    assert answer.startswith("HTTP 200 text/plain, 1000 bytes (cut at 1000)")
    assert answer.endswith("x" * 1000)


async def test_redirects_are_followed_and_bounded(site: str) -> None:
    assert (await _fetched(_tool(), f"{site}/hop")).endswith("héllo")
    refusal = await _refused(_tool(max_redirects=2), f"{site}/loop")
    assert refusal == "error: more than 2 redirects"


async def test_plain_http_connects_to_the_checked_address_with_the_name_as_host(
    site: str,
) -> None:
    Pages.hosts.clear()
    port = site.rsplit(":", 1)[1]
    tools = _tool(allow_private_hosts=["localhost"])
    assert (await _fetched(tools, f"http://localhost:{port}/text")).endswith("héllo")
    assert Pages.hosts == [f"localhost:{port}"]


async def test_a_loopback_target_is_blocked_unless_allowed(site: str) -> None:
    blocked = _tool(allow_private_hosts=[])
    Pages.hosts.clear()
    refusal = await _refused(blocked, f"{site}/text")
    assert refusal.startswith("error: blocked: 127.0.0.1 resolves to a loopback address")
    assert Pages.hosts == []  # refused before any request reached the server
    for url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "http:///nohost"):
        assert "only http" in await _refused(blocked, url)


# What the stub resolver answers: names that must never be connected to.
STUB_DNS = {
    "metadata.test": ["169.254.169.254"],
    "wiki.intranet.test": ["10.20.30.40"],
    "router.test": ["192.168.0.1", "93.184.216.34"],  # one bad address is enough
    "v6-local.test": ["fe80::1"],
}


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A stub resolver for the names above, and a record of every request httpx sends:
    any request to anything but loopback fails the test before a socket could open."""
    real_resolve = http_fetch.resolve
    sent: list[str] = []

    async def resolve(host: str) -> list[str]:
        return STUB_DNS[host] if host in STUB_DNS else await real_resolve(host)

    real_send = httpx.AsyncClient.send

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
        sent.append(str(request.url))
        assert request.url.host == "127.0.0.1", f"a request left loopback: {request.url}"
        return await real_send(self, request, **kwargs)

    monkeypatch.setattr(http_fetch, "resolve", resolve)
    monkeypatch.setattr(httpx.AsyncClient, "send", send)
    return sent


@pytest.mark.parametrize(
    ("url", "kind", "address"),
    [
        ("http://metadata.test/latest/meta-data/", "link_local", "169.254.169.254"),
        ("https://wiki.intranet.test/", "private", "10.20.30.40"),
        ("http://router.test/", "private", "192.168.0.1"),
        ("http://v6-local.test/", "link_local", "fe80::1"),
    ],
)
async def test_a_name_resolving_to_a_non_public_address_is_refused_before_any_request(
    guarded: list[str], url: str, kind: str, address: str
) -> None:
    refusal = await _refused(_tool(allow_private_hosts=[]), url)
    assert refusal.startswith(f"error: blocked: {url.split('/')[2]} resolves to a {kind}")
    assert address in refusal
    assert guarded == []  # nothing was sent, so no socket was opened


@pytest.mark.parametrize(
    ("path", "target"), [("/to-metadata", "metadata.test"), ("/to-intranet", "wiki.intranet.test")]
)
async def test_a_redirect_to_a_non_public_address_is_refused_before_following_it(
    guarded: list[str], site: str, path: str, target: str
) -> None:
    # 127.0.0.1 is allowed here (the test server); the redirect's target is not.
    refusal = await _refused(_tool(), f"{site}{path}")
    assert refusal.startswith(f"error: blocked: {target} resolves to a ")
    assert guarded == [f"{site}{path}"]  # only the loopback hop was ever sent


async def test_the_policy_sees_the_targets_host_and_address_class(site: str) -> None:
    facts = await _tool().policy_facts("http_fetch", {"url": f"{site}/text"})
    assert facts == {"target": {"host": "127.0.0.1", "address_class": "loopback"}}
    assert await _tool().policy_facts("calculator", {"expression": "1"}) == {}


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link_local"),  # the cloud metadata service
        ("fe80::1", "link_local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # carrier-grade NAT: not global
        ("::ffff:192.168.1.1", "private"),  # v4-mapped
        ("0.0.0.0", "reserved"),
        ("224.0.0.1", "reserved"),
        ("93.184.216.34", "public"),
        ("2606:4700::1111", "public"),
    ],
)
def test_addresses_are_classified(address: str, kind: str) -> None:
    assert address_class(address) == kind


def test_the_arguments_are_a_url() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        HttpFetchArguments(url="x")
