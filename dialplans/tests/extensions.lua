-- Calls to extensions 1000-1999.

case "an extension rings and is answered" {
  from = "1001", to = "1002",
  targets = { ["1002"] = { answer_after = 4, talk = 90 } },
  expect = {
    dials = { { "1002", timeout = 20 } },
    bridged = "1002",
    vars = { route = "extension" },
  },
}

case "a busy extension goes to voicemail" {
  from = "1001", to = "1002",
  targets = { ["1002"] = "busy" },
  expect = {
    dialed = { "1002" },
    rejected = 480, reason = "Voicemail Unavailable",
    vars = { voicemail = "1002", voicemail_reason = "busy" },
    logged = { "voicemail for 1002 (busy) is not available yet" },
  },
}

case "an unanswered extension goes to voicemail after ringing" {
  from = "1001", to = "1003",
  targets = { ["1003"] = "no-answer" },
  expect = {
    dialed = { "1003" },
    rejected = 480,
    vars = { voicemail = "1003", voicemail_reason = "no-answer" },
  },
}

case "an extension with no phone registered goes to voicemail" {
  from = "1001", to = "1004",
  expect = {
    dialed = { "1004" },
    rejected = 480,
    vars = { voicemail_reason = "unavailable" },
  },
}

case "an extension that does not exist is not found" {
  from = "1001", to = "1999",
  targets = { ["1999"] = "not-found" },
  expect = { dialed = { "1999" }, rejected = 404 },
}

case "a number outside the plan is not found" {
  from = "1001", to = "2000",
  expect = { dialed = {}, rejected = 404 },
}

case "a caller who hangs up while it rings ends the call quietly" {
  from = "1001", to = "1002",
  hangup_after = 5,
  targets = { ["1002"] = "no-answer" },
  expect = { dialed = { "1002" }, caller_hung_up = true },
}

case "outside callers reach extensions too" {
  from = "+4930123456", to = "1000", auth_user = false,
  targets = { ["1000"] = "answer" },
  expect = { bridged = "1000" },
}
