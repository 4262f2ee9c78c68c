-- enqueue_jobs: store jobs, ready ones at the tail of their queue, future ones aside until due.
--
-- KEYS[1]       payloads: hash, job id -> stored job, every one (see spinach/brokers/redis/payload.py)
-- KEYS[2]       seq: counter giving each ready entry its place in line
-- KEYS[3]       queues: set of the namespace's queue names
-- KEYS[4]       marker of this call: a string key named after an id unique to the call
--               (the same when the call is sent again)
-- KEYS[5]       future: sorted set of the future jobs of every queue, scored by at
-- KEYS[6]       unique: the unique keys of waiting jobs (step unique_key)
-- KEYS[7]       running: hash, job id -> its record (step running_record)
-- KEYS[8]       future_counts: hash, queue -> its jobs in the future set (step future_count)
-- KEYS[8+i]     ready list of the i-th queue of this call (i = 1..Q)
-- ARGV[1]       the call's numbers, each on a line of its own (one argument is cheaper
--               for the client to send than four):
--               now, POSIX seconds;
--               seconds the marker is kept, from the server's time or, when that
--               is later, from the call's now; 0: no marker;
--               with a marker: seconds after now (by the server's clock) past which
--               this call is late and stores nothing; empty: no such check (a test
--               clock), and the marker is kept its seconds from the server's now;
--               Q, the number of queues in this call;
--               the prefix of the namespace's keys, "spinach:{<namespace>}:" (the
--               keys of a queue's hand-out are made from it, step queue_keys)
-- ARGV[2]       notification channel
-- ARGV[3..2+Q]  the queue names, in the order of their keys
-- ARGV[3+Q..]   the jobs, packed in one string (one argument is much cheaper for the
--               client to send than five per job), or in several when they are too many
--               bytes for one, each holding whole jobs; for each job: its id (36
--               characters), then "<queue number> <at> <bytes of task name> <bytes of
--               payload>\n" (with " <unique key>" before the newline for a job of a
--               unique task), then the task name and the payload
-- Entries: see the steps ready_entry and future_member.
-- Ready jobs go to a worker waiting for jobs of their queue, when one is (see
-- wait_for_jobs): the one that started waiting last, whose wait is not over, is handed
-- the oldest jobs of the queue that can start (step hand_out, as its fetch would), in
-- its inbox; it reads them there, or its next fetch returns them. Idle workers are
-- told of the jobs left (and of future jobs) on the notification channel.
-- A job with a unique key is not stored while a waiting job holds that key (stored and not
-- handed out yet; see step unique_key): the reply names that job instead. Else it holds
-- the key once stored.
-- Returns: the number of jobs stored; -1 when the call came late (see below). When jobs
--          were not stored for their unique key: {stored, i, id, j, id, ...}, each job
--          (its number in the call, from 1) followed by the id of the job holding its key.
-- Safe to retry: a job whose id is already stored is skipped; with a marker, a call sent
-- again (after a lost reply) stores nothing, even if its jobs already ran and were removed,
-- and replies with the unique jobs of the first run, which the marker keeps.
-- The marker needs to live only as long as the call can still be sent again: a call
-- that runs later than its "late" seconds after the time it was built with (now) stores
-- nothing, so the marker is kept until a little later than that, its seconds after now
-- (and at least its seconds), not for as long as the jobs may wait. Both times count
-- from now, so the marker outlives every run the script accepts even when the caller's
-- clock is ahead.

--- @include "place_counter"
--- @include "ready_entry"
--- @include "future_member"
--- @include "unique_key"
--- @include "future_count"

-- Milliseconds a worker's inbox is kept: it reads it at once, or never (it stopped
-- waiting, and its next fetch returns the jobs; or it died, and its jobs are taken over).
local INBOX_MS = 30000
-- Most registrations looked at per queue and call: those whose worker fetched since
-- are dropped on the way.
local MOST_LOOKS = 10

local payloads, seq, queues, marker, future_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local unique, running, future_counts = KEYS[6], KEYS[7], KEYS[8]
local now_text, marker_seconds, late_after, queue_count, key_prefix =
    string.match(ARGV[1], "^([^\n]+)\n(%d+)\n([^\n]*)\n(%d+)\n(.*)$")
local now = tonumber(now_text)
marker_seconds, queue_count = tonumber(marker_seconds), tonumber(queue_count)
local channel = ARGV[2]
local marker_ms

-- The jobs read first, before any command, as offsets in their part (no copy of
-- their bytes yet): {part, id start, queue number, at, header end, name end, end,
-- unique key or ""} each; and how many are due, to reserve their places in line.
local jobs, due = {}, 0
for part = 3 + queue_count, #ARGV do
    local packed = ARGV[part]
    local position = 1
    while position <= #packed do
        local _, header_end, queue_number, at, name_bytes, payload_bytes, key =
            string.find(packed, "^(%d+) ([^ ]+) (%d+) (%d+) ?([^\n]*)\n", position + 36)
        at = tonumber(at)
        local name_end = header_end + tonumber(name_bytes)
        local job_end = name_end + tonumber(payload_bytes)
        table.insert(jobs, {part, position, tonumber(queue_number), at, header_end, name_end, job_end, key})
        position = job_end + 1
        if at <= now then
            due = due + 1
        end
    end
end

