//! The Lua scripts that make each queue operation one atomic step on the
//! server. Every key of a queue shares one hash tag (`ipc:{name}:…`), so a
//! script's keys live on one node of a Redis Cluster too. Items' bytes
//! never pass through Lua on a put or a take (except a `JoinableQueue`'s
//! take of items reclaimed from a consumer that went away): those steps are
//! transactions (`MULTI` … `EXEC`) of plain commands that carry the bytes
//! and scripts that carry only ids and counts (see [`GATE`]).
//!
//! A queue is five keys: `items`, the stream of items (each entry one field
//! `d` holding the item's bytes), read through the consumer group `ipc`;
//! `meta`, a hash (`layout`, `kind`, `maxsize`, `closed`, `cursor`:
//! where the next reclaim looks, and `reading`, set only inside a take's
//! transaction); `freed`, a short
//! stream a take appends to when the queue is bounded, for a blocked put to
//! wait on; `done`, a short stream `task_done` appends to, for `join`; and
//! `producers`, a hash of each connection's last put sequence number, which
//! makes a put sent twice count once. A sixth, `held`, is `items` under
//! another name for the length of one put's transaction, never seen outside
//! it.
//! Items taken for good are acknowledged and deleted at once, so the
//! stream's length is what waits plus what is taken and not yet done.

use std::sync::LazyLock;

use redis::Script;

/// The layout this crate writes into `meta`; a queue of another layout is
/// refused.
pub(crate) const LAYOUT: &str = "1";

/// Opens or creates a queue. KEYS: items, meta. ARGV: `create`, `open` or
/// `either`; kind; maxsize. Returns `{1|2, layout, kind, maxsize}` (1:
/// opened, 2: created), 0 (not there, for `open`), -3 (there, for
/// `create`) or -4 (its maxsize is not a number).
pub(crate) static OPEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local m = redis.call('HMGET', KEYS[2], 'layout', 'kind', 'maxsize')
if m[1] then
  if ARGV[1] == 'create' then return -3 end
  if not string.match(m[3] or '', '^%d+$') then return -4 end
  return {1, m[1], m[2] or '', m[3]}
end
if ARGV[1] == 'open' then return 0 end
local made = redis.pcall('XGROUP', 'CREATE', KEYS[1], 'ipc', '0', 'MKSTREAM')
if type(made) == 'table' and made.err and not string.find(made.err, 'BUSYGROUP') then
  return made
end
redis.call('HSET', KEYS[2], 'layout', '1', 'kind', ARGV[2], 'maxsize', ARGV[3], 'closed', '0')
return {2, '1', ARGV[2], ARGV[3]}
",
    )
});

/// The first step of a put's transaction (`MULTI`, this script, the
/// items' `XADD … NOMKSTREAM`, [`RESTORE`], `EXEC`): decides whether the
/// items go in, so that they travel as plain commands and never through
/// Lua (whose string hash, in some builds, reads every byte of every
/// argument). When they may not, it renames `items` to `held`, so that the
/// `XADD`s after it find no stream and add nothing; [`RESTORE`] puts it
/// back before the transaction ends, so no other command runs while it is
/// moved (keyspace notifications and `MONITOR` do show the renames). An
/// error in its checks holds the items back too. A put sent again (its
/// answer was lost with the connection) finds its sequence number stored
/// and is held back. `held` exists only inside a transaction; one found at
/// the start was left by someone else, and is deleted.
/// KEYS: items, meta, freed, producers, held. ARGV: producer, sequence
/// number, how many items. Returns `{n}` (put, or put already), `{0, last
/// freed id}` (no room: wait on `freed` after that id), -1 (closed), -2 (the
/// queue is gone), -4 (more items than the bound: they never fit) or an
/// error.
///
/// Sent with `EVAL`, not `EVALSHA`: inside a transaction a script the
/// server does not know (after a restart) would fail alone while the
/// `XADD`s after it ran unchecked.
pub(crate) const GATE: &str = r"
redis.call('DEL', KEYS[5])
local function verdict()
  local n = tonumber(ARGV[3])
  local last = tonumber(redis.call('HGET', KEYS[4], ARGV[1])) or 0
  if tonumber(ARGV[2]) <= last then return {n} end
  local m = redis.call('HMGET', KEYS[2], 'layout', 'closed', 'maxsize')
  if not m[1] or redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
  if m[2] == '1' then return -1 end
  local maxsize = tonumber(m[3]) or 0
  if maxsize > 0 then
    if n > maxsize then return -4 end
    local waiting = redis.call('XLEN', KEYS[1]) - redis.call('XPENDING', KEYS[1], 'ipc')[1]
    if waiting + n > maxsize then
      local freed = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)[1]
      return {0, freed and freed[1] or '0-0'}
    end
  end
  redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
  return 'go'
