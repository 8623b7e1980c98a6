-- Argo CD health check for iothub.dynreg.io/DynamicRegistration.
-- Add it to argocd-cm as resource.customizations.health.iothub.dynreg.io_DynamicRegistration
-- (see docs/operations/index.md). Reads the kstatus conditions the controller writes, with the same table as
-- kstatus (Flux): Stalled -> Degraded, Reconciling -> Progressing, Ready -> Healthy, anything
-- else -> Progressing; spec.suspend -> Suspended.
local health = { status = "Progressing", message = "Waiting for the controller to report status" }
if obj.spec ~= nil and obj.spec.suspend == true then
  health.status = "Suspended"
  health.message = "spec.suspend is true"
  return health
end
if obj.status == nil or obj.status.conditions == nil then
  return health
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= obj.metadata.generation then
  health.message = "Waiting for the controller to observe generation " .. tostring(obj.metadata.generation)
  return health
end
local ready, stalled, reconciling, drifted
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  elseif condition.type == "Stalled" then
    stalled = condition
  elseif condition.type == "Reconciling" then
    reconciling = condition
  elseif condition.type == "Drifted" then
    drifted = condition
  end
end
local function describe(condition)
  return (condition.reason or "") .. ": " .. (condition.message or "")
end
if reconciling ~= nil and reconciling.status == "True" then
  health.status = "Progressing"
  health.message = describe(reconciling)
elseif stalled ~= nil and stalled.status == "True" then
  health.status = "Degraded"
  health.message = describe(stalled)
elseif ready ~= nil and ready.status == "True" then
  health.status = "Healthy"
  health.message = describe(ready)
  -- ObserveOnly: observed and published is done; the drift it reports is information.
  if drifted ~= nil and drifted.status == "True" then
    health.message = health.message .. " (" .. describe(drifted) .. ")"
  end
elseif ready ~= nil then
  health.message = describe(ready)
end
return health
