"""The Lua scripts the user store runs inside Redis, so each write is one atomic step.

Why Lua and not MULTI/EXEC: an idempotent event write must *read* (has this ``event_id``
been stored?) and write in the same atomic step, which a transaction cannot do without
WATCH retries.  A script runs to completion with no other command in between, is
propagated to the append-only file as one unit and, like MULTI/EXEC, is fsynced before
its reply when ``appendfsync always``.

Seen state is a sorted set per user, scored by event time, so "keep the newest N" is one
ZREMRANGEBYRANK.  A user whose seen state is still a plain SET (written by a gateway
before this layout, with training history in it) is converted in place, at score 0 (older
than any event), the first time a script touches it.
"""
from __future__ import annotations

# ZADD members at score 0 in chunks (unpack's limit), to convert a legacy SET to the sorted set.
_AS_ZSET = """
local function zadd_zero(key, members)
  for i = 1, #members, 1000 do
    local args = {}
    for j = i, math.min(i + 999, #members) do
      args[#args + 1] = 0
      args[#args + 1] = members[j]
    end
    redis.call('ZADD', key, unpack(args))
  end
end

local function as_zset(key)
  if redis.call('TYPE', key).ok ~= 'set' then return end
  local members = redis.call('SMEMBERS', key)
  redis.call('DEL', key)
  zadd_zero(key, members)
end
"""

# KEYS[1] = the stream; per event i (0-based): KEYS[2+3i] seen, KEYS[3+3i] state, KEYS[4+3i] dedupe key.
# ARGV[1] = now, ARGV[2] = dedupe retention (s), ARGV[3] = seen bound;
# per event ARGV[4+8i ..] = user, item, rating, ts, has_id ('1'/'0'), event_id, user_fields, item_fields
# (the side fields as compact JSON, '' when the event carries none: then no stream field is written).
# Returns, per event, its stream id: the new one, or for a duplicate the one stored first.
EVENT_ARGS = 8
APPEND_EVENTS = _AS_ZSET + """
local now, ttl, bound = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = (#ARGV - 3) / 8
local ids = {}
for i = 0, n - 1 do
  local a = 4 + 8 * i
  local user, item, rating, ts = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local has_id, event_id = ARGV[a + 4], ARGV[a + 5]
  local user_fields, item_fields = ARGV[a + 6], ARGV[a + 7]
  local seen, state, dedupe = KEYS[2 + 3 * i], KEYS[3 + 3 * i], KEYS[4 + 3 * i]
  local prior = false
  if has_id == '1' then prior = redis.call('GET', dedupe) end
  if prior then
    ids[#ids + 1] = prior
  else
    local fields = {'user_id', user, 'item_id', item, 'rating', rating, 'ts', ts, 'received', now}
    if has_id == '1' then
      fields[#fields + 1] = 'event_id'
      fields[#fields + 1] = event_id
    end
    if user_fields ~= '' then
      fields[#fields + 1] = 'user_fields'
      fields[#fields + 1] = user_fields
    end
    if item_fields ~= '' then
      fields[#fields + 1] = 'item_fields'
      fields[#fields + 1] = item_fields
    end
    local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
    if has_id == '1' then redis.call('SET', dedupe, id, 'EX', ttl) end
    as_zset(seen)
    redis.call('ZADD', seen, 'GT', ts, item)  -- GT adds new members and never moves one back in time
    redis.call('ZREMRANGEBYRANK', seen, 0, -bound - 1)
    redis.call('HSETNX', state, 'first_seen', now)
    -- every change to the seen set gives it a new version: the request path's cache key (UserStore.read_user)
    redis.call('HSET', state, 'last_ts', ts, 'seen_version', id)
    redis.call('HINCRBY', state, 'events', 1)
    ids[#ids + 1] = id
  end
end
return ids
"""

# The seen set with its version, read atomically: KEYS[1] = the user's seen set, KEYS[2] = the
# user's state record (one slot); ARGV[1] = seen bound.  Returns {seen_version, events, members}.
# Used on a Redis Cluster, where a pipeline does not keep its order: redis-py re-sends a command
# redirected (ASK/MOVED, a slot mid-migration) after the rest, so a version could be read after
# the members it is then cached with.  A plain Redis keeps a pipeline's order: no script there.
READ_SEEN = """
local version, events = false, false
if redis.call('TYPE', KEYS[2]).ok == 'hash' then  -- a state key of another type: no version
  version = redis.call('HGET', KEYS[2], 'seen_version')
  events = redis.call('HGET', KEYS[2], 'events')
end
local bound = tonumber(ARGV[1])
local members
if redis.call('TYPE', KEYS[1]).ok == 'set' then
  members = redis.call('SRANDMEMBER', KEYS[1], bound)
  version = false  -- an unconverted legacy SET has no version of its own
else
  members = redis.call('ZRANGE', KEYS[1], -bound, -1)
end
return {version, events, members}
"""

# The smallest stream id some consumer group of KEYS[1] still needs, and XTRIM MINID to it, in one
# atomic step (no group can deliver or be created in between): per group, its oldest pending id
# (XPENDING) or, when nothing is pending, the id right after its last-delivered-id.  Nothing
# below that is unacknowledged by any group, so nothing unacknowledged is ever trimmed.
# A stream without groups is left alone (nobody has said what it still needs).
# Returns {entries trimmed, the MINID used or '' when nothing was trimmed}.
TRIM_ACKNOWLEDGED = """
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {0, ''} end
local function parse(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
local best_ms, best_seq = nil, nil
local groups = redis.call('XINFO', 'GROUPS', key)
for _, group in ipairs(groups) do
  local info = {}
  for j = 1, #group, 2 do info[group[j]] = group[j + 1] end
  local ms, seq
  if tonumber(info['pending']) > 0 then
    local summary = redis.call('XPENDING', key, info['name'])
    ms, seq = parse(summary[2])
  else
    ms, seq = parse(info['last-delivered-id'])
    seq = seq + 1
  end
  if best_ms == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then
    best_ms, best_seq = ms, seq
  end
end
if best_ms == nil then return {0, ''} end
local minid = string.format('%d-%d', best_ms, best_seq)
return {redis.call('XTRIM', key, 'MINID', minid), minid}
"""

# KEYS[1] = the published-bundles hash, KEYS[2] = the generation counter; ARGV = name, entry JSON.
# A script rather than MULTI/EXEC so the same code runs on a cluster (both keys share ``{admin}``).
PUBLISH_RELOAD = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return redis.call('INCR', KEYS[2])
"""
