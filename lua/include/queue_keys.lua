-- The keys of a queue's hand-out (the table step hand_out takes), made from the
-- namespace's key prefix "spinach:{<namespace>}:" and the queue's name, as
-- spinach/brokers/redis/keys.py names them; a script reaching another queue than its
-- own keys name uses it (all of a namespace's keys share one Redis Cluster slot).
local function queue_keys(key_prefix, queue)
    return {
        ready = key_prefix .. "queue:" .. queue,
        parked = key_prefix .. "parked:" .. queue,
        payloads = key_prefix .. "payloads",
        running = key_prefix .. "running",
        limits = key_prefix .. "limits",
        in_flight = key_prefix .. "in_flight",
        failed = key_prefix .. "failed",
        calls = key_prefix .. "calls",
        cancelled = key_prefix .. "cancelled:" .. queue,
        unique = key_prefix .. "unique",
        rate_limits = key_prefix .. "rate_limits",
        rate_wake = key_prefix .. "rate_wake",
        activity = key_prefix .. "activity",
    }
end
