-- Feature codes an extension dials to change its own settings, kept in the key-value
-- store so they survive restarts (GSM-style codes: * sets, # clears):
--
--   *21<number>  forward every call to <number>      #21  stop
--   *61<number>  forward when not answered            #61  stop
--   *67<number>  forward when busy                    #67  stop
--   *78          do not disturb on                    *79  do not disturb off
--
-- <number> is anything the dialplan routes: an extension, a group, 9 + an outside number.
local M = {}

-- One key-value namespace per setting, keyed by extension, so `kv.list("dnd")` shows
-- everyone on do-not-disturb.
local FORWARDS = {
  ["21"] = "forward_always",
  ["61"] = "forward_no_answer",
  ["67"] = "forward_busy",
}

-- The settings of extension `ext`.
function M.settings(ext)
  return {
    dnd = kv.get("dnd", ext) == "on",
    always = kv.get("forward_always", ext),
    no_answer = kv.get("forward_no_answer", ext),
    busy = kv.get("forward_busy", ext),
  }
end

-- Until there are confirmation prompts (a later release), a feature code that worked is
-- answered and hung up at once; one that did not is refused.
local function confirm(call)
  call:answer()
  call:hangup()
end

-- Handles `dest` if it is a feature code; returns false if it is not one.
-- `is_routable(number)` says whether a forward target makes sense.
function M.handle(call, dest, is_routable)
  if not (dest:match("^%*%d") or dest:match("^#%d")) then
    return false
  end
  call.vars.route = "feature"
  local ext = call.auth_user
  if not (ext and ext:match("^1%d%d%d$")) then
    log.warn("feature code " .. dest .. " from an unauthenticated caller")
    call:reject(403, "Feature Codes Need An Extension")
    return true
  end
  local op, code, number = dest:match("^([*#])(%d%d)(.*)$")
  local namespace = FORWARDS[code or ""]
  if namespace and op == "*" and is_routable(number) and number ~= ext then
    kv.set(namespace, ext, number)
    log.info(ext .. ": " .. namespace .. " -> " .. number)
    confirm(call)
  elseif namespace and op == "#" and number == "" then
    kv.delete(namespace, ext)
    log.info(ext .. ": " .. namespace .. " cleared")
    confirm(call)
  elseif dest == "*78" or dest == "*79" then
    if dest == "*78" then kv.set("dnd", ext, "on") else kv.delete("dnd", ext) end
    log.info(ext .. ": do not disturb " .. (dest == "*78" and "on" or "off"))
    confirm(call)
  else
    call:reject(484, "Unknown Feature Code")
  end
  return true
end

return M
