-- switchboard's shipped dialplan for a small office. route(call) runs once for every
-- new call. README.md documents the API; tests/ shows what each part does.
--
--   1000-1999   extensions: their phones ring, honouring do-not-disturb and forwards
--   0, 600      reception: rings 1000-1002 at once during office hours
--   601         support: hunts through 1001, 1002, 1003 in turn
--   *21 *61 *67 *78 *79 (and # to clear)   feature codes, see features.lua
--   *43         audio test: says the number you are calling from
--   9<number>   outside line (trunks arrive in a later release)
local office = require "office"
local features = require "features"

local route_number -- defined below; forwards route through it again

-- Voicemail arrives in a later release. Until then, calls that would go there are
-- refused with 480 and a log line, so that place in the plan is ready.
local function voicemail(call, box, reason)
  call.vars.voicemail = box
  call.vars.voicemail_reason = reason
  log.warn("voicemail for " .. box .. " (" .. reason .. ") is not available yet: refusing with 480")
  call:reject(480, "Voicemail Unavailable")
end

-- Outside calls need a trunk, which arrives in a later release.
local function outside_line(call, number)
  call.vars.route = call.vars.route or "trunk"
  if not call.auth_user then
    log.warn("outside call to " .. number .. " from an unauthenticated caller")
    return call:reject(403, "Forbidden")
  end
  log.warn("outside call to " .. number .. ": no trunk is configured yet: refusing with 503")
  call:reject(503, "No Trunk Available")
end

-- Rings an extension as its owner set it up: do-not-disturb, forward always, ring,
-- then forward when busy or not answered, then voicemail. `seen` stops forward loops.
local function ring_extension(call, ext, seen)
  if seen[ext] then
    log.warn("forwarding loop through " .. ext)
    return voicemail(call, ext, "forward-loop")
  end
  seen[ext] = true
  local settings = features.settings(ext)
  if settings.dnd then
    return voicemail(call, ext, "dnd")
  end
  if settings.always then
    call.vars.forwarded_from = ext
    return route_number(call, settings.always, seen)
  end
  local r = call:dial{ ext, timeout = office.ring_seconds }
  if r.answered or r.status == "cancelled" then
    return
  end
  if r.status == "not-found" then
    return call:reject(404, "No Such Extension")
  end
  local forward = (r.status == "busy" and settings.busy)
    or (r.status == "no-answer" and settings.no_answer)
  if forward then
    call.vars.forwarded_from = ext
    return route_number(call, forward, seen)
  end
  voicemail(call, ext, r.status)
end

local function ring_group(call, number, group, seen)
  call.vars.group = group.name
  if not time.is_open(office.hours) then
    call.vars.after_hours = true
    if group.after_hours then
      return route_number(call, group.after_hours, seen)
    end
    return voicemail(call, number, "closed")
  end
  local r = call:dial{
    group.members,
    strategy = group.strategy,
    timeout = group.timeout,
    caller_id = { name = (call.from.display or call.from.user) .. " (" .. group.name .. ")" },
  }
  if r.answered or r.status == "cancelled" then
    return
  end
  voicemail(call, number, r.status)
end

-- *43: answers and says the caller's number, to check that a phone hears the PBX.
local function audio_test(call)
  call.vars.route = "audio-test"
  call:answer()
  call:play("extension")
  local number = call.from.user
  if number:match("^[%d*#]+$") then
    call:say_digits(number)
  end
  call:hangup()
end

local function is_extension(number)
  return number:match("^1%d%d%d$") ~= nil
end

-- Whether a number is somewhere calls can go (for forward targets).
local function is_routable(number)
  return is_extension(number) or office.groups[number] ~= nil or number:match("^9%d%d%d+$") ~= nil
end

function route_number(call, number, seen)
  if number == "0" then
    number = office.reception
  end
  if is_extension(number) then
    call.vars.route = call.vars.route or "extension"
    return ring_extension(call, number, seen)
  end
  local group = office.groups[number]
  if group then
    call.vars.route = call.vars.route or "group"
    return ring_group(call, number, group, seen)
  end
  local outside = number:match("^9(%d%d%d+)$")
  if outside then
    return outside_line(call, outside)
  end
  call:reject(404, "Not Found")
end

function route(call)
  local dest = call.to.user
  if dest == "*43" then
    return audio_test(call)
  end
  if features.handle(call, dest, is_routable) then
    return
  end
  route_number(call, dest, {})
end
