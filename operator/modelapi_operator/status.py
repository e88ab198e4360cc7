"""From what the operator observed to the ModelAPI's status and the Events of each transition (pure).

``Ready`` is derived in one place: True only when the revision of the current generation is the
stable one and all its desired replicas are ready. ``Progressing`` is True while a revision rolls
out or replicas start. ``Degraded`` carries the failure that needs a human. Transition times move
only when a condition's status changes; an Event is produced for every change of status or reason.

``compute_status`` works out one ``Situation`` from the observation, then asks one small policy per condition
(``ready_policy``, ``progressing_policy``, ``degraded_policy``, ``autoscaling_policy``,
``prediction_log_policy``) and one for
``lastFailure`` (``last_failure_policy``); each returns what it decides and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from modelapi_operator.api import (
    CanaryStatus,
    ColdStart,
    Condition,
    LastFailure,
    LastKnownGood,
    ModelAPIStatus,
    RevisionStatus,
)
from modelapi_operator.api.status import ConditionStatus, ConditionType, RevisionRole
from modelapi_operator.autoscaling import DEFAULT_LIMITED_SECONDS, AutoscalingView, autoscaling_condition
from modelapi_operator.capacity import PROGRESS_REASONS
from modelapi_operator.diagnose import Failure
from modelapi_operator.expose import EXPOSE_PROBLEMS
from modelapi_operator.reasons import (
    ACTIVATING,
    AS_EXPECTED,
    AUTOSCALING_INACTIVE,
    AUTOSCALING_LIMITED,
    CANARY_IN_PROGRESS,
    ENDPOINTS_NOT_READY,
    NO_REVISION,
    PREDICTION_LOG_FAILING,
    PREDICTION_LOG_WRITING,
    PROGRESS_DEADLINE_EXCEEDED,
    REPLICAS_NOT_READY,
    REPLICAS_STARTING,
    ROLLED_BACK,
    ROLLING_OUT,
    ROLLOUT_ABORTED,
    ROLLOUT_COMPLETE,
    SCALE_TO_ZERO_UNAVAILABLE,
    SCALED_TO_ZERO,
    SERVING,
    canary_step,
)
from modelapi_operator.routing import not_routable_message
from modelapi_operator.timestamps import parse_rfc3339
from modelapi_operator.zero import ZeroState

# Failures after which nothing progresses by itself: a human changes the spec.
FINAL_FAILURES = frozenset({PROGRESS_DEADLINE_EXCEEDED, ROLLOUT_ABORTED, ROLLED_BACK})
SERVING_ROLES = ("stable", "next", "canary")


@dataclass(frozen=True)
class RevisionView:
    """One revision's Deployment as observed."""

    name: str
    revision: str
    role: RevisionRole
    model_uri: str
    sha256: str | None
    desired: int
    ready: int
    failure: Failure | None = None
    last_served: str | None = None  # a last-known-good revision: when it stopped serving (RFC 3339)


@dataclass(frozen=True)
class Observation:
    generation: int
    desired_revision: str | None  # None when the spec is invalid
    invalid: Failure | None  # the spec is invalid, or the cluster policy refuses it: nothing of it was applied
    revisions: Sequence[RevisionView]  # newest first
    url: str
    previous: ModelAPIStatus
    now: str
    canary: CanaryStatus | None = None
    cold_start: ColdStart | None = None  # newly read; else the previous one is kept
    zero_state: ZeroState | None = None  # scale to zero of the stable revision, when it is the current one
    zero_since: str | None = None  # when it went to zero
    zero_notice: str | None = None  # why a minReplicas: 0 model is not taken to zero
    autoscaling: AutoscalingView | None = None  # the stable revision's HPA, when its size is not fixed
    autoscaling_limited_seconds: float = DEFAULT_LIMITED_SECONDS  # how long the HPA must want more than its max
    # Pods of the current revision listed as ready endpoints of the ``<name>`` Service; None when not checked
    # (Ready was already True, or the EndpointSlices could not be read): then ready replicas decide alone.
    routable: int | None = None
    # spec.expose: the Exposed condition (status, reason, message) and the external URL (None while not exposed)
    exposed: tuple[tuple[Literal["True", "False"], str, str], str | None] | None = None
    forbidden: Failure | None = None  # the API server refused one of the operator's writes (its RBAC)
    conflict: Failure | None = None  # a child's name is taken by an object this ModelAPI does not control
    missing_reference: Failure | None = None  # an object the spec names (a ServiceAccount) does not exist
    # spec.monitoring.predictionLog, with a Prometheus URL: (revision, reason) of each revision whose prediction log
    # fails to write (empty: none does); None: not set, or not known (no Prometheus, or it did not answer)
    prediction_log_failures: Sequence[tuple[str, str]] | None = None

    @property
    def modelapi_failure(self) -> Failure | None:
        """A failure of the ModelAPI itself, found before or while applying: it wins over any revision's, and
        nothing progresses until it is fixed."""
        return self.invalid or self.forbidden or self.conflict or self.missing_reference


