package state

import "github.com/redis/go-redis/v9"

// Every ownership-dependent write is one of these scripts: the fencing check
// and the write happen atomically in Redis, judged by Redis time (TIME), never
// by a worker's clock.
//
// All keys of a fleet share the hash tag {namespace}, so the scripts run on
// Redis Cluster as well: the job and tombstone keys they derive from the
// prefix live in the same slot as the declared keys.
//
// Tokens and timestamps are passed and stored as decimal strings and compared
// as strings; string.format('%d') keeps large integers exact.

const luaPrelude = `
local function nowms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fence(fk)
  return string.format('%d', redis.call('INCR', fk))
end
local function leaselog(lk, ev, id, worker, tok, now)
  redis.call('XADD', lk, 'MAXLEN', '~', '100000', '*',
    'ev', ev, 'job', id, 'worker', worker, 'token', tok, 'at', string.format('%d', now))
end
-- excluded says worker may not take job key jk now: an operator released
-- the job away from it (fleetctl release) less than a grace period ago.
local function excluded(jk, worker, now)
  local f = redis.call('HMGET', jk, 'excluded', 'excludedUntil')
  return f[1] == worker and tonumber(f[2] or '0') > now
end
-- quarantined moves key out of the ledger's way when it holds another type
-- than want (a hand-edited or corrupted key would otherwise fail every batch
-- that touches it with WRONGTYPE): it is renamed to
-- <prefix>quarantine:<ms>:<name>, listed in <prefix>quarantine, its job's
-- lease dropped and a 'quarantined' lease event logged. Returns the new
-- name, or false when key is absent or of the wanted type.
local function quarantined(key, want)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' or t == want then return false end
  local prefix, name = string.match(key, '^({[^}]*}:)(.*)$')
  local now = nowms()
  local q = prefix .. 'quarantine:' .. string.format('%d', now) .. ':' .. name
  redis.call('RENAME', key, q)
  redis.call('ZADD', prefix .. 'quarantine', now, q)
  local id = string.match(name, '^[a-z]+:(.*)$') or name
  if string.sub(name, 1, 4) == 'job:' then redis.call('ZREM', prefix .. 'leases', id) end
  leaselog(prefix .. 'leaselog', 'quarantined', id, '', '0', now)
  return q
end
`

// admitScript admits a batch of jobs for one worker.
// KEYS: leases, fence, leaselog. ARGV: prefix, worker, ttlms, then (id, msg, source)*.
// It returns {rows, quarantined keys}; per job a row {id, outcome, token, detail[, fields]}:
//
//	finished  a tombstone exists (detail = terminal state)
//	running   the lease is alive (detail = owner)
//	takeover  the record existed with an expired lease: now ours (fields = HGETALL)
//	admitted  a new record, ours (detail = created ms)
var admitScript = redis.NewScript(luaPrelude + `
local leases, fk, lk = KEYS[1], KEYS[2], KEYS[3]
local prefix, worker, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = nowms()
local out, q = {}, {}
for i = 4, #ARGV, 3 do
  local id, msg, src = ARGV[i], ARGV[i+1], ARGV[i+2]
  local jk, tk = prefix .. 'job:' .. id, prefix .. 'tomb:' .. id
  for _, k in ipairs({quarantined(tk, 'string'), quarantined(jk, 'hash')}) do
    if k then q[#q+1] = k end
  end
  local tomb = redis.call('GET', tk)
  if tomb then
    out[#out+1] = {id, 'finished', '0', tomb}
  elseif redis.call('EXISTS', jk) == 1 then
    local dl = tonumber(redis.call('ZSCORE', leases, id) or '0')
    if dl > now or excluded(jk, worker, now) then
      out[#out+1] = {id, 'running', '0', redis.call('HGET', jk, 'owner') or ''}
    else
      local tok = fence(fk)
      redis.call('HSET', jk, 'owner', worker, 'token', tok)
      redis.call('ZADD', leases, now + ttl, id)
      leaselog(lk, 'takeover', id, worker, tok, now)
      out[#out+1] = {id, 'takeover', tok, '', redis.call('HGETALL', jk)}
    end
  else
    local tok = fence(fk)
    redis.call('HSET', jk, 'msg', msg, 'owner', worker, 'token', tok,
      'created', string.format('%d', now), 'source', src)
    redis.call('ZADD', leases, now + ttl, id)
    leaselog(lk, 'admitted', id, worker, tok, now)
    out[#out+1] = {id, 'admitted', tok, string.format('%d', now)}
  end
end
return {out, q}
`)

