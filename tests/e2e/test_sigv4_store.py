"""The runtime's standard-library SigV4 presigner against the harness's real S3 (versitygw): its HEAD and GET URLs
are accepted, a wrong secret is refused, and the signed method is binding (a HEAD URL does not GET). The URL shapes
themselves are compared with botocore's in tests/unit/runtime/test_sigv4.py."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from typing import Any

from modelapi_runtime.sigv4 import Credentials, S3Signer, static_signer

from .conftest import Cluster


def _open(url: str, method: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, b""


def test_versitygw_accepts_the_urls_for_head_and_get_and_refuses_a_wrong_secret(cluster: Cluster, s3: Any) -> None:
    access, secret = cluster.env["AWS_ACCESS_KEY_ID"], cluster.env["AWS_SECRET_ACCESS_KEY"]
    region, bucket = cluster.env["AWS_DEFAULT_REGION"], cluster.s3_bucket
    data = os.urandom(100_000)
    key = "sigv4-store/a b/model+1.onnx"
    s3.put_object(Bucket=bucket, Key=key, Body=data)
    try:
        signer = static_signer(
            cluster.s3_endpoint_url, region, {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
        )
        assert signer is not None
        assert _open(signer.presign("HEAD", bucket, key, 600), "HEAD") == (200, b"")
        assert _open(signer.presign("GET", bucket, key, 600), "GET") == (200, data)
        wrong = S3Signer(Credentials(access, "not-the-secret"), cluster.s3_endpoint_url, region)
        assert _open(wrong.presign("HEAD", bucket, key, 600), "HEAD")[0] == 403
        assert _open(wrong.presign("GET", bucket, key, 600), "GET")[0] == 403
        head_as_get = signer.presign("HEAD", bucket, key, 600)  # the method is signed: a HEAD URL is not a GET URL
        assert _open(head_as_get, "GET")[0] == 403
    finally:
        s3.delete_object(Bucket=bucket, Key=key)
