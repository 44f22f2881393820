-- The reception ring group (600, also 0) and the support hunt group (601), and office
-- hours. 2025-01-06 is a Monday.

case "reception rings everyone at once and the first to answer wins" {
  from = "1003", display = "Dana", to = "600", at = "2025-01-06 10:00",
  targets = {
    ["1000"] = { answer_after = 8 },
    ["1001"] = { answer_after = 3 },
    ["1002"] = "busy",
  },
  expect = {
    dials = { { "1000", "1001", "1002", strategy = "parallel", timeout = 25,
                caller_id = { name = "Dana (Reception)" } } },
    bridged = "1001",
    vars = { route = "group", group = "Reception" },
  },
}

case "dialing 0 reaches reception" {
  from = "1003", to = "0",
  targets = { ["1000"] = "answer" },
  expect = { dialed = { "1000", "1001", "1002" }, bridged = "1000" },
}

case "nobody at reception answers: its voicemail" {
  from = "1003", to = "600",
  targets = { ["1000"] = "no-answer", ["1001"] = "busy" },
  expect = { rejected = 480, vars = { voicemail = "600", voicemail_reason = "no-answer" } },
}

case "support hunts through its members in order until one answers" {
  from = "1000", to = "601", at = "2025-01-07 16:00",
  targets = { ["1001"] = "busy", ["1002"] = "no-answer", ["1003"] = { answer_after = 2 } },
  expect = {
    dials = { { "1001", "1002", "1003", strategy = "sequential", timeout = 15 } },
    dialed = { "1001", "1002", "1003" },
    bridged = "1003",
  },
}

case "support stops hunting at the first answer" {
  from = "1000", to = "601",
  targets = { ["1001"] = "answer", ["1002"] = "answer" },
  expect = { dialed = { "1001" }, bridged = "1001" },
}

case "reception after hours goes to its voicemail without ringing anyone" {
  from = "+4930123456", auth_user = false, to = "600", at = "2025-01-06 18:00",
  expect = {
    dialed = {},
    rejected = 480,
    vars = { after_hours = true, voicemail = "600", voicemail_reason = "closed" },
  },
}

case "support after hours goes to the on-call phone" {
  from = "1000", to = "601", at = "2025-01-11 11:00",
  targets = { ["1010"] = "answer" },
  expect = { dialed = { "1010" }, bridged = "1010", vars = { after_hours = true } },
}

case "friday closes early" {
  from = "1003", to = "600", at = "2025-01-10 15:30",
  expect = { dialed = {}, vars = { after_hours = true } },
}

case "friday before closing is open" {
  from = "1003", to = "600", at = "2025-01-10 14:59",
  targets = { ["1002"] = "answer" },
  expect = { bridged = "1002" },
}

case "public holidays are closed" {
  from = "1003", to = "600", at = "2025-12-25 10:00",
  expect = { dialed = {}, vars = { after_hours = true } },
}

case "office hours are read in the server's time zone" {
  -- 08:30 in Berlin is 07:30 UTC, before opening time were the clock read in UTC.
  from = "1003", to = "600", at = "2025-01-06 08:30", zone = "Europe/Berlin",
  targets = { ["1000"] = "answer" },
  expect = { bridged = "1000" },
}
