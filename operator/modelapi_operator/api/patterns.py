"""Regular expressions shared by the CEL rules and their Python twins.

CEL's ``matches`` (RE2) searches anywhere in the string, like Python's ``re.search``; each pattern
here is written in the subset both engines read the same way, and anchored where it must be.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final

from modelapi_operator.api.rules import CelRule

# DNS-1123 subdomain (Secret, ServiceAccount, ConfigMap names).
DNS1123_SUBDOMAIN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# DNS-1035 label (Service names: must start with a letter).
DNS1035_LABEL: Final = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# A Kubernetes resource.Quantity (k8s.io/apimachinery's regexp), with an optional leading '+'.
QUANTITY: Final = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
SHA256_HEX: Final = r"^[a-fA-F0-9]{64}$"
ARTIFACT_SCHEME: Final = r"^(s3://|https://|file:///)"
URI_WITH_CREDENTIALS: Final = r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*@"
S3_BUCKET_AND_KEY: Final = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[^\s]+$"
# a prefix for the prediction log's objects: a bucket, then an optional path that ends with "/"
S3_PREFIX: Final = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/(\S*/)?$"
HTTPS_HOST_AND_PATH: Final = r"^https://[^/\s]+/\S+$"
NO_WHITESPACE: Final = r"^\S+$"
PYTHON_MODULE: Final = r"\.py(\?\S*)?$"
ENDPOINT_URL: Final = r"^https?://[^/@\s]+(/\S*)?$"
ENV_NAME: Final = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
SECRET_LIKE_ENV_NAME: Final = r"(?i)(password|passwd|secret|token|api_?key|private_?key|credential)"  # noqa: S105
RESERVED_ENV_NAME: Final = r"^(MODELAPI_|AWS_ACCESS_KEY_ID$|AWS_SECRET_ACCESS_KEY$|AWS_SESSION_TOKEN$)"
# A host name a Gateway listener matches (Gateway API's PreciseHostname: a DNS-1123 subdomain, no wildcard).
HOSTNAME: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A URL path prefix: "/" and segments of unreserved characters, no trailing "/" (the model paths follow it).
PATH_PREFIX: Final = r"^(/[A-Za-z0-9._~-]+)+$"
PERCENT: Final = r"^(100|[1-9]?[0-9])%$"
REGION: Final = r"^[a-z0-9-]+$"


def search(pattern: str, value: str) -> bool:
    return re.search(pattern, value) is not None


def cel_matches(pattern: str, subject: str = "self") -> str:
    """A CEL ``matches`` call with the pattern as a raw string literal (no double escaping)."""
    if "'" in pattern:
        raise ValueError("patterns must not contain single quotes")
    return f"{subject}.matches(r'{pattern}')"


def regex_rule(pattern: str, message: str) -> CelRule:
    """A field rule: the value must match ``pattern``."""
    return CelRule(cel=cel_matches(pattern), message=message, check=lambda value: search(pattern, value))


_SUFFIX_FACTORS: Final = {
    **{suffix: Decimal(1024) ** power for power, suffix in enumerate(("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{suffix: Decimal(1000) ** power for power, suffix in enumerate(("", "k", "M", "G", "T", "P", "E"))},
    "m": Decimal("0.001"),
    "u": Decimal("0.000001"),
    "n": Decimal("0.000000001"),
}


def quantity_value(value: str) -> Decimal:
    """A well-formed Kubernetes quantity as a number ("5Gi" -> 5368709120, "500m" -> 0.5, "1e3" -> 1000)."""
    match = re.match(r"^\+?(?P<number>([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(?P<suffix>.*)$", value)
    if match is None or not search(QUANTITY, value):
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = Decimal(match.group("number")), match.group("suffix")
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIX_FACTORS[suffix]


def quantity_is_positive(value: str) -> bool:
    """True for a well-formed Kubernetes quantity greater than zero ("500m", "2", "1.5Gi")."""
    if not search(QUANTITY, value):
        return False
    mantissa = re.match(r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))", value)
    try:
        return mantissa is not None and Decimal(mantissa.group(0)) > 0
    except InvalidOperation:
        return False