@dataclass(frozen=True)
class EventRecord:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def _condition(
    *,
    previous: ModelAPIStatus,
    kind: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> Condition:
    before = next((c for c in previous.conditions if c.type == kind), None)
    changed = before is None or before.status != status
    return Condition(
        type=kind,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if changed or before is None else before.last_transition_time,
        observed_generation=generation,
    )


def _serves(view: RevisionView) -> bool:
    """A revision that was aborted or rolled back gets no traffic, even while its pods wind down."""
    withdrawn = view.failure is not None and view.failure.reason in (ROLLOUT_ABORTED, ROLLED_BACK)
    return view.role in SERVING_ROLES and not withdrawn


def _weights(revisions: Sequence[RevisionView], canary: CanaryStatus | None) -> dict[str, int]:
    """Traffic share: the canary's achieved weight, else by ready replicas (the ``<name>`` Service spreads
    requests over every ready pod)."""
    if canary is not None:
        return {
            view.name: canary.weight
            if view.name == canary.revision
            else (100 - canary.weight if view.role == "stable" else 0)
            for view in revisions
        }
    serving = [view for view in revisions if _serves(view)]
    ready = sum(view.ready for view in serving)
    if ready == 0:
        return {view.name: (100 if view.role == "stable" else 0) for view in revisions}
    weights = {view.name: round(100 * view.ready / ready) for view in serving}
    if serving:
        drift = 100 - sum(weights.values())
        weights[serving[0].name] += drift
    return {view.name: weights.get(view.name, 0) for view in revisions}


def _ready_message(target: RevisionView) -> str:
    return f"revision {target.name}: {target.ready}/{target.desired} replicas ready"


def _ready(
    obs: Observation,
    target: RevisionView | None,
    stable: RevisionView | None,
    cause: Failure | None,
    *,
    fully_serving: bool,
) -> tuple[ConditionStatus, str, str]:
    """The Ready condition's status, reason and message (``cause``: a failure, or capacity still being added)."""
    if fully_serving and target is not None and not _routed(obs, target):
        return (
            "False",
            ENDPOINTS_NOT_READY,
            not_routable_message(obs.url, target.name, obs.routable or 0, target.desired),
        )
    if fully_serving and target is not None and obs.zero_notice is not None:
        return "True", SCALE_TO_ZERO_UNAVAILABLE, f"serving {_ready_message(target)}; {obs.zero_notice}"
    if fully_serving and target is not None:
        return "True", SERVING, f"serving {_ready_message(target)}"
    if cause is not None:
        return "False", cause.reason, cause.message
    if target is None:
        return "False", NO_REVISION, "the current revision has no Deployment yet"
    if target is not stable:
        serving = f"; revision {stable.name} keeps serving with {stable.ready} ready" if stable else ""
        if obs.canary is not None:
            return "False", CANARY_IN_PROGRESS, f"canary {obs.canary.analysis or ''}{serving}"
        return "False", ROLLING_OUT, f"rolling out {_ready_message(target)}{serving}"
    if obs.modelapi_failure is None and obs.zero_state == "zero":
        # Ready: a request is accepted (held by the activator) and served once a replica is up.
        return (
            "True",
            SCALED_TO_ZERO,
            f"scaled to zero at {obs.zero_since} (no request for a while); the next request starts revision "
            f"{target.name}, held by the activator meanwhile",
        )
    if obs.modelapi_failure is None and obs.zero_state == "waking":
        return (
            "True",
            ACTIVATING,
            f"woken from zero by a request: {_ready_message(target)}; requests are held by the activator until one "
            "is ready",
        )
    return "False", REPLICAS_NOT_READY, _ready_message(target)


@dataclass(frozen=True)
class Situation:
    """What every condition's policy reads, worked out once from an observation."""

    target: RevisionView | None  # the revision of the current generation
    stable: RevisionView | None
    cause: Failure | None  # the failure to show, or capacity still being added
    failure: Failure | None  # a cause that needs a human: Degraded=True
    waiting: Failure | None  # a cause that is progress (capacity being added): Progressing=True
    fully_serving: bool  # the current revision is stable with every desired replica ready
    parked: bool  # the current revision is stable and at zero, or waking from it


def situation(obs: Observation) -> Situation:
    stable = next((view for view in obs.revisions if view.role == "stable"), None)
    target = next((view for view in obs.revisions if view.revision == obs.desired_revision), None)
    cause, failure, waiting = _causes(obs, target, stable)
    fully_serving = (
        obs.modelapi_failure is None
        and target is not None
        and target is stable
        and target.desired >= 1
        and target.ready >= target.desired
    )
    parked = (
        obs.modelapi_failure is None
        and target is not None
        and target is stable
        and obs.zero_state in ("zero", "waking")
    )
    return Situation(target, stable, cause, failure, waiting, fully_serving, parked)


Verdict = tuple[ConditionStatus, str, str]  # a condition's status, reason and message


def ready_policy(obs: Observation, now: Situation) -> Verdict:
    return _ready(obs, now.target, now.stable, now.cause, fully_serving=now.fully_serving)


def progressing_policy(obs: Observation, now: Situation, ready: Verdict) -> Verdict:
    """Whether anything moves: a rollout, a canary step, replicas starting, a model waking; and if not, why."""
    _, ready_reason, ready_message = ready
    target, stable, failure = now.target, now.stable, now.failure
    if obs.modelapi_failure is not None:
        return "False", obs.modelapi_failure.reason, obs.modelapi_failure.message
    if failure is not None and failure.reason in FINAL_FAILURES:
        return "False", failure.reason, failure.message
    if now.fully_serving and _routed(obs, target):
        return "False", ROLLOUT_COMPLETE, ready_message
    if now.parked and ready_reason == SCALED_TO_ZERO:
        return "False", SCALED_TO_ZERO, ready_message
    if now.parked and ready_reason == ACTIVATING:
        return "True", ACTIVATING, ready_message
    if now.waiting is not None:
        return "True", now.waiting.reason, now.waiting.message
    if target is not None and target is not stable and obs.canary is not None:
        return "True", canary_step(obs.canary.step + 1), ready_message
    if target is not None and target is not stable:
        return "True", ROLLING_OUT, ready_message if failure is None else _ready_message(target)
    return "True", REPLICAS_STARTING, ready_message


def degraded_policy(now: Situation) -> Verdict:
    """A failure that needs a human, or nothing wrong."""
    if now.failure is not None:
        return "True", now.failure.reason, now.failure.message
    return "False", AS_EXPECTED, ""


def autoscaling_policy(obs: Observation, autoscaling: AutoscalingView) -> Verdict:
    """The stable revision's HPA: can it read its metric, and has it been held at its maximum."""
    before = next((c for c in obs.previous.conditions if c.type == "Autoscaling"), None)
    return autoscaling_condition(
        autoscaling,
        was_limited=before is not None and before.reason == AUTOSCALING_LIMITED,
        now=parse_rfc3339(obs.now),
        sustain=obs.autoscaling_limited_seconds,
    )


# What each reason of the runtime's modelapi_prediction_log_failing series means.
_PREDICTION_LOG_FAILURES = {
    "NoSuchBucket": "the bucket of spec.monitoring.predictionLog.s3Prefix does not exist",
    "AccessDenied": "the store refuses the model's credentials (spec.storage) for s3Prefix",
    "Unreachable": "the store (spec.storage.endpoint) is unreachable",
    "WriteFailed": "the store refused the write",
}


def prediction_log_policy(failures: Sequence[tuple[str, str]]) -> Verdict:
    if not failures:
        return "True", PREDICTION_LOG_WRITING, "no replica's last write to the prediction log's sink failed"
    causes = "; ".join(
        f"revision {revision}: {reason} ({_PREDICTION_LOG_FAILURES.get(reason, 'see the runtime log')})"
        for revision, reason in failures
    )
    return (
        "False",
        PREDICTION_LOG_FAILING,
        f"prediction records are lost, serving goes on: {causes}; the runtime's log has the store's answer",
    )


def last_failure_policy(obs: Observation, now: Situation) -> LastFailure | None:
    """The last failure, kept after it clears; a new one (another reason or message) replaces it."""
    failure, target, stable = now.failure, now.target, now.stable
    last_failure = obs.previous.last_failure
    if failure is None or (
        last_failure is not None and (last_failure.reason, last_failure.message) == (failure.reason, failure.message)
    ):
        return last_failure
    failed_revision = None if obs.modelapi_failure is not None else (target.name if target and target.failure else None)
    if failed_revision is None and stable is not None and stable.failure is not None:
        failed_revision = stable.name
    return LastFailure(reason=failure.reason, message=failure.message, revision=failed_revision, time=obs.now)


def compute_status(observation: Observation) -> tuple[ModelAPIStatus, list[EventRecord]]:
    obs = observation
    views = list(obs.revisions)
    now = situation(obs)

    def cond(kind: ConditionType, verdict: Verdict) -> Condition:
        status, reason, message = verdict
        return _condition(
            previous=obs.previous,
            kind=kind,
            status=status,
            reason=reason,
            message=message,
            generation=obs.generation,
            now=obs.now,
        )

    ready = ready_policy(obs, now)
    conditions = [
        cond("Ready", ready),
        cond("Progressing", progressing_policy(obs, now, ready)),
        cond("Degraded", degraded_policy(now)),
    ]
    if obs.autoscaling is not None:
        conditions.append(cond("Autoscaling", autoscaling_policy(obs, obs.autoscaling)))
    if obs.exposed is not None:
        conditions.append(cond("Exposed", obs.exposed[0]))
    if obs.prediction_log_failures is not None:
        conditions.append(cond("PredictionLog", prediction_log_policy(obs.prediction_log_failures)))

    weights = _weights(views, obs.canary)
    status = ModelAPIStatus(
        observed_generation=obs.generation,
        conditions=conditions,
        url=(obs.exposed[1] if obs.exposed is not None else None) or obs.url,
        replicas=sum(view.desired for view in views if _serves(view)),
        ready_replicas=sum(view.ready for view in views if _serves(view)),
        revisions=[
            RevisionStatus(
                name=view.name,
                role=view.role,
                weight=weights[view.name],
                model_uri=view.model_uri,
                sha256=view.sha256,
                ready_replicas=view.ready,
            )
            for view in views
        ],
        canary=obs.canary,
        last_known_good=_last_known_good(views),
        last_failure=last_failure_policy(obs, now),
        cold_start=obs.cold_start or obs.previous.cold_start,
        scaled_to_zero_at=obs.zero_since if now.parked else None,
    )
    return status, _events(obs.previous, conditions)


def _last_known_good(views: Sequence[RevisionView]) -> LastKnownGood | None:
    """The newest last-known-good revision (the one a rollback returns to)."""
    good = next((view for view in views if view.role == "lastKnownGood"), None)
    if good is None:
        return None
    return LastKnownGood(
        revision=good.name,
        model_uri=good.model_uri,
        sha256=good.sha256,
        last_served=good.last_served,
        replicas=good.desired,
        ready_replicas=good.ready,
    )


def _is_problem(condition: Condition) -> bool:
    """A condition value that needs a human: Degraded, an HPA that cannot read its metric, or one held at its
    maximum (capacity-bound: a decision about cost, not a failure)."""
    return (
        (condition.type == "Degraded" and condition.status == "True")
        or (condition.type == "Autoscaling" and condition.reason in (AUTOSCALING_INACTIVE, AUTOSCALING_LIMITED))
        or (condition.type == "Exposed" and condition.reason in EXPOSE_PROBLEMS)
        or (condition.type == "PredictionLog" and condition.reason == PREDICTION_LOG_FAILING)
    )


def _routed(obs: Observation, target: RevisionView | None) -> bool:
    return target is None or obs.routable is None or obs.routable >= target.desired


def _causes(
    obs: Observation, target: RevisionView | None, stable: RevisionView | None
) -> tuple[Failure | None, Failure | None, Failure | None]:
    """The cause to show, split into a failure (Degraded=True) or progress (capacity being added: Progressing=True,
    Degraded stays False)."""
    cause = obs.modelapi_failure or (target.failure if target else None) or (stable.failure if stable else None)
    if cause is not None and cause.reason in PROGRESS_REASONS:
        return cause, None, cause
    return cause, cause, None


def _events(previous: ModelAPIStatus, conditions: Sequence[Condition]) -> list[EventRecord]:
    events = []
    for condition in conditions:
        before = next((c for c in previous.conditions if c.type == condition.type), None)
        if before is not None and (before.status, before.reason) == (condition.status, condition.reason):
            continue
        if before is None and not _is_problem(condition):
            continue  # a condition's first value is not a transition; a first problem still gets its Event
        warning = _is_problem(condition) or (
            condition.type == "Ready" and condition.status == "False" and before is not None and before.status == "True"
        )
        message = f"{condition.type}={condition.status}" + (f": {condition.message}" if condition.message else "")
        events.append(EventRecord("Warning" if warning else "Normal", condition.reason, message))
    return events
