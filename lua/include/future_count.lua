-- future_counts: a hash, queue -> how many jobs of the future set are of that queue, kept
-- by every script that adds to or removes from the future set, so that inspect need not
-- read the whole set. A count that reaches 0 (or less, after jobs that a Spinach without
-- the counts put in the future set) is removed.

-- Add n (negative: remove) to the count of queue.
local function count_future(future_counts, queue, n)
    if redis.call("HINCRBY", future_counts, queue, n) <= 0 then
        redis.call("HDEL", future_counts, queue)
    end
end