end
local ok, decided = pcall(verdict)
if ok and decided == 'go' then return {tonumber(ARGV[3])} end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('RENAME', KEYS[1], KEYS[5]) end
if not ok then
  return redis.error_reply('ERR the put was held back: ' .. tostring(decided.err or decided))
end
return decided
";

/// The last step of a put's transaction: gives `items` back its name if
/// [`GATE`] held the put back. KEYS: items, held.
pub(crate) const RESTORE: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return redis.call('RENAMENX', KEYS[2], KEYS[1]) end
return 0
";

/// The second step of a `Queue`'s take, after `XREADGROUP … >` (so the
/// items' bytes come back as the plain command's answer, never through
/// Lua): first of all acknowledges and deletes what is pending with this
/// consumer (what the read gave it, and anything a take that failed left:
/// at most once), then signals `freed` when the queue is bounded. Sent
/// with `EVAL`, for the reason [`GATE`] is. KEYS: items, meta, freed.
/// ARGV: consumer, how many at most. Returns how many it took, 0 (nothing
/// now), -1 (closed and drained) or -2 (gone: the queue, or its stream
/// alone, deleted or evicted).
pub(crate) const TAKEN_ONCE: &str = r"
local mine = {}
local stream = redis.call('EXISTS', KEYS[1]) == 1
if stream then
  mine = redis.call('XPENDING', KEYS[1], 'ipc', '-', '+', ARGV[2], ARGV[1])
end
if #mine > 0 then
  local ids = {}
  for i, e in ipairs(mine) do ids[i] = e[1] end
  for i = 1, #ids, 1000 do
    local upto = math.min(i + 999, #ids)
    redis.call('XACK', KEYS[1], 'ipc', unpack(ids, i, upto))
    redis.call('XDEL', KEYS[1], unpack(ids, i, upto))
  end
  local ok, maxsize = pcall(redis.call, 'HGET', KEYS[2], 'maxsize')
  if ok and (tonumber(maxsize) or 0) > 0 then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100, '*', 'f', '1')
  end
  return #mine
end
local m = redis.call('HMGET', KEYS[2], 'layout', 'closed', 'maxsize')
if not m[1] or not stream then return -2 end
if m[2] == '1' then return -1 end
return 0
";

/// The last-delivered id of the group `ipc` of stream `KEYS[1]`, for
/// [`RECLAIM`] and [`TAKEN_LEAST`]: what a read after it would be the first
/// to deliver.
macro_rules! last_delivered {
    () => {
        r"
local function last_delivered()
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    if f['name'] == 'ipc' then return f['last-delivered-id'] end
  end
  return '0-0'
end
"
    };
}

