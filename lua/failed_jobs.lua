-- failed_jobs: a page of the failed store, the latest failure first.
--
-- KEYS[1]  failed_jobs: hash, job id -> record (step failed_store)
-- KEYS[2]  failed_index: sorted set of the same ids, scored by when they failed
-- ARGV[1]  offset: how many of the latest to skip
-- ARGV[2]  limit: the most to return (1 or more)
-- Returns: a flat array of job id, record pairs.
-- Read only.

local failed_jobs, failed_index = KEYS[1], KEYS[2]
local offset, limit = tonumber(ARGV[1]), tonumber(ARGV[2])

local result = {}
for _, id in ipairs(redis.call("ZREVRANGE", failed_index, offset, offset + limit - 1)) do
    local record = redis.call("HGET", failed_jobs, id)
    if record then
        table.insert(result, id)
        table.insert(result, record)
    end
end
return result
