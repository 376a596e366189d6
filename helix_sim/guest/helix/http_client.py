"""net/http as the helix CLI uses it: one request per call (requests), and Go's error texts for failed dials."""

from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

from ...gofmt import GoError, go_quote

USER_AGENT = "Go-http-client/1.1"


def dial_address(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addr = info[0][4][0]
    except (socket.gaierror, IndexError):
        addr = host
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def net_error_text(url: str, exc: BaseException) -> str:
    """The net.OpError text Go shows for a failed dial/read."""
    host = urlsplit(url).hostname or ""
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for item in chain:
        if isinstance(item, socket.gaierror):
            return f"dial tcp: lookup {host}: no such host"
        if isinstance(item, ConnectionRefusedError):
            return f"dial tcp {dial_address(url)}: connect: connection refused"
        if isinstance(item, ConnectionResetError):
            return f"read tcp {dial_address(url)}: read: connection reset by peer"
        if isinstance(item, OSError) and item.errno == errno.EHOSTUNREACH:
            return f"dial tcp {dial_address(url)}: connect: no route to host"
    text = str(exc)
    if "Name or service not known" in text or "nodename nor servname" in text or "Failed to resolve" in text:
        return f"dial tcp: lookup {host}: no such host"
    if "Connection refused" in text:
        return f"dial tcp {dial_address(url)}: connect: connection refused"
    return text


class Http:
    """net/http.Client as the CLI uses it: one request per call, Go's error texts."""

    def __init__(self, token: str) -> None:
        import requests  # noqa: PLC0415 - keeps `--help` and usage errors fast

        self._requests = requests
        self.session = requests.Session()
        self.session.trust_env = False  # Go never proxies loopback; the sim is loopback
        self.session.headers.update({"User-Agent": USER_AGENT, "Accept-Encoding": "gzip"})
        self.token = token

    def request(self, method: str, url: str, *, body: bytes | None = None, content_type: str | None = None,
                timeout: float | None = None) -> tuple[int, bytes, dict[str, str]]:
        headers = {"Authorization": "Bearer " + self.token}
        if content_type:
            headers["Content-Type"] = content_type
        op = method[:1] + method[1:].lower()
        try:
            resp = self.session.request(method, url, data=body if body is not None else None, headers=headers,
                                        timeout=timeout, allow_redirects=True)
            return resp.status_code, resp.content, dict(resp.headers)
        except self._requests.exceptions.Timeout:
            raise GoError(f"{op} {go_quote(url)}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)") from None
        except self._requests.exceptions.InvalidURL:
            raise GoError(f"{op} {go_quote(url)}: unsupported protocol scheme") from None
        except self._requests.exceptions.MissingSchema:
            raise GoError(f'{op} {go_quote(url)}: unsupported protocol scheme ""') from None
        except self._requests.exceptions.RequestException as exc:
            raise GoError(f"{op} {go_quote(url)}: {net_error_text(url, exc)}") from None