// claimScript takes over expired leases, oldest deadline first.
// KEYS: leases, fence, leaselog. ARGV: prefix, worker, ttlms, max.
// Returns {{id, token, fields}* for every job claimed, quarantined keys}.
var claimScript = redis.NewScript(luaPrelude + `
local leases, fk, lk = KEYS[1], KEYS[2], KEYS[3]
local prefix, worker, ttl, max = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now = nowms()
local out, q = {}, {}
local ids = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, max)
for _, id in ipairs(ids) do
  local jk = prefix .. 'job:' .. id
  local bad = quarantined(jk, 'hash')
  if bad then
    q[#q+1] = bad
  elseif redis.call('EXISTS', jk) == 0 then
    redis.call('ZREM', leases, id)
  elseif excluded(jk, worker, now) then
    -- released away from this worker by an operator: leave it to others
  else
    local tok = fence(fk)
    redis.call('HSET', jk, 'owner', worker, 'token', tok)
    redis.call('ZADD', leases, now + ttl, id)
    leaselog(lk, 'claimed', id, worker, tok, now)
    out[#out+1] = {id, tok, redis.call('HGETALL', jk)}
  end
end
return {out, q}
`)

// renewScript extends every lease the worker still owns, in one round trip.
// KEYS: leases, workers, epoch. ARGV: prefix, worker, ttlms, held, then (id, token)*.
// Returns {now, epoch, {id, reason}*} where reason is finished (tombstone),
// missing (record gone without a tombstone: Redis lost data) or stolen
// (someone else holds it, or it was released) or corrupt (the record held
// another type than a hash: quarantined).
var renewScript = redis.NewScript(luaPrelude + `
local leases, workers, epoch = KEYS[1], KEYS[2], KEYS[3]
local prefix, worker, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = nowms()
local lost = {}
for i = 5, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i+1]
  local jk = prefix .. 'job:' .. id
  if quarantined(jk, 'hash') then
    lost[#lost+1] = id
    lost[#lost+1] = 'corrupt'
  else
  local f = redis.call('HMGET', jk, 'owner', 'token')
  if f[1] == worker and f[2] == tok then
    redis.call('ZADD', leases, now + ttl, id)
  else
    local why = 'stolen'
    if not f[1] then
      if redis.call('EXISTS', prefix .. 'tomb:' .. id) == 1 then why = 'finished' else why = 'missing' end
    end
    lost[#lost+1] = id
    lost[#lost+1] = why
  end
  end
end
redis.call('ZADD', workers, now, worker)
redis.call('HSET', prefix .. 'worker:' .. worker, 'seen', string.format('%d', now), 'inflight', ARGV[4])
redis.call('PEXPIRE', prefix .. 'worker:' .. worker, ttl * 10)
return {string.format('%d', now), redis.call('GET', epoch) or '', lost}
`)

