-- The place counter (seq) gives each ready entry its place in line. One that is not
-- a number (no Spinach code writes one) must fail the call before any write: a write
-- before it would strand jobs. Raises the error the call then replies with (a string:
-- Redis before 7.0 does not take a table there).
local function check_place_counter(seq)
    local counter = redis.call("GET", seq)
    if counter and not tonumber(counter) then
        error("key " .. seq .. " is not a counter: delete it, or SET it to a number")
    end
end
