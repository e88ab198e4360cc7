"""The standard-library SigV4 presigner: the same URLs as botocore's for fixed time and credentials, used only where
it may be (static credentials in the environment, an explicit endpoint); a node-cache hit presigns without importing
boto3. That the harness's real S3 (versitygw) accepts its URLs and refuses a wrong secret is tested in the e2e tier
(tests/e2e/test_sigv4_store.py), which builds and starts it."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from modelapi_runtime.sigv4 import Credentials, S3Signer, static_signer
from modelapi_runtime.storage import S3Source, TransferOptions

NOW = datetime.datetime(2026, 12, 1, 2, 3, 4, tzinfo=datetime.UTC)
KEYS = ["iris/1/model.onnx", "a b/ü+x~y!*'()=&?.onnx", "/leading/slash"]


def _botocore_url(signer: S3Signer, operation: str, bucket: str, key: str, expires: int) -> str:
    creds = signer.credentials
    client = boto3.session.Session(
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        aws_session_token=creds.session_token,
    ).client(
        "s3",
        endpoint_url=signer.endpoint,
        region_name=signer.region,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    from unittest import mock  # botocore's clock, fixed: the comparison needs one moment

    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        url: str = client.generate_presigned_url(operation, Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires)
    return url


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(
    ("endpoint", "region", "token"),
    [
        ("http://127.0.0.1:7070", "us-east-1", None),
        ("https://s3.example.com", "eu-west-3", "session/token+with=odd chars"),
        ("https://S3.Example.com:443", "ap-south-1", None),  # the signed host: lower case, no default port
        ("http://10.0.0.5:80/", "us-east-1", "t"),
    ],
)
def test_the_urls_are_botocores_for_the_same_time_and_credentials(
    key: str, endpoint: str, region: str, token: str | None
) -> None:
    signer = S3Signer(Credentials("AKIDEXAMPLE", "wJalr/XUtnFEMI+K7MDENG", token), endpoint, region)
    for operation, method in (("head_object", "HEAD"), ("get_object", "GET")):
        ours = signer.presign(method, "models-bucket", key, 3600, NOW)
        assert ours == _botocore_url(signer, operation, "models-bucket", key, 3600)


def test_the_signer_is_used_only_for_static_credentials_and_an_explicit_endpoint(tmp_path: Path) -> None:
    static = {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b", "AWS_CONFIG_FILE": str(tmp_path / "none")}
    signer = static_signer("http://s3:9000", None, static)
    assert signer is not None
    assert signer.region == "us-east-1"  # botocore's signing region for S3 without one
    assert static_signer("http://s3:9000", None, {**static, "AWS_DEFAULT_REGION": "eu-west-1"}).region == "eu-west-1"  # type: ignore[union-attr]
    assert static_signer("http://s3:9000", "ca-central-1", {**static, "AWS_SESSION_TOKEN": "t"}).credentials == (  # type: ignore[union-attr]
        Credentials("a", "b", "t")
    )
    config = tmp_path / "config"
    config.write_text("[default]\nregion = eu-north-1\n")
    for endpoint, region, env in [
        (None, "us-east-1", static),  # AWS's own endpoints: virtual-hosted, botocore's rules
        ("http://s3:9000", None, {"AWS_SECRET_ACCESS_KEY": "b"}),  # web identity, instance roles: no static keys
        ("http://s3:9000", None, {**static, "AWS_PROFILE": "other"}),
        ("http://s3:9000", None, {**static, "AWS_SECURITY_TOKEN": "legacy"}),
        ("http://s3:9000", None, {**static, "AWS_CONFIG_FILE": str(config)}),  # the region could be the profile's
        ("http://s3:9000/prefix", "us-east-1", static),
        ("ftp://s3:9000", "us-east-1", static),
        ("http://user@s3:9000", "us-east-1", static),
        ("http://s3:notaport", "us-east-1", static),
    ]:
        assert static_signer(endpoint, region, env) is None, (endpoint, env)


def test_a_node_cache_hit_presigns_without_importing_boto3() -> None:
    """What the pull imports before and while it presigns, in a fresh interpreter with static credentials."""
    code = (
        "import sys\n"
        "import modelapi_runtime.pull\n"
        "from modelapi_runtime.storage import S3Source, TransferOptions\n"
        "from modelapi_runtime.node_cache import presigned_urls\n"
        "source = S3Source('s3://models/m.onnx', TransferOptions(endpoint='http://127.0.0.1:9000'))\n"
        "head, get = presigned_urls(source)\n"
        "assert 'X-Amz-Signature=' in head and head != get\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 's3transfer')))\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    env["AWS_CONFIG_FILE"] = "/nonexistent"
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_without_static_credentials_botocore_signs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "half of a pair")
    source = S3Source("s3://models/m.onnx", TransferOptions(endpoint="http://127.0.0.1:9000", region="us-east-1"))
    with pytest.raises(Exception, match="Unable to locate credentials"):  # botocore's own error, as before
        source.presign("head_object", 60)
