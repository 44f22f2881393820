-- Prompts: the *43 audio test.

case "*43 says the caller's extension" {
  from = "1001", to = "*43",
  expect = {
    answered = true, hung_up = true, dialed = {},
    played = { "extension", "digits/1", "digits/0", "digits/0", "digits/1" },
    vars = { route = "audio-test" },
  },
}

case "*43 says only \"extension\" to a caller whose address has no number" {
  from = "alice", auth_user = false, to = "*43",
  expect = { hung_up = true, played = { "extension" } },
}

case "a caller who hangs up during *43 just leaves" {
  from = "1002", to = "*43", hangup_after = 1.2,
  expect = { caller_hung_up = true, played = { "extension", "digits/1" } },
}
