-- Whether ARGV[first .. first + count - 1] are exactly the members of the set queues
-- (the namespace's queue names). A caller passes the keys of every queue it knows of;
-- when a queue was created since it read the set, the script must change nothing and
-- tell it to call again with all of them.
local function all_queues_given(queues, first, count)
    if redis.call("SCARD", queues) ~= count then
        return false
    end
    for i = first, first + count - 1 do
        if redis.call("SISMEMBER", queues, ARGV[i]) == 0 then
            return false
        end
    end
    return true
end
