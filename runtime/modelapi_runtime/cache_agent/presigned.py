"""The store as the agent sees it: presigned URLs a pod sent, called only on the endpoints the admin allowed.

The agent runs on the node's network. A URL is called only when its origin is one of ``allowed_endpoints`` and
redirects are never followed, so a pod cannot use the agent to reach anything but the store (the kubelet, a
metadata service). A URL's query is a credential: it never appears in a log or an answer (``display_uri``).
"""

from __future__ import annotations

import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from modelapi_runtime.exceptions import ArtifactAccessDenied, ArtifactUnavailable, InvalidArtifactSpec
from modelapi_runtime.storage import HTTPSource, ObjectInfo, display_uri

DEFAULT_PORTS = {"http": 80, "https": 443}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        return None  # urllib then raises the 3xx as an HTTPError: an unavailable store, not a hop elsewhere


class EndpointNotAllowed(ArtifactAccessDenied):
    """A URL outside the allowed endpoints: the agent's own refusal, not the store's."""


class PresignedSource(HTTPSource):
    """A presigned URL as a download source (ranged GETs, a HEAD), without redirects."""

    opener = urllib.request.build_opener(_NoRedirects)


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str
    host: str  # exact, or ".example.com" for every host under example.com
    port: int

    def admits(self, scheme: str, host: str, port: int) -> bool:
        if scheme != self.scheme or port != self.port:
            return False
        return host.endswith(self.host) if self.host.startswith(".") else host == self.host


def _origin(url: str) -> tuple[str, str, int]:
    try:
        parts = urllib.parse.urlsplit(url)
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        raise InvalidArtifactSpec(f"{display_uri(url)}: not a valid URL") from None
    if scheme not in DEFAULT_PORTS or not host or parts.username is not None:
        raise InvalidArtifactSpec(f"{display_uri(url)}: expected an http(s) URL without userinfo")
    return scheme, host, port


def parse_endpoint(text: str) -> Endpoint:
    """``https://s3.example.com``, ``http://10.0.0.5:9000`` or ``https://*.amazonaws.com``."""
    wildcard = "://*." in text
    scheme, host, port = _origin(text.replace("://*.", "://", 1))
    return Endpoint(scheme, "." + host if wildcard else host, port)


def object_key(url: str) -> str:
    """The object a presigned URL names: its origin and path, without the query (the credential)."""
    scheme, host, port = _origin(url)
    return f"{scheme}://{host}:{port}{urllib.parse.urlsplit(url).path}"


class Store:
    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = [parse_endpoint(e) for e in endpoints]

    def check(self, url: str) -> None:
        if not any(e.admits(*_origin(url)) for e in self.endpoints):
            raise EndpointNotAllowed(
                f"{display_uri(url)}: this node's cache agent may not call that endpoint (chart value "
                "nodeCache.allowedEndpoints); the pod downloads itself"
            )

    def head(self, url: str) -> ObjectInfo:
        """The pod's own access check, run by the agent: its presigned HEAD must answer 200 with ETag and size."""
        self.check(url)
        info = PresignedSource(url).stat()
        if info.size is None or not info.etag:
            raise ArtifactUnavailable(f"{display_uri(url)}: the store's HEAD gave no size or ETag")
        return info

    def source(self, url: str) -> PresignedSource:
        self.check(url)
        return PresignedSource(url)