-- A call that came late stores nothing, and writes nothing: checked first.
local server_now
if marker_seconds > 0 and late_after ~= "" then
    local t = redis.call("TIME")
    server_now = tonumber(t[1]) + tonumber(t[2]) / 1000000
    if server_now > now + tonumber(late_after) then
        return -1
    end
end

-- The first write: a place counter that is not a number fails the call here, with
-- nothing written (see step place_counter). Places of jobs not stored in the end are
-- left unused: places only order the entries.
local place = 0
if due > 0 then
    place = reserve_places(seq, due)
    if type(place) == "table" then
        return place
    end
end

if marker_seconds > 0 then
    local keep_ms = marker_seconds * 1000
    if server_now then
        keep_ms = math.max(keep_ms, math.ceil((now + marker_seconds - server_now) * 1000))
    end
    if not redis.call("SET", marker, "1", "NX", "PX", keep_ms) then
        local first = redis.call("GET", marker)
        if first and first ~= "1" then
            local reply = cjson.decode(first)
            table.insert(reply, 1, 0)
            return reply
        end
        return 0
    end
    marker_ms = keep_ms
end
for i = 1, queue_count do
    redis.call("SADD", queues, ARGV[2 + i])
end

-- Ready entries per queue number; future scores and members.
local ready, future, future_by_queue = {}, {}, {}
local stored, held = 0, {}
for job_number, job in ipairs(jobs) do
    local part, start, queue_number, at, header_end, name_end, job_end, key = unpack(job)
    local packed = ARGV[part]
    local id = string.sub(packed, start, start + 35)
    local holder = key ~= "" and unique_holder(unique, payloads, running, key)
    if holder then
        table.insert(held, job_number)
        table.insert(held, holder)
    elseif redis.call("HSETNX", payloads, id, string.sub(packed, name_end + 1, job_end)) == 1 then
        stored = stored + 1
        if key ~= "" then
            redis.call("HSET", unique, key, id, id, key)
        end
        local task_name = string.sub(packed, header_end + 1, name_end)
        if at <= now then
            place = place + 1
            ready[queue_number] = ready[queue_number] or {}
            table.insert(ready[queue_number], ready_entry(place, id, task_name))
        else
            table.insert(future, at)
            table.insert(future, future_member(id, ARGV[2 + queue_number], task_name))
            future_by_queue[queue_number] = (future_by_queue[queue_number] or 0) + 1
        end
    end
end

-- The steps hand_out and queue_keys, made when a call hands jobs out, only: making
-- them costs a call about 5 microseconds of Redis time.
local function hand_out_steps()
--- @include "hand_out"
--- @include "queue_keys"
    return hand_out, queue_keys
end

-- Whether the ready jobs of a queue went to a worker waiting for them (see
-- wait_for_jobs) and none is left in line.
local function hand_to_waiting(queue, ready_key)
    local waiting = key_prefix .. "waiting:" .. queue
    for _ = 1, MOST_LOOKS do
        local last = redis.call("ZRANGE", waiting, -1, -1, "WITHSCORES")
        if #last == 0 then
            return false
        end
        if tonumber(last[2]) < now then
            -- Every wait registered is over.
            redis.call("DEL", waiting)
            return false
        end
        local member = last[1]
        redis.call("ZREM", waiting, member)
        local token_prefix, max_jobs = string.match(member, "^(.*:)(%d+)$")
        local worker = string.sub(token_prefix, 1, 32)
        -- Still waiting: no fetch, end or takeover of the worker since.
        if redis.call("HGET", key_prefix .. "calls", worker) == token_prefix .. "\nw" then
            local hand_out, queue_keys = hand_out_steps()
            local keys = queue_keys(key_prefix, queue)
            local more, jobs = hand_out(keys, tonumber(max_jobs), token_prefix, now_text, key_prefix)
            if #jobs == 0 then
                -- None can start now (limits): the worker goes on waiting.
                redis.call("HSET", keys.calls, worker, token_prefix .. "\nw")
                redis.call("ZADD", waiting, last[2], member)
                return false
            end
            local inbox = key_prefix .. "inbox:" .. worker
            redis.call("LPUSH", inbox, token_prefix .. "\n" .. more .. table.concat(jobs))
            redis.call("PEXPIRE", inbox, INBOX_MS)
            return redis.call("LLEN", ready_key) == 0
        end
    end
    return false
end

-- Variadic commands, in chunks that Lua's unpack accepts.
local chunk = 1000
local notify = #future > 0
for queue_number, entries in pairs(ready) do
    for first = 1, #entries, chunk do
        redis.call("RPUSH", KEYS[8 + queue_number], unpack(entries, first, math.min(first + chunk - 1, #entries)))
    end
    if not hand_to_waiting(ARGV[2 + queue_number], KEYS[8 + queue_number]) then
        notify = true
    end
end
for first = 1, #future, 2 * chunk do
    redis.call("ZADD", future_key, unpack(future, first, math.min(first + 2 * chunk - 1, #future)))
end
for queue_number, n in pairs(future_by_queue) do
    count_future(future_counts, ARGV[2 + queue_number], n)
end
if notify then
    -- Ready jobs can start; a future one may be due before idle engines look again.
    redis.call("PUBLISH", channel, "stored")
end
if #held == 0 then
    return stored
end
if marker_ms then
    -- A call sent again replies as this one.
    redis.call("SET", marker, cjson.encode(held), "PX", marker_ms)
end
-- Not unpack(): it fails beyond a few thousand values, after the jobs were stored.
table.insert(held, 1, stored)
return held
