-- The outside-line prefix 9, ready for trunks (a later release).

case "9 + a number is refused with 503 until trunks exist" {
  from = "1001", to = "903012345678",
  expect = {
    dialed = {}, rejected = 503, reason = "No Trunk Available",
    vars = { route = "trunk" },
    logged = { "outside call to 03012345678: no trunk is configured yet" },
  },
}

case "unauthenticated callers cannot use the outside line" {
  from = "+4930123456", auth_user = false, to = "903012345678",
  expect = { rejected = 403 },
}

case "a forward to an outside number reaches the outside line" {
  from = "1000", to = "1002",
  kv = { forward_busy = { ["1002"] = "90301234" } },
  targets = { ["1002"] = "busy" },
  expect = { dialed = { "1002" }, rejected = 503, vars = { forwarded_from = "1002" } },
}
