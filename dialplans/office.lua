-- The office: opening hours, how long phones ring, and the groups. Edit this file to
-- fit your office; default.lua reads it with require "office".
return {
  -- When the groups take calls. Keys are days ("mon") or ranges of days ("mon-thu");
  -- values a {"from", "to"} range or a list of ranges. `closed` lists public holidays.
  -- Add zone = "Europe/Berlin" when the server's clock runs in another time zone.
  hours = {
    ["mon-thu"] = { "08:30", "17:30" },
    fri = { "08:30", "15:00" },
    closed = { "2025-12-25", "2025-12-26", "2026-01-01" },
  },

  -- Seconds an extension rings before its no-answer forward or voicemail takes over.
  ring_seconds = 20,

  -- Dialing "0" reaches this group.
  reception = "600",

  -- Ring groups. strategy "parallel" rings every member at once; "sequential" hunts
  -- through them in order, `timeout` seconds each. Out of hours a group's calls go to
  -- `after_hours` (another number) or, without one, to the group's voicemail.
  groups = {
    ["600"] = {
      name = "Reception",
      members = { "1000", "1001", "1002" },
      strategy = "parallel",
      timeout = 25,
    },
    ["601"] = {
      name = "Support",
      members = { "1001", "1002", "1003" },
      strategy = "sequential",
      timeout = 15,
      after_hours = "1010", -- the support on-call phone
    },
  },
}
