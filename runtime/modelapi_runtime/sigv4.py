"""Presigned S3 URLs (AWS Signature Version 4, query string) with the standard library alone.

A node-cache hit needs two presigned URLs of the pod's object and nothing else from an S3 client: importing boto3 and
building a client only to sign them cost the pod about 0.1-0.2 CPU-s per start (``python -X importtime``), a
noticeable share of a start at a ``500m`` CPU limit. This module signs them with ``hmac`` and ``hashlib`` when the
credentials are static and in the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optionally
``AWS_SESSION_TOKEN``: what the operator mounts from ``spec.storage.credentialsSecret``) and the endpoint is an
explicit one addressed path-style (``spec.storage.endpoint``); ``static_signer`` answers None for anything else (web
identity, instance profiles, profiles and config files, AWS's own virtual-hosted endpoints) and the caller signs with
botocore as before. The URLs are the ones botocore's ``generate_presigned_url`` makes with SigV4 for the same time,
credentials, region and endpoint (tests/unit/runtime/test_sigv4.py compares them).
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import os
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
DEFAULT_REGION = "us-east-1"  # botocore's signing region for S3 when none is configured
DEFAULT_PORTS = {"http": 80, "https": 443}
# Variables through which botocore could take credentials, a region or an addressing style from elsewhere than the
# ones read here: with any of them set, the caller signs with botocore
AMBIENT_CONFIG = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SECURITY_TOKEN")


@dataclass(frozen=True, slots=True)
class Credentials:
    access_key: str
    secret_key: str
    session_token: str | None = None


@dataclass(frozen=True, slots=True)
class S3Signer:
    """Signs path-style URLs of one endpoint (``scheme://host[:port]``) with static credentials."""

    credentials: Credentials
    endpoint: str
    region: str

    def presign(self, method: str, bucket: str, key: str, expires: int, now: datetime.datetime | None = None) -> str:
        """The presigned URL of ``method`` (``GET``, ``HEAD``) on ``s3://bucket/key``, valid ``expires`` seconds."""
        moment = (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC)
        amz_date, day = moment.strftime("%Y%m%dT%H%M%SZ"), moment.strftime("%Y%m%d")
        parts = urllib.parse.urlsplit(self.endpoint)
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        if parts.port is not None and parts.port != DEFAULT_PORTS.get(scheme):
            host = f"{host}:{parts.port}"
        path = "/" + _quote(bucket, "") + "/" + _quote(key, "/~")
        scope = f"{day}/{self.region}/s3/aws4_request"
        query = {
            "X-Amz-Algorithm": ALGORITHM,
            "X-Amz-Credential": f"{self.credentials.access_key}/{scope}",
            "X-Amz-Date": amz_date,
            "X-Amz-Expires": str(expires),
            "X-Amz-SignedHeaders": "host",
        }
        if self.credentials.session_token:
            query["X-Amz-Security-Token"] = self.credentials.session_token
        canonical_query = _encode(sorted(query.items()))
        canonical_request = "\n".join(
            (method.upper(), path, canonical_query, f"host:{host}", "", "host", UNSIGNED_PAYLOAD)
        )
        to_sign = "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()))
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        # the query in botocore's order (as the parameters were added), the signature last
        # the endpoint as given (botocore keeps its case and a default port in the URL; the signed host has neither)
        return f"{parts.scheme}://{parts.netloc}{path}?{_encode(query.items())}&X-Amz-Signature={signature}"

    def _signing_key(self, day: str) -> bytes:
        key = ("AWS4" + self.credentials.secret_key).encode()
        for part in (day, self.region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        return key


def _quote(text: str, safe: str) -> str:
    return urllib.parse.quote(text, safe=safe)


def _encode(pairs: Iterable[tuple[str, str]]) -> str:
    return "&".join(f"{_quote(k, '-_.~')}={_quote(v, '-_.~')}" for k, v in pairs)


def static_signer(
    endpoint: str | None, region: str | None, environ: Mapping[str, str] | None = None
) -> S3Signer | None:
    """A signer when the credentials are static ones in the environment and the endpoint is explicit; None when
    botocore must sign (see the module's docstring)."""
    env = os.environ if environ is None else environ
    access_key, secret_key = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not (access_key and secret_key and endpoint) or any(env.get(name) for name in AMBIENT_CONFIG):
        return None
    try:
        parts = urllib.parse.urlsplit(endpoint)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return None
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return None
    resolved = region or env.get("AWS_DEFAULT_REGION") or None
    if resolved is None and _config_file(env).exists():
        return None  # the region could come from a profile: botocore reads it
    return S3Signer(Credentials(access_key, secret_key, env.get("AWS_SESSION_TOKEN") or None), endpoint,
                    resolved or DEFAULT_REGION)  # fmt: skip


def _config_file(env: Mapping[str, str]) -> Path:
    return Path(env.get("AWS_CONFIG_FILE") or "~/.aws/config").expanduser()