/// The first step of a `JoinableQueue`'s take (`MULTI`, this script,
/// `XREADGROUP … >`, [`TAKEN_LEAST`], `EXEC`): reclaims up to ARGV[3] items
/// pending longer than the visibility timeout, from where the last reclaim
/// stopped. If it reclaimed any, they are this take's, and it holds the
/// stream aside (as [`GATE`] does) so that the read after it delivers
/// nothing; reclaims are rare, so only their bytes pass through Lua. It
/// also notes the group's last-delivered id in `meta` (`reading`), for
/// [`TAKEN_LEAST`] to see whether the read delivered anything. A `held`
/// found at the start was left by someone else, and is deleted. Sent with
/// `EVAL`. KEYS: items, meta, held. ARGV: consumer; the visibility timeout
/// in ms; how many. Returns `{{id, fields, deliveries}, ...}` (empty when
/// it reclaimed nothing) or -2 (gone).
pub(crate) const RECLAIM: &str = concat!(
    last_delivered!(),
    r"
redis.call('DEL', KEYS[3])
local m = redis.call('HMGET', KEYS[2], 'layout', 'cursor')
if not m[1] or redis.call('EXISTS', KEYS[1]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('RENAME', KEYS[1], KEYS[3]) end
  return -2
end
local want = tonumber(ARGV[3])
local cursor = m[2] or '0-0'
local claimed = redis.call('XAUTOCLAIM', KEYS[1], 'ipc', ARGV[1], ARGV[2], cursor, 'COUNT', want)
if #claimed[2] == 0 and cursor ~= '0-0' then
  claimed = redis.call('XAUTOCLAIM', KEYS[1], 'ipc', ARGV[1], ARGV[2], '0-0', 'COUNT', want)
end
redis.call('HSET', KEYS[2], 'cursor', claimed[1], 'reading', last_delivered())
local taken = {}
for _, e in ipairs(claimed[2]) do
  local deliveries = redis.call('XPENDING', KEYS[1], 'ipc', e[1], e[1], 1)[1][4]
  taken[#taken + 1] = {e[1], e[2], deliveries}
end
if #taken > 0 then redis.call('RENAME', KEYS[1], KEYS[3]) end
return taken
"
);

/// The last step of a `JoinableQueue`'s take: gives `items` back its name
/// if [`RECLAIM`] held it, and says what the take found. The items read
/// stay pending until done. Sent with `EVAL`. KEYS: items, meta, freed,
/// held. Returns `{1}` (the reclaimed items are the take's), `{2}` (the
/// read's are), `{0, id}` (nothing now: wait for an entry after it), -1
/// (closed and drained: nothing pending either) or -2 (gone).
pub(crate) const TAKEN_LEAST: &str = concat!(
    last_delivered!(),
    r"
local m = redis.call('HMGET', KEYS[2], 'layout', 'closed', 'maxsize', 'reading')
redis.call('HDEL', KEYS[2], 'reading')
if redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('RENAMENX', KEYS[4], KEYS[1])
  return {1}
end
if not m[1] or redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
local now = last_delivered()
if now ~= m[4] then
  if (tonumber(m[3]) or 0) > 0 then
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100, '*', 'f', '1')
  end
  return {2}
end
if m[2] == '1' and redis.call('XLEN', KEYS[1]) == 0 then return -1 end
return {0, now}
"
);

/// Marks an item done. KEYS: items, done. ARGV: id. Returns 1 if this call
/// acknowledged it, 0 if it was done already (a second delivery's).
pub(crate) static DONE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local acked = redis.call('XACK', KEYS[1], 'ipc', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 100, '*', 'd', '1')
return acked
",
    )
});

/// Forgets a handle that goes away: its sequence number, and its consumer
/// in the group unless items are pending with it (those stay, for another
/// consumer to reclaim). KEYS: items, producers. ARGV: the handle's name.
pub(crate) static FORGET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('HDEL', KEYS[2], ARGV[1])
local mine = redis.pcall('XPENDING', KEYS[1], 'ipc', '-', '+', 1, ARGV[1])
if type(mine) == 'table' and not mine.err and #mine == 0 then
  redis.pcall('XGROUP', 'DELCONSUMER', KEYS[1], 'ipc', ARGV[1])
end
return 1
",
    )
});

/// What `join` and `qsize` need, at one instant. KEYS: items, done.
/// Returns `{length, pending, last done id}`.
pub(crate) static STATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
return {redis.call('XLEN', KEYS[1]), redis.call('XPENDING', KEYS[1], 'ipc')[1],
        last and last[1] or '0-0'}
",
    )
});
