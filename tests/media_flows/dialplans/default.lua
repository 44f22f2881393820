-- The dialplan of tests/media_flows.rs: one number for each media flow it tests, and
-- the extensions rung as dialled.
--
--   701, 702  answers, reads up to 4 keys (# ends early) and dials what was read
--             (the test presses them as RFC 4733 events on 701, in-band on 702)
--   743       says "1 0 0 2" and hangs up
--   744       records a message to t/msg.wav after a beep, until # (or 20 s), and
--             hangs up
--   1xxx      rings that extension

local function dial_the_keys(call)
  call:answer()
  local number = call:read_digits{ max = 4, terminators = "#" }
  log.info("keys read: " .. number)
  call:dial{ number }
end

function route(call)
  local dest = call.to.user
  if dest == "701" or dest == "702" then
    return dial_the_keys(call)
  end
  if dest == "743" then
    call:answer()
    call:say_digits("1002")
    return call:hangup()
  end
  if dest == "744" then
    call:answer()
    local r = call:record{ file = "t/msg.wav", beep = true, terminators = "#", max_secs = 20 }
    log.info("recorded " .. r.duration .. " s, stopped by " .. r.reason)
    return call:hangup()
  end
  if dest:match("^1%d%d%d$") then
    return call:dial{ dest }
  end
  call:reject(404)
end
