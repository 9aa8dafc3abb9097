"""The Lua scripts of :class:`RedisBackend`: each decision is one atomic step in Redis.

Keys, under the backend's prefix ``P``:

- ``P run:<id>`` (hash): ``owner``, ``worker``, ``status``, ``kind``, ``message``,
  ``started``, ``ended``. Its existence means the id is used: ids are never reused.
  It expires ``history`` seconds after the run ended.
- ``P stop:<id>`` (string, ``[kind, message]``): the run's tombstone, set once (``NX``)
  by the first Stop; it expires after ``history`` seconds.
- ``P prestop:<id>`` (hash, owner -> ``[kind, message]``): Stops sent for an id no run
  has yet; the run that starts under the id takes its owner's (or an ownerless one).
- ``P worker:<wid>`` (string with a lease): the process is alive while it exists.
- ``P runs-of:<wid>`` (set): the runs a process holds; ``P workers`` (set): processes.
- channel ``P stops:<wid>``: the wake-up, ``[id, kind, message]`` as JSON.

An owner of ``""`` means "no owner" (owners crossing processes are non-empty strings).
"""

from __future__ import annotations

__all__ = ("CANCEL", "END", "MARK", "REAP", "RECLAIM", "REGISTER")

REGISTER = """
-- KEYS: run, prestop, stop, runs-of   ARGV: owner, worker, now, history, id
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
-- A run takes its owner's early Stop, or one sent with no owner (as the cancel check:
-- an ownerless run is stopped only by Stops sent with no owner).
local pending = redis.call('HGET', KEYS[2], ARGV[1]) or redis.call('HGET', KEYS[2], '')
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'worker', ARGV[2], 'status', 'running',
           'started', ARGV[3])
redis.call('SADD', KEYS[4], ARGV[5])
if pending then
  local reason = cjson.decode(pending)
  redis.call('SET', KEYS[3], pending, 'EX', ARGV[4])
  redis.call('HSET', KEYS[1], 'status', 'cancelling', 'kind', reason[1], 'message', reason[2])
  return {1, pending}
end
return {0}
"""

CANCEL = """
-- KEYS: run, stop, prestop   ARGV: owner, [kind, message], history, id, prefix
local run = redis.call('HMGET', KEYS[1], 'owner', 'status', 'worker')
if not run[2] then
  redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[2])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
  return 0
end
if ARGV[1] ~= '' and run[1] ~= ARGV[1] then return 0 end
if run[2] ~= 'running' then return 0 end
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[3]) then return 0 end
local reason = cjson.decode(ARGV[2])
redis.call('HSET', KEYS[1], 'status', 'cancelling', 'kind', reason[1], 'message', reason[2])
redis.call('PUBLISH', ARGV[5] .. 'stops:' .. run[3], cjson.encode({ARGV[4], reason[1], reason[2]}))
return 1
"""

MARK = """
-- A run was cancelled in its own process.   KEYS: run, stop   ARGV: [kind, message], history
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
local reason = cjson.decode(ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'cancelling', 'kind', reason[1], 'message', reason[2])
return 1
"""

END = """
-- KEYS: run, runs-of   ARGV: status, kind, message, now, history, id, worker
local holder = redis.call('HGET', KEYS[1], 'worker')
if holder and holder ~= ARGV[7] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'kind', ARGV[2], 'message', ARGV[3],
           'ended', ARGV[4], 'worker', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('SREM', KEYS[2], ARGV[6])
return 1
"""

REAP = """
-- Settle the runs of processes whose lease expired.   ARGV: prefix, now, history
local prefix, settled = ARGV[1], 0
for _, wid in ipairs(redis.call('SMEMBERS', prefix .. 'workers')) do
  if redis.call('EXISTS', prefix .. 'worker:' .. wid) == 0 then
    for _, id in ipairs(redis.call('SMEMBERS', prefix .. 'runs-of:' .. wid)) do
      local key = prefix .. 'run:' .. id
      local status = redis.call('HGET', key, 'status')
      if status == 'running' then
        redis.call('HSET', key, 'status', 'cancelled', 'kind', 'shutdown',
                   'message', 'its worker ' .. wid .. ' stopped (lease expired)',
                   'ended', ARGV[2])
      elseif status == 'cancelling' then
        redis.call('HSET', key, 'status', 'cancelled', 'ended', ARGV[2])
      end
      if status == 'running' or status == 'cancelling' then
        redis.call('EXPIRE', key, ARGV[3])
        settled = settled + 1
      end
    end
    redis.call('DEL', prefix .. 'runs-of:' .. wid)
    redis.call('SREM', prefix .. 'workers', wid)
  end
end
return settled
"""

RECLAIM = """
-- Runs of this process whose records are gone (Redis lost its data): write them again.
-- Returns the ids another process settled meanwhile (this one's lease had expired).
-- ARGV: prefix, worker, now, then id, owner pairs
local prefix, lost = ARGV[1], {}
for i = 4, #ARGV, 2 do
  local key = prefix .. 'run:' .. ARGV[i]
  local status = redis.call('HGET', key, 'status')
  if not status then
    redis.call('HSET', key, 'owner', ARGV[i + 1], 'worker', ARGV[2], 'status', 'running',
               'started', ARGV[3])
    redis.call('SADD', prefix .. 'runs-of:' .. ARGV[2], ARGV[i])
  elseif status == 'running' or status == 'cancelling' then
    redis.call('SADD', prefix .. 'runs-of:' .. ARGV[2], ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"""
