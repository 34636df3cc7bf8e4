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
# per event ARGV[4+6i ..] = user, item, rating, ts, has_id ('1'/'0'), event_id.
# Returns, per event, its stream id: the new one, or for a duplicate the one stored first.
APPEND_EVENTS = _AS_ZSET + """
local now, ttl, bound = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n = (#ARGV - 3) / 6
local ids = {}
for i = 0, n - 1 do
  local a = 4 + 6 * i
  local user, item, rating, ts = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local has_id, event_id = ARGV[a + 4], ARGV[a + 5]
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
    local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
    if has_id == '1' then redis.call('SET', dedupe, id, 'EX', ttl) end
    as_zset(seen)
    redis.call('ZADD', seen, 'GT', ts, item)  -- GT adds new members and never moves one back in time
    redis.call('ZREMRANGEBYRANK', seen, 0, -bound - 1)
    redis.call('HSETNX', state, 'first_seen', now)
    redis.call('HSET', state, 'last_ts', ts)
    redis.call('HINCRBY', state, 'events', 1)
    ids[#ids + 1] = id
  end
end
return ids
"""
