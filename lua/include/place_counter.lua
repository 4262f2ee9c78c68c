-- The place counter (seq) gives each ready entry its place in line. One that is not
-- a number (no Spinach code writes one) must fail the call before any write: a write
-- before it would strand jobs. Raises the error the call then replies with (a string:
-- Redis before 7.0 does not take a table there).
local function not_a_counter(seq)
    error("key " .. seq .. " is not a counter: delete it, or SET it to a number")
end

local function check_place_counter(seq)
    local counter = redis.call("GET", seq)
    if counter and not tonumber(counter) then
        not_a_counter(seq)
    end
end

-- Reserve n places in line at once: returns the place before the first of them, or
-- the error reply of the INCRBY (out of memory, a read-only replica, a wrong type), for
-- the script to return as it is: its code (OOM, READONLY...) is kept, which an error
-- raised again would lose. A counter that is not a number raises check_place_counter's
-- error. Called before any other write: either way, the call fails with nothing written.
local function reserve_places(seq, n)
    local last = redis.pcall("INCRBY", seq, n)
    if type(last) == "table" and last.err then
        if string.find(last.err, "not an integer", 1, true) then
            not_a_counter(seq)
        end
        return last
    end
    return last - n
end
