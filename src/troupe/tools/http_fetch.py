"""http_fetch: read a web page or an API answer, guarded against SSRF.

Before any connection, the host is resolved and every address it resolves to is
classified (public, private, loopback, link-local, reserved). The policy decides
(``tool.invoke`` with ``target: {host, address_class}``; the shipped one allows only
public addresses of allowlisted domains), and the tool refuses a non-public address by
itself unless ``tools.http_fetch.allow_private_hosts`` names the host. Every redirect
is checked the same way. Plain-HTTP requests go to the address that was checked (the
name is only the Host header), so a DNS answer that changes between the check and the
connection cannot move the request; over HTTPS the certificate must match the name, so
the name is resolved again by the connection (that gap is documented).

Answers are read as a stream up to ``max_bytes``; text (``text/*``, JSON, XML) is
returned decoded, anything else is described, not shown.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field

from troupe.config import HttpFetchSettings
from troupe.tools.base import ToolError, ToolOutput, TypedTool

_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml+xml")


class HttpFetchArguments(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=2048, description="An http:// or https:// URL.")


def address_class(address: str) -> str:
    """public, private, loopback, link_local or reserved (multicast, unspecified, ...)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast or ip.is_unspecified or ip.is_reserved:
        return "reserved"
    if ip.is_private or not ip.is_global:
        return "private"
    return "public"


async def resolve(host: str) -> list[str]:
    """Every address ``host`` resolves to (an address literal resolves to itself)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ToolError(f"cannot resolve {host!r}: {exc.strerror}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _worst(classes: list[str]) -> str:
    for kind in ("loopback", "link_local", "private", "reserved"):
        if kind in classes:
            return kind
    return "public"


class HttpFetch(TypedTool):
    name = "http_fetch"
    description = (
        "Fetch an http(s) URL and read its text (web pages, JSON APIs). Only public "
        "addresses of allowed domains; answers are cut to a size limit."
    )
    arguments = HttpFetchArguments

    def __init__(self, settings: HttpFetchSettings) -> None:
        self._settings = settings

    async def policy_facts(self, arguments: BaseModel) -> dict[str, Any]:
        """What the policy sees of a call: the target host and its address class."""
        assert isinstance(arguments, HttpFetchArguments)
        host = _split(arguments.url).hostname or ""
        classes = [address_class(a) for a in await resolve(host)]
        return {"target": {"host": host, "address_class": _worst(classes)}}

    async def run(self, arguments: BaseModel) -> ToolOutput:
        assert isinstance(arguments, HttpFetchArguments)
        s = self._settings
        url = arguments.url
        async with httpx.AsyncClient(
            timeout=s.timeout_s, follow_redirects=False, trust_env=False
        ) as http:
            for _ in range(s.max_redirects + 1):
                request = await self._checked_request(http, url)
                response = await http.send(request, stream=True)
                try:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    # A page says what its author says: a lead, not a proven fact.
                    return ToolOutput(text=await self._read(response), confidence=0.6)
                finally:
                    await response.aclose()
        raise ToolError(f"more than {s.max_redirects} redirects")

    async def _checked_request(self, http: httpx.AsyncClient, url: str) -> httpx.Request:
        parts = _split(url)
        host = parts.hostname or ""
        addresses = await resolve(host)
        kinds = {address: address_class(address) for address in addresses}
        blocked = [a for a, kind in kinds.items() if kind != "public"]
        if blocked and host not in self._settings.allow_private_hosts:
            raise ToolError(
                f"blocked: {host} resolves to a {kinds[blocked[0]]} address ({blocked[0]})"
            )
        if parts.scheme == "http":
            # Connect to an address just checked (IPv4 first); the name goes in the Host
            # header.
            address = sorted(addresses, key=lambda a: ":" in a)[0]
            literal = f"[{address}]" if ":" in address else address
            netloc = literal + (f":{parts.port}" if parts.port else "")
            pinned = urlunsplit(("http", netloc, parts.path or "/", parts.query, ""))
            return http.build_request("GET", pinned, headers={"Host": parts.netloc})
        return http.build_request("GET", url)

    async def _read(self, response: httpx.Response) -> str:
        limit = self._settings.max_bytes
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > limit:
                break
        cut = len(body) > limit
        body = body[:limit]
        kind = response.headers.get("content-type", "application/octet-stream")
        head = f"HTTP {response.status_code} {kind.split(';')[0]}, {len(body)} bytes"
        if cut:
            head += f" (cut at {limit})"
        if not kind.startswith(_TEXT_TYPES):
            return head + "\n(binary content, not shown)"
        charset = response.charset_encoding or "utf-8"
        return head + "\n\n" + body.decode(charset, errors="replace")


def _split(url: str) -> Any:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ToolError("only http:// and https:// URLs with a host can be fetched")
    return parts
