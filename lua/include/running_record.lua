-- The record of a running job in the running hash (job id -> record): the token it was
-- handed out with (starting with its worker's 32-character id), a space, when it was
-- handed out (POSIX seconds, no space in it; left out when not known), a space, the
-- task name.
local function running_record(token, started, task_name)
    if started == "" then
        return token .. " " .. task_name
    end
    return token .. " " .. started .. " " .. task_name
end

-- Whether record (false when the job has none) is of a job running under token.
local function runs_under(record, token)
    return record and string.sub(record, 1, #token + 1) == token .. " " or false
end

-- token, task name, start time (text) of a record; nil for a record without its
-- separator (no Spinach code writes one). A record written before start times were
-- kept ("token task_name") gives the start time "".
local function parse_running(record)
    local space = string.find(record, " ", 1, true)
    if not space then
        return nil
    end
    local token, rest = string.sub(record, 1, space - 1), string.sub(record, space + 1)
    local started, task_name = string.match(rest, "^(%d+%.?%d*) (.*)$")
    if started then
        return token, task_name, started
    end
    return token, rest, ""
end