// releaseScript hands leases over at once: the owner becomes empty and the
// deadline 0, so any worker's next claim takes the job.
// KEYS: leases, leaselog. ARGV: prefix, worker, then (id, token)*. Returns the count.
var releaseScript = redis.NewScript(luaPrelude + `
local leases, lk = KEYS[1], KEYS[2]
local now = nowms()
local prefix, worker = ARGV[1], ARGV[2]
local n = 0
for i = 3, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i+1]
  local jk = prefix .. 'job:' .. id
  local f = {}
  if not quarantined(jk, 'hash') then f = redis.call('HMGET', jk, 'owner', 'token') end
  if f[1] == worker and f[2] == tok then
    redis.call('HSET', jk, 'owner', '')
    redis.call('ZADD', leases, 0, id)
    leaselog(lk, 'released', id, worker, tok, now)
    n = n + 1
  end
end
return n
`)

// forceReleaseScript is the operator's release: whoever owns the job loses it
// (their next fenced write or renewal fails) and it is claimable at once by
// any other worker; its previous owner may not take it back for ARGV[2] ms.
// KEYS: job, leases, leaselog. ARGV: id, exclude ms. Returns the previous
// owner, or false.
var forceReleaseScript = redis.NewScript(luaPrelude + `
if quarantined(KEYS[1], 'hash') then return redis.error_reply('GONE quarantined') end
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local owner = redis.call('HGET', KEYS[1], 'owner') or ''
local tok = redis.call('HGET', KEYS[1], 'token') or '0'
if owner ~= '' then
  redis.call('HSET', KEYS[1], 'excluded', owner, 'excludedUntil', string.format('%d', nowms() + tonumber(ARGV[2])))
end
redis.call('HSET', KEYS[1], 'owner', '')
redis.call('ZADD', KEYS[2], 0, ARGV[1])
leaselog(KEYS[3], 'forced', ARGV[1], owner, tok, nowms())
return owner
`)

// checkpointScript is a fenced HSET. KEYS: job. ARGV: worker, token, (field, value)*.
// A missing record answers GONE (Redis lost it), a foreign owner STALE.
var checkpointScript = redis.NewScript(luaPrelude + `
if quarantined(KEYS[1], 'hash') then return redis.error_reply('GONE quarantined') end
local f = redis.call('HMGET', KEYS[1], 'owner', 'token')
if not f[1] then return redis.error_reply('GONE record') end
if f[1] ~= ARGV[1] or f[2] ~= ARGV[2] then return redis.error_reply('STALE lease') end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
return 1
`)

// decideScript records the job's terminal outcome once and puts the job in
// the outbox. The first decision wins; later calls return it.
// KEYS: job, outbox. ARGV: worker, token, id, outcome.
var decideScript = redis.NewScript(luaPrelude + `
if quarantined(KEYS[1], 'hash') then return redis.error_reply('GONE quarantined') end
local f = redis.call('HMGET', KEYS[1], 'owner', 'token', 'outcome')
if not f[1] then return redis.error_reply('GONE record') end
if f[1] ~= ARGV[1] or f[2] ~= ARGV[2] then return redis.error_reply('STALE lease') end
if f[3] then return f[3] end
redis.call('HSET', KEYS[1], 'outcome', ARGV[4])
redis.call('ZADD', KEYS[2], nowms(), ARGV[3])
return ARGV[4]
`)

// completeScript ends a job whose terminal state SampleDB acknowledged: the
// record, lease and outbox entry go, a tombstone keeps redeliveries out.
// KEYS: job, leases, outbox, tomb, leaselog. ARGV: worker, token, id, state, tombms.
var completeScript = redis.NewScript(luaPrelude + `
if quarantined(KEYS[1], 'hash') then return redis.error_reply('GONE quarantined') end
quarantined(KEYS[4], 'string')
local f = redis.call('HMGET', KEYS[1], 'owner', 'token')
if not f[1] then
  if redis.call('EXISTS', KEYS[4]) == 1 then return redis.error_reply('STALE lease') end
  return redis.error_reply('GONE record')
end
if f[1] ~= ARGV[1] or f[2] ~= ARGV[2] then return redis.error_reply('STALE lease') end
leaselog(KEYS[5], 'completed', ARGV[3], ARGV[1], ARGV[2], nowms())
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5])
return 1
`)

