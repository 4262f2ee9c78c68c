-- purge_failed: remove jobs from the failed store.
--
-- KEYS[1]  failed_jobs: hash, job id -> record (step failed_store)
-- KEYS[2]  failed_index: sorted set of the same ids, scored by when they failed
-- ARGV[1]  "ids": remove the jobs whose ids follow (ARGV[2..]);
--          "before": remove the jobs that failed before ARGV[2] (POSIX seconds), at most
--          ARGV[3] of them, the oldest first
-- Returns: the number of jobs removed (for "before", call again while it is the most
--          asked for: a call removes a bounded number, not to block Redis).
-- Safe to retry.

--- @include "failed_store"

local failed_jobs, failed_index = KEYS[1], KEYS[2]
local mode = ARGV[1]

local ids
if mode == "ids" then
    ids = {}
    for j = 2, #ARGV do
        table.insert(ids, ARGV[j])
    end
else
    ids = redis.call("ZRANGEBYSCORE", failed_index, "-inf", "(" .. ARGV[2], "LIMIT", 0, tonumber(ARGV[3]))
end
local removed = 0
for _, id in ipairs(ids) do
    if remove_failed(failed_jobs, failed_index, id) then
        removed = removed + 1
    end
end
return removed
