-- The place counter (seq) gives each ready entry its place in line. One that is not
-- a number (no Spinach code writes one) must fail the call before any write: a write
-- before it would strand jobs. Returns an error reply to return, or nil.
local function check_place_counter(seq)
    local counter = redis.call("GET", seq)
    if counter and not tonumber(counter) then
        return redis.error_reply("key " .. seq .. " is not a counter: delete it, or SET it to a number")
    end
    return nil
end
