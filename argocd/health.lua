-- Argo CD health check for serving.modelapi.io/ModelAPI (argocd-cm key:
-- resource.customizations.health.serving.modelapi.io_ModelAPI). Lua 5.1, as Argo CD embeds it.
--
-- Reads only what the operator promises in its status: the conditions Ready, Progressing and
-- Degraded (metav1.Condition shape) and observedGeneration. Tested against status fixtures in
-- tests/unit/project/argocd/ by tests/unit/project/test_argocd_health.py, in a real Lua 5.1 interpreter.
--
--   no status yet, or a status older than the spec   -> Progressing (the operator has not looked at this spec)
--   Degraded=True                                    -> Degraded    (a human is needed: reason and message)
--   Progressing=True                                 -> Progressing (a rollout or a canary runs)
--   Ready=True                                       -> Healthy
--   Ready=False with nothing in progress             -> Degraded
--   anything else (Unknown, no Ready condition)      -> Progressing
--
-- Scale to zero (minReplicas: 0): at zero Ready=True reason ScaledToZero and Progressing=False -> Healthy (a request
-- is held by the activator and served once a replica is up); while a replica starts for a request Ready=True and
-- Progressing=True reason Activating -> Progressing.
-- Capacity reasons need no case of their own: Unschedulable, QuotaExceeded, PodCreationFailed and Evicted come with
-- Degraded=True (-> Degraded); WaitingForCapacity (a cluster autoscaler adds nodes) keeps Degraded=False with
-- Progressing=True (-> Progressing).
-- Autoscaling reason AutoscalingLimited (the HPA held at maxReplicas) is capacity-bound, not failing: still Healthy,
-- with the limit in the message.
local hs = {}

local function describe(condition)
  local reason = condition.reason or ""
  local message = condition.message or ""
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  return reason
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the modelapi operator to report a status"
  return hs
end

local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the modelapi operator to observe generation " .. tostring(generation)
    .. " (status is of generation " .. tostring(observed or 0) .. ")"
  return hs
end

local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  if condition.type ~= nil then
    conditions[condition.type] = condition
    if generation ~= nil and condition.observedGeneration ~= nil and condition.observedGeneration < generation then
      hs.status = "Progressing"
      hs.message = "Waiting for the modelapi operator to observe generation " .. tostring(generation)
        .. " (condition " .. condition.type .. " is of generation " .. tostring(condition.observedGeneration) .. ")"
      return hs
    end
  end
end

local ready = conditions["Ready"]
local progressing = conditions["Progressing"]
local degraded = conditions["Degraded"]
local autoscaling = conditions["Autoscaling"]

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded)
  return hs
end

if progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(progressing)
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
  if autoscaling ~= nil and autoscaling.reason == "AutoscalingLimited" then
    hs.message = hs.message .. "; " .. describe(autoscaling)
  end
  return hs
end

if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

hs.status = "Progressing"
if ready ~= nil then
  hs.message = describe(ready)
else
  hs.message = "Waiting for the Ready condition"
end
return hs
