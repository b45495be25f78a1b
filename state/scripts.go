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
-- timeline appends events (JSON texts) to a job's timeline, keeping the
-- last 200.
local function timeline(prefix, id, ...)
  local k = prefix .. 'tl:' .. id
  for _, e in ipairs({...}) do
    if e ~= '' then redis.call('RPUSH', k, e) end
  end
  redis.call('LTRIM', k, -200, -1)
end
-- event encodes one timeline event.
local function event(now, ev, worker, tok, detail)
  return cjson.encode({at = now, ev = ev, worker = worker or '', token = tonumber(tok or '0') or 0, detail = detail or ''})
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
  if string.sub(name, 1, 4) == 'job:' then redis.call('ZREM', prefix .. 'claimable', id) end
  leaselog(prefix .. 'leaselog', 'quarantined', id, '', '0', now)
  return q
end
`

// alive says session sid is registered with a deadline after now. Every
// lease is a session's: a job is held while its record names a session that
// is alive.
const luaSessions = `
local function alive(sessions, sid, now)
  if not sid or sid == '' then return false end
  local dl = redis.call('ZSCORE', sessions, sid)
  return dl and tonumber(dl) > now
end
-- mail appends a message to a session's mailbox (read by its worker with
-- BLPOP); an abandoned mailbox expires.
local function mail(prefix, sid, msg, ttl)
  local k = prefix .. 'mail:' .. sid
  redis.call('RPUSH', k, msg)
  redis.call('PEXPIRE', k, ttl * 10)
end
-- take moves the job at jk to session sid (worker) under a new fencing
-- token, out of its former session's owned set (was) and the claimable set;
-- it returns the token.
local function take(prefix, claimable, fk, jk, id, was, worker, sid)
  if was and was ~= '' then redis.call('SREM', prefix .. 'owned:' .. was, id) end
  local tok = fence(fk)
  redis.call('HSET', jk, 'owner', worker, 'session', sid, 'token', tok)
  redis.call('ZREM', claimable, id)
  redis.call('SADD', prefix .. 'owned:' .. sid, id)
  return tok
