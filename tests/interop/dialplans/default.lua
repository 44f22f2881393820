-- The interop suite's dialplan for the busy test: ring the extension dialled and, when
-- nobody answers, give the caller the callee's own final status (486 stays 486). The
-- shipped plan sends such calls to voicemail, which answers 480 until voicemail exists.
function route(call)
  local r = call:dial{ call.to.user, timeout = 20 }
  if r.answered or r.status == "cancelled" then
    return
  end
  call:reject(r.sip_code or 480)
end
