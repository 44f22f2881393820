-- Feature codes (forwarding, do-not-disturb) and how they change routing.

case "*21 sets forward-always for the caller's own extension" {
  from = "1001", to = "*211002",
  expect = {
    answered = true, hung_up = true, dialed = {},
    kv = { forward_always = { ["1001"] = "1002" } },
    vars = { route = "feature" },
  },
}

case "#21 clears forward-always" {
  from = "1001", to = "#21",
  kv = { forward_always = { ["1001"] = "1002" } },
  expect = { hung_up = true, kv = { forward_always = { ["1001"] = false } } },
}

case "*61 and *67 set the no-answer and busy forwards" {
  from = "1001", to = "*61601",
  expect = { hung_up = true, kv = { forward_no_answer = { ["1001"] = "601" }, forward_busy = { ["1001"] = false } } },
}

case "*67 sets forward-on-busy to an outside number" {
  from = "1002", to = "*6790301234",
  expect = { hung_up = true, kv = { forward_busy = { ["1002"] = "90301234" } } },
}

case "a forward to somewhere that does not exist is refused" {
  from = "1001", to = "*215555",
  expect = { rejected = 484, kv = { forward_always = { ["1001"] = false } } },
}

case "an extension cannot forward to itself" {
  from = "1001", to = "*211001",
  expect = { rejected = 484 },
}

case "unknown feature codes are refused" {
  from = "1001", to = "*99",
  expect = { rejected = 484 },
}

case "feature codes need an authenticated extension" {
  from = "1001", auth_user = false, to = "*211002",
  expect = { rejected = 403, kv = { forward_always = { ["1001"] = false } } },
}

case "a call to a forwarded extension rings the forward target instead" {
  from = "1000", to = "1001",
  kv = { forward_always = { ["1001"] = "1002" } },
  targets = { ["1002"] = "answer" },
  expect = { dialed = { "1002" }, bridged = "1002", vars = { forwarded_from = "1001" } },
}

case "forward on busy" {
  from = "1000", to = "1001",
  kv = { forward_busy = { ["1001"] = "1003" } },
  targets = { ["1001"] = "busy", ["1003"] = "answer" },
  expect = { dialed = { "1001", "1003" }, bridged = "1003" },
}

case "forward on no answer rings the extension first" {
  from = "1000", to = "1001",
  kv = { forward_no_answer = { ["1001"] = "601" }, forward_busy = { ["1001"] = "1003" } },
  targets = { ["1001"] = "no-answer", ["1002"] = "answer" },
  expect = {
    dials = { { "1001", timeout = 20 }, { "1001", "1002", "1003", strategy = "sequential" } },
    bridged = "1002",
  },
}

case "forwarding loops end in voicemail" {
  from = "1000", to = "1001",
  kv = { forward_always = { ["1001"] = "1002", ["1002"] = "1001" } },
  expect = { dialed = {}, rejected = 480, vars = { voicemail_reason = "forward-loop" } },
}

case "*78 turns do-not-disturb on and *79 off" {
  from = "1002", to = "*78",
  expect = { hung_up = true, kv = { dnd = { ["1002"] = "on" } } },
}

case "*79 turns do-not-disturb off" {
  from = "1002", to = "*79",
  kv = { dnd = { ["1002"] = "on" } },
  expect = { hung_up = true, kv = { dnd = { ["1002"] = false } } },
}

case "do-not-disturb sends calls to voicemail without ringing" {
  from = "1000", to = "1002",
  kv = { dnd = { ["1002"] = "on" } },
  targets = { ["1002"] = "answer" },
  expect = { dialed = {}, rejected = 480, vars = { voicemail = "1002", voicemail_reason = "dnd" } },
}
