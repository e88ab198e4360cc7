"""The steps of `make demo` (scripts/demo.sh) that are Python, one subcommand each:

- ``upload-model FILE KEY``: upload FILE to the local S3 as KEY in $S3_BUCKET (the endpoint and credentials from the
  cluster's env file, S3_* and AWS_*); prints its size and sha256;
- ``point-storage MANIFEST URL``: the ModelAPI manifest with spec.storage.endpoint set to URL, on stdout;
- ``decode-secret``: a Secret (``kubectl get secret -o json``) on stdin, ``{name: {key: value}}`` on stdout, for
  ``demo_local.py --secrets``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

S3_ENV = ("S3_ENDPOINT_URL", "S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


def upload_model(path: Path, key: str, env: dict[str, str]) -> str:
    """Upload path to s3://$S3_BUCKET/key on $S3_ENDPOINT_URL; the line the demo prints about it."""
    import boto3  # noqa: PLC0415 - only this step needs it (and its import is slow)
    from botocore.config import Config  # noqa: PLC0415

    missing = [name for name in S3_ENV if not env.get(name)]
    if missing:
        raise SystemExit(f"demo_steps: upload-model needs {', '.join(missing)} (source the cluster's env file)")
    s3 = boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
        config=Config(s3={"addressing_style": "path"}),
    )
    s3.upload_file(str(path), env["S3_BUCKET"], key)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"    uploaded {path.stat().st_size} bytes, sha256 {digest}"


def point_storage(manifest: str, endpoint: str) -> str:
    """The manifest (YAML) with spec.storage.endpoint set to endpoint, as YAML in the same key order."""
    document: dict[str, Any] = yaml.safe_load(manifest)
    document["spec"]["storage"]["endpoint"] = endpoint
    return yaml.safe_dump(document, sort_keys=False)


def decode_secret(secret: dict[str, Any]) -> dict[str, dict[str, str]]:
    """A Secret object -> {its name: {key: decoded value}}."""
    data = {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
    return {secret["metadata"]["name"]: data}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo_steps.py", description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    upload = steps.add_parser("upload-model", help="upload a file to the local S3")
    upload.add_argument("file", type=Path)
    upload.add_argument("key", help="the object key in $S3_BUCKET")
    point = steps.add_parser("point-storage", help="a ModelAPI manifest with spec.storage.endpoint replaced")
    point.add_argument("manifest", type=Path)
    point.add_argument("endpoint")
    steps.add_parser("decode-secret", help="a Secret's data, decoded (stdin to stdout)")
    options = parser.parse_args(argv)

    if options.step == "upload-model":
        print(upload_model(options.file, options.key, dict(os.environ)))
    elif options.step == "point-storage":
        sys.stdout.write(point_storage(options.manifest.read_text(), options.endpoint))
    else:
        json.dump(decode_secret(json.load(sys.stdin)), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