// adoptScript creates a record nobody owns, claimable after a delay (0: at
// once), unless the job is known (record or tombstone). Used by the
// reconciler and to re-seed a ledger that lost its data. KEYS: job, tomb,
// leases. ARGV: id, delay ms, (field, value)*.
var adoptScript = redis.NewScript(luaPrelude + `
quarantined(KEYS[1], 'hash')
quarantined(KEYS[2], 'string')
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
redis.call('HSET', KEYS[1], 'owner', '', 'token', '0')
if not redis.call('HGET', KEYS[1], 'created') then
  redis.call('HSET', KEYS[1], 'created', string.format('%d', nowms()))
end
local delay = tonumber(ARGV[2])
local at = 0
if delay > 0 then at = nowms() + delay end
redis.call('ZADD', KEYS[3], at, ARGV[1])
return 1
`)

// epochScript returns the ledger's epoch, creating it when missing, and its
// age in milliseconds by Redis's clock. A changed epoch means Redis lost its
// data. KEYS: epoch, epoch creation time. ARGV: candidate.
var epochScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  redis.call('SET', KEYS[2], string.format('%d', now))
end
local at = tonumber(redis.call('GET', KEYS[2]) or '0')
return {redis.call('GET', KEYS[1]), now - at}
`)

// rateScript is a GCRA limiter with a fleet-wide cool-down.
// KEYS: tat, cooldown. ARGV: interval µs, tolerance µs.
// Returns 0 when the request may go now, else µs to wait.
var rateScript = redis.NewScript(`
local cool = redis.call('PTTL', KEYS[2])
if cool > 0 then return cool * 1000 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tol = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow = tat - tol
if allow > now then return allow - now end
local ntat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', ntat), 'PX', math.floor((ntat - now) / 1000) + 1000)
return 0
`)

// fairRateScript is rateScript for one tenant of a credential several
// tenants share: the credential's GCRA bucket as in rateScript, and a bucket
// per tenant whose interval is the credential's times the number of tenants
// that asked within the last window, so when the credential is saturated
// each active tenant gets an equal share, and a tenant alone gets all of it.
// KEYS: tat, cooldown, tenant tat, active tenants (zset).
// ARGV: interval µs, tolerance µs, tenant, window ms.
// Returns 0 when the request may go now, else µs to wait.
var fairRateScript = redis.NewScript(`
local cool = redis.call('PTTL', KEYS[2])
if cool > 0 then return cool * 1000 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local nowms = math.floor(now / 1000)
local interval, tol, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
redis.call('ZADD', KEYS[4], nowms, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', nowms - window)
redis.call('PEXPIRE', KEYS[4], window * 2)
local n = redis.call('ZCARD', KEYS[4])
local tinterval = interval * n
local ttat = tonumber(redis.call('GET', KEYS[3]) or '0')
if ttat < now then ttat = now end
local tallow = ttat - tol
if tallow > now then return tallow - now end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local allow = tat - tol
if allow > now then return allow - now end
local ntat, nttat = tat + interval, ttat + tinterval
redis.call('SET', KEYS[1], string.format('%d', ntat), 'PX', math.floor((ntat - now) / 1000) + 1000)
redis.call('SET', KEYS[3], string.format('%d', nttat), 'PX', math.floor((nttat - now) / 1000) + 1000)
return 0
`)

// throttleScript extends the cool-down to at least ARGV[1] ms. KEYS: cooldown.
var throttleScript = redis.NewScript(`
local cur = redis.call('PTTL', KEYS[1])
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], '1', 'PX', ARGV[1]) end
return 1
`)

// unlockScript deletes a lock only if we hold it. KEYS: lock. ARGV: holder.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

var allScripts = []*redis.Script{
	admitScript, claimScript, renewScript, releaseScript, forceReleaseScript, checkpointScript,
	decideScript, completeScript, adoptScript, epochScript, rateScript, fairRateScript, throttleScript, unlockScript,
}
