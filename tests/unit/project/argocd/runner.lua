-- Runs an Argo CD health script the way Argo CD does: the resource as the global `obj`, the script's return value
-- as the health. Usage: lua5.1 runner.lua HEALTH_SCRIPT OBJECT_FILE (a Lua file that returns the object table).
-- Prints the status on the first line and the message after it.
local script, object = arg[1], arg[2]
obj = dofile(object)
local hs = assert(loadfile(script))()
assert(type(hs) == "table", "the health script must return a table")
io.write(tostring(hs.status), "\n", tostring(hs.message or ""))