end
`

// openSessionScript registers a worker session, alive for ttl.
// KEYS: sessions, workers. ARGV: prefix, sid, worker, ttlms. Returns now.
var openSessionScript = redis.NewScript(luaPrelude + `
local now = nowms()
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[2])
redis.call('HSET', ARGV[1] .. 'sess:' .. ARGV[2], 'worker', ARGV[3], 'created', string.format('%d', now))
redis.call('ZADD', KEYS[2], now, ARGV[3])
return string.format('%d', now)
`)

// admitScript admits a batch of jobs under a worker's session.
// KEYS: sessions, claimable, fence, leaselog. ARGV: prefix, sid, worker, then (id, msg, source)*.
// It returns {rows, quarantined keys}; per job a row {id, outcome, token, detail[, fields]}:
//
//	finished  a tombstone exists (detail = terminal state)
//	running   the job's session is alive (detail = owner), or an operator
//	          released it away from this worker moments ago
//	held      this very session holds it already (an earlier admission whose
//	          answer was lost, or a redelivery): its token (fields = HGETALL)
//	takeover  the record existed and nobody holds it: now ours (fields = HGETALL)
//	admitted  a new record, ours (detail = created ms)
//
// A session that is not alive admits nothing: SESSION gone.
var admitScript = redis.NewScript(luaPrelude + luaSessions + `
local sessions, claimable, fk, lk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, sid, worker = ARGV[1], ARGV[2], ARGV[3]
local now = nowms()
if not alive(sessions, sid, now) then return redis.error_reply('SESSION gone') end
local owned = prefix .. 'owned:' .. sid
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
    local f = redis.call('HMGET', jk, 'session', 'owner', 'token')
    if f[1] == sid then
      out[#out+1] = {id, 'held', f[3] or '0', '', redis.call('HGETALL', jk)}
    elseif alive(sessions, f[1], now) or excluded(jk, worker, now) then
      out[#out+1] = {id, 'running', '0', f[2] or ''}
    else
      local tok = take(prefix, claimable, fk, jk, id, f[1], worker, sid)
      leaselog(lk, 'takeover', id, worker, tok, now)
      timeline(prefix, id, event(now, 'taken over', worker, tok, 'redelivered from ' .. src))
      out[#out+1] = {id, 'takeover', tok, '', redis.call('HGETALL', jk)}
    end
  else
    local tok = fence(fk)
    redis.call('HSET', jk, 'msg', msg, 'owner', worker, 'session', sid, 'token', tok,
      'created', string.format('%d', now), 'source', src)
    redis.call('SADD', owned, id)
    leaselog(lk, 'admitted', id, worker, tok, now)
    timeline(prefix, id, event(now, 'admitted', worker, tok, 'from ' .. src))
    out[#out+1] = {id, 'admitted', tok, string.format('%d', now)}
  end
end
return {out, q}
`)

// claimScript first reaps sessions whose deadline passed (their jobs become
// claimable; at most ARGV[5] jobs moved per call, so a dead worker's
// hundred thousand jobs cost many short calls, not one long one), then
// takes over up to ARGV[4] claimable jobs, longest claimable first.
// KEYS: sessions, claimable, fence, leaselog. ARGV: prefix, sid, worker, max, reapmax.
// Returns {{id, token, fields}* claimed, quarantined keys}.
var claimScript = redis.NewScript(luaPrelude + luaSessions + `
local sessions, claimable, fk, lk = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, sid, worker, max, budget = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local now = nowms()
if not alive(sessions, sid, now) then return redis.error_reply('SESSION gone') end
for _, dead in ipairs(redis.call('ZRANGEBYSCORE', sessions, '-inf', now, 'LIMIT', 0, 8)) do
  if budget <= 0 then break end
  local ok = prefix .. 'owned:' .. dead
  for _, id in ipairs(redis.call('SPOP', ok, budget)) do
    if redis.call('HGET', prefix .. 'job:' .. id, 'session') == dead then
      redis.call('ZADD', claimable, 'NX', now, id)
    end
    budget = budget - 1
  end
  if redis.call('SCARD', ok) == 0 then
    redis.call('ZREM', sessions, dead)
    redis.call('DEL', prefix .. 'sess:' .. dead, prefix .. 'mail:' .. dead)
  end
end
local out, q = {}, {}
local n = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', claimable, '-inf', now, 'LIMIT', 0, max + 32)) do
  if n >= max then break end
  local jk = prefix .. 'job:' .. id
  local bad = quarantined(jk, 'hash')
  if bad then
    q[#q+1] = bad
  elseif redis.call('EXISTS', jk) == 0 then
    redis.call('ZREM', claimable, id)
  else
    local f = redis.call('HMGET', jk, 'session', 'owner')
    if alive(sessions, f[1], now) then
      redis.call('ZREM', claimable, id) -- held again (re-admitted meanwhile)
    elseif excluded(jk, worker, now) then
      -- released away from this worker by an operator: leave it to others
    else
      local tok = take(prefix, claimable, fk, jk, id, f[1], worker, sid)
      leaselog(lk, 'claimed', id, worker, tok, now)
      local from = 'claimable (released or re-adopted)'
      if f[2] and f[2] ~= '' then from = 'from ' .. f[2] .. ', whose session ended' end
      timeline(prefix, id, event(now, 'claimed', worker, tok, from))
      out[#out+1] = {id, tok, redis.call('HGETALL', jk)}
      n = n + 1
    end
  end
end
return {out, q}
`)

// renewScript extends a worker's session, whatever the number of jobs it
// holds: one round trip, a handful of commands. A session whose deadline
// passed is not renewed (it stays dead: its jobs are being reaped and
// claimed), nor one the ledger does not know (Redis lost its data).
// KEYS: sessions, workers, epoch. ARGV: prefix, sid, worker, ttlms, inflight,
// stats (the worker's published stats; empty: unchanged).
// Returns {now, epoch, 'ok' | 'gone'}.
var renewScript = redis.NewScript(luaPrelude + `
local now = nowms()
local e = redis.call('GET', KEYS[3]) or ''
local dl = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not dl or tonumber(dl) <= now then
  return {string.format('%d', now), e, 'gone'}
end
local ttl = tonumber(ARGV[4])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
redis.call('ZADD', KEYS[2], now, ARGV[3])
local wk = ARGV[1] .. 'worker:' .. ARGV[3]
redis.call('HSET', wk, 'seen', string.format('%d', now), 'inflight', ARGV[5], 'session', ARGV[2])
if ARGV[6] and ARGV[6] ~= '' then redis.call('HSET', wk, 'stats', ARGV[6]) end
redis.call('PEXPIRE', wk, ttl * 10)
return {string.format('%d', now), e, 'ok'}
`)

// releaseScript hands leases over at once: the job's session and owner
// become empty and it is claimable now.
// KEYS: claimable, leaselog. ARGV: prefix, sid, worker, then (id, token)*. Returns the count.
var releaseScript = redis.NewScript(luaPrelude + `
local claimable, lk = KEYS[1], KEYS[2]
local now = nowms()
local prefix, sid, worker = ARGV[1], ARGV[2], ARGV[3]
local n = 0
for i = 4, #ARGV, 2 do
  local id, tok = ARGV[i], ARGV[i+1]
  local jk = prefix .. 'job:' .. id
  local f = {}
  if not quarantined(jk, 'hash') then f = redis.call('HMGET', jk, 'session', 'token') end
  if f[1] == sid and f[2] == tok then
    redis.call('HSET', jk, 'owner', '', 'session', '')
    redis.call('ZADD', claimable, 0, id)
    redis.call('SREM', prefix .. 'owned:' .. sid, id)
    leaselog(lk, 'released', id, worker, tok, now)
    timeline(prefix, id, event(now, 'released', worker, tok, 'handed over at a safe point (drain)'))
    n = n + 1
  end
end
return n
`)

// forceReleaseScript is the operator's release: whoever holds the job loses
// it — its worker is told at once through its session's mailbox, and its
// next fenced write fails — and it is claimable at once by any other
// worker; its previous owner may not take it back for ARGV[3] ms.
// KEYS: job, claimable, leaselog. ARGV: prefix, id, exclude ms, ttl ms, by (the timeline's detail).
// Returns the previous owner, or false.
var forceReleaseScript = redis.NewScript(luaPrelude + luaSessions + `
if quarantined(KEYS[1], 'hash') then return redis.error_reply('GONE quarantined') end
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local f = redis.call('HMGET', KEYS[1], 'owner', 'session', 'token')
local owner, sess, tok = f[1] or '', f[2] or '', f[3] or '0'
local now = nowms()
if owner ~= '' then
  redis.call('HSET', KEYS[1], 'excluded', owner, 'excludedUntil', string.format('%d', now + tonumber(ARGV[3])))
end
redis.call('HSET', KEYS[1], 'owner', '', 'session', '')
redis.call('ZADD', KEYS[2], 0, ARGV[2])
if sess ~= '' then
  redis.call('SREM', ARGV[1] .. 'owned:' .. sess, ARGV[2])
  mail(ARGV[1], sess, 'lost ' .. ARGV[2] .. ' ' .. tok .. ' stolen', tonumber(ARGV[4]))
end
leaselog(KEYS[3], 'forced', ARGV[2], owner, tok, now)
timeline(ARGV[1], ARGV[2], event(now, 'released by an operator', owner, tok, ARGV[5]))
return owner
`)

// fencedCheck is the start of every fenced write: the record must exist
// (else GONE: Redis lost it), name the caller's session and token (else
// STALE: someone took the job over, or it was released), and the session
// must be alive (else STALE: its deadline passed; its jobs are anybody's).
// KEYS[1] is the job, KEYS[2] the sessions; ARGV[1] the session, ARGV[2] the token.
const luaFenced = `
local function fenced()
  -- HMGET fails (WRONGTYPE) only on a record of another type: the type is
  -- checked when it does, not with a TYPE before every write.
  local f = redis.pcall('HMGET', KEYS[1], 'session', 'token')
  if f.err then
    quarantined(KEYS[1], 'hash')
    return redis.error_reply('GONE quarantined')
  end
  if not f[2] then return redis.error_reply('GONE record') end
  if f[1] ~= ARGV[1] or f[2] ~= ARGV[2] then return redis.error_reply('STALE lease') end
  if not alive(KEYS[2], ARGV[1], nowms()) then return redis.error_reply('STALE session expired') end
  return nil
end
`

// checkpointScript is a fenced HSET, and appends timeline events.
// KEYS: job, sessions. ARGV: session, token, prefix, id, n, n events, (field, value)*.
var checkpointScript = redis.NewScript(luaPrelude + luaSessions + luaFenced + `
local err = fenced()
if err then return err end
local n = tonumber(ARGV[5])
if n > 0 then timeline(ARGV[3], ARGV[4], unpack(ARGV, 6, 5 + n)) end
for i = 6 + n, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
return 1
`)

// decideScript records the job's terminal outcome once and puts the job in
// the outbox. The first decision wins; later calls return it.
// KEYS: job, sessions, outbox. ARGV: session, token, id, outcome, prefix, event.
var decideScript = redis.NewScript(luaPrelude + luaSessions + luaFenced + `
local err = fenced()
if err then return err end
local cur = redis.call('HGET', KEYS[1], 'outcome')
if cur then return cur end
redis.call('HSET', KEYS[1], 'outcome', ARGV[4])
redis.call('ZADD', KEYS[3], nowms(), ARGV[3])
timeline(ARGV[5], ARGV[3], ARGV[6])
return ARGV[4]
`)

// completeScript ends a job whose terminal state SampleDB acknowledged: the
// record, its claimable and outbox entries go, a tombstone keeps
// redeliveries out for tombms; the job's summary (when given), its timeline
// and its place in the finished index stay for histms.
// KEYS: job, sessions, claimable, outbox, tomb, leaselog, finished.
// ARGV: session, token, id, state, tombms, prefix, worker, event, summary,
// histms.
var completeScript = redis.NewScript(luaPrelude + luaSessions + `
if quarantined(KEYS[1], 'hash') then return redis.error_reply('GONE quarantined') end
quarantined(KEYS[5], 'string')
local f = redis.call('HMGET', KEYS[1], 'session', 'token')
if not f[2] then
  if redis.call('EXISTS', KEYS[5]) == 1 then return redis.error_reply('STALE lease') end
  return redis.error_reply('GONE record')
end
if f[1] ~= ARGV[1] or f[2] ~= ARGV[2] then return redis.error_reply('STALE lease') end
if not alive(KEYS[2], ARGV[1], nowms()) then return redis.error_reply('STALE session expired') end
local now = nowms()
leaselog(KEYS[6], 'completed', ARGV[3], ARGV[7], ARGV[2], now)
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('SREM', ARGV[6] .. 'owned:' .. ARGV[1], ARGV[3])
redis.call('SET', KEYS[5], ARGV[4], 'PX', ARGV[5])
timeline(ARGV[6], ARGV[3], ARGV[8])
redis.call('PEXPIRE', ARGV[6] .. 'tl:' .. ARGV[3], ARGV[10])
if ARGV[9] ~= '' then redis.call('SET', ARGV[6] .. 'res:' .. ARGV[3], ARGV[9], 'PX', ARGV[10]) end
redis.call('ZADD', KEYS[7], now, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', now - tonumber(ARGV[10]))
return 1
`)

// adoptScript creates a record nobody owns, claimable after a delay (0: at
// once), unless the job is known (record or tombstone). Used by the
// reconciler and to re-seed a ledger that lost its data. KEYS: job, tomb,
// claimable. ARGV: id, delay ms, (field, value)*.
var adoptScript = redis.NewScript(luaPrelude + `
quarantined(KEYS[1], 'hash')
quarantined(KEYS[2], 'string')
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
redis.call('HSET', KEYS[1], 'owner', '', 'session', '', 'token', '0')
if not redis.call('HGET', KEYS[1], 'created') then
  redis.call('HSET', KEYS[1], 'created', string.format('%d', nowms()))
end
local delay = tonumber(ARGV[2])
local at = 0
if delay > 0 then at = nowms() + delay end
redis.call('ZADD', KEYS[3], at, ARGV[1])
local prefix = string.match(KEYS[1], '^({[^}]*}:)')
timeline(prefix, ARGV[1], event(nowms(), 'adopted', '', '0', 'the ledger had lost it: claimable again'))
return 1
`)

// notifyAbortsScript marks jobs whose abort an analyst requested and tells
// each one's session through its mailbox, once: a job nobody holds carries
// the mark to whoever claims it. KEYS: the jobs (declared, so that Redis
// Cluster runs the script on the namespace's master). ARGV: prefix, ttl ms,
// by (the timeline's detail: who asked), ids… in the order of KEYS. Returns how many were newly marked.
var notifyAbortsScript = redis.NewScript(luaPrelude + luaSessions + `
local prefix, ttl, by = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local n = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local jk = KEYS[i-3]
  if redis.call('TYPE', jk)['ok'] == 'hash' and redis.call('HGET', jk, 'abort') ~= '1' then
    redis.call('HSET', jk, 'abort', '1')
    local f = redis.call('HMGET', jk, 'session', 'owner', 'token')
    local sess = f[1]
    if sess and sess ~= '' then mail(prefix, sess, 'abort ' .. id, ttl) end
    timeline(prefix, id, event(nowms(), 'abort requested', f[2], f[3], by))
    n = n + 1
  end
end
return n
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

// rateScript is a GCRA limiter with a fleet-wide cool-down that grants up
// to ARGV[3] requests at once (as many as the burst allows now), so a
// worker with many requests waiting asks Redis once for several; and, when
// fewer than ARGV[4] (at most the burst) may go now, none: it says when
// that many may, so that a worker whose polls wait on a spent budget takes
// them a batch at a time, not a call (and a wait) per grant.
// KEYS: tat, cooldown. ARGV: interval µs, tolerance µs, wanted, at least
// (absent: 1).
// Returns {0, granted} when requests may go now, else {µs to wait, 0}.
var rateScript = redis.NewScript(luaRate + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('MGET', KEYS[1], KEYS[2])
local cool = cooling(KEYS[2], v[2], now)
if cool > 0 then return {cool, 0} end
local interval, tol, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local least = math.max(1, tonumber(ARGV[4] or '1') or 1)
local tat = tonumber(v[1] or '0') or 0
if tat < now then tat = now end
local allow = tat - tol + (least - 1) * interval
if allow > now then return {allow - now, 0} end
local g = math.max(1, math.min(want, math.floor((now + tol - tat) / interval) + 1))
local ntat = tat + g * interval
redis.call('SET', KEYS[1], string.format('%d', ntat), 'PX', math.floor((ntat - now) / 1000) + 1000)
return {0, g}
`)

// fairRateScript is rateScript for one tenant of a credential several
// tenants share: the credential's GCRA bucket as in rateScript, and a bucket
// per tenant whose interval is the credential's times the number of tenants
// that asked within the last window, so when the credential is saturated
// each active tenant gets an equal share, and a tenant alone gets all of it.
// KEYS: tat, cooldown, tenant tat, active tenants (zset).
// ARGV: interval µs, tolerance µs, tenant, window ms, wanted.
// Returns {0, granted} when requests may go now, else {µs to wait, 0}.
var fairRateScript = redis.NewScript(luaRate + `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local v = redis.call('MGET', KEYS[1], KEYS[2], KEYS[3])
local cool = cooling(KEYS[2], v[2], now)
if cool > 0 then return {cool, 0} end
local nowms = math.floor(now / 1000)
local interval, tol, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
redis.call('ZADD', KEYS[4], nowms, ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', nowms - window)
redis.call('PEXPIRE', KEYS[4], window * 2)
local n = redis.call('ZCARD', KEYS[4])
local tinterval = interval * n
local ttat = tonumber(v[3] or '0') or 0
if ttat < now then ttat = now end
local tallow = ttat - tol
if tallow > now then return {tallow - now, 0} end
local tat = tonumber(v[1] or '0') or 0
if tat < now then tat = now end
local allow = tat - tol
if allow > now then return {allow - now, 0} end
local want = tonumber(ARGV[5])
local g = math.min(want, math.floor((now + tol - tat) / interval) + 1, math.floor((now + tol - ttat) / tinterval) + 1)
g = math.max(1, g)
local ntat, nttat = tat + g * interval, ttat + g * tinterval
redis.call('SET', KEYS[1], string.format('%d', ntat), 'PX', math.floor((ntat - now) / 1000) + 1000)
redis.call('SET', KEYS[3], string.format('%d', nttat), 'PX', math.floor((nttat - now) / 1000) + 1000)
return {0, g}
`)

// throttleScript extends the cool-down to at least ARGV[1] ms. KEYS: cooldown.
// The key holds when the cool-down ends (Redis time, µs), so the limiter
// reads it with the bucket in one MGET; it expires then.
var throttleScript = redis.NewScript(`
local cur = redis.call('PTTL', KEYS[1])
if cur < tonumber(ARGV[1]) then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[1], string.format('%d', now + tonumber(ARGV[1]) * 1000), 'PX', ARGV[1])
end
return 1
`)

// luaRate: cooling returns the µs of cool-down left at now (0: none), from
// the cool-down key's value v: when it ends, in µs (a worker of an earlier
// version wrote '1', whose key's TTL says it).
const luaRate = `
local function cooling(key, v, now)
  if not v then return 0 end
  local untl = tonumber(v) or 0
  if untl > 1000000000000000 then return math.max(untl - now, 0) end
  local ms = redis.call('PTTL', key)
  if ms > 0 then return ms * 1000 end
  return 0
end
`

// unlockScript deletes a lock only if we hold it. KEYS: lock. ARGV: holder.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// holdLockScript sets the lock's lifetime to ARGV[2] ms if ARGV[1] holds it
// (0 ms or less: releases it).
var holdLockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) <= 0 then return redis.call('DEL', KEYS[1]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
`)

var allScripts = []*redis.Script{
	openSessionScript, admitScript, claimScript, renewScript, releaseScript, forceReleaseScript, checkpointScript,
	decideScript, completeScript, adoptScript, notifyAbortsScript, epochScript, rateScript, fairRateScript, throttleScript, unlockScript,
	holdLockScript,
}
