"""The revision hash: a digest of the pod template, so it changes exactly when the pods would."""

from __future__ import annotations

import hashlib
import json

from modelapi_operator import names
from modelapi_operator.api import ModelAPISpec
from modelapi_operator.builders.common import Owner, RuntimeImages
from modelapi_operator.builders.deployment import build_pod_template

_PLACEHOLDER = "revision"


def compute_revision(spec: ModelAPISpec, owner: Owner, images: RuntimeImages) -> str:
    """``REVISION_HASH_LENGTH`` hex digits of SHA-256 over the canonical JSON of the pod template.

    The template is built with a placeholder revision (the revision cannot hash itself); keys are
    sorted, so dict order in the manifest never matters. Autoscaling and rollout settings are not
    in the template and so never start a new revision; model, storage and runtime settings (and the
    resolved runtime image) are, and always do.
    """
    template = build_pod_template(spec, owner, _PLACEHOLDER, images)
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[: names.REVISION_HASH_LENGTH]
