//! The Lua scripts that make each queue operation one atomic step on the
//! server. Every key of a queue shares one hash tag (`ipc:{name}:…`), so a
//! script's keys live on one node of a Redis Cluster too.
//!
//! A queue is five keys: `items`, the stream of items (each entry one field
//! `d` holding the item's bytes), read through the consumer group `ipc`;
//! `meta`, a hash (`layout`, `kind`, `maxsize`, `closed`, `last`: the id
//! of the newest item, which a waiting get reads after, and `cursor`: where
//! the next reclaim looks); `freed`, a short
//! stream a take appends to when the queue is bounded, for a blocked put to
//! wait on; `done`, a short stream `task_done` appends to, for `join`; and
//! `producers`, a hash of each connection's last put sequence number, which
//! makes a put sent twice count once.
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

/// Puts items, all or none, once: a put sent again (its answer was lost
/// with the connection) finds its sequence number stored and adds nothing.
/// KEYS: items, meta, freed, producers. ARGV: producer, sequence number,
/// the items. Returns `{n}` (put, or put already), `{0, last freed id}` (no
/// room: wait on `freed` after that id), -1 (closed), -2 (the queue is
/// gone) or -4 (more items than the bound: they never fit).
pub(crate) static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = #ARGV - 2
local last = tonumber(redis.call('HGET', KEYS[4], ARGV[1])) or 0
if tonumber(ARGV[2]) <= last then return {n} end
local m = redis.call('HMGET', KEYS[2], 'layout', 'closed', 'maxsize')
if not m[1] then return -2 end
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
local id
for i = 3, #ARGV do
  id = redis.call('XADD', KEYS[1], '*', 'd', ARGV[i])
end
redis.call('HSET', KEYS[2], 'last', id)
redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])
return {n}
",
    )
});

/// Takes up to ARGV[4] items without waiting. KEYS: items, meta, freed.
/// ARGV: consumer; `once` (acknowledged and deleted now) or `least`
/// (pending until done, first reclaiming items pending longer than the
/// visibility timeout, from where the last reclaim stopped); the
/// visibility timeout in ms; how many. Returns `{{id, fields,
/// deliveries}, ...}`, `{0, last}` (nothing now: wait for an entry after
/// id `last`), -1 (closed and drained: for `least`, nothing pending
/// either) or -2 (gone).
pub(crate) static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local m = redis.call('HMGET', KEYS[2], 'layout', 'closed', 'maxsize', 'last', 'cursor')
if not m[1] then return -2 end
local want = tonumber(ARGV[4])
local taken = {}
if ARGV[2] == 'least' then
  local cursor = m[5] or '0-0'
  local claimed = redis.call('XAUTOCLAIM', KEYS[1], 'ipc', ARGV[1], ARGV[3], cursor,
                             'COUNT', want)
  if #claimed[2] == 0 and cursor ~= '0-0' then
    claimed = redis.call('XAUTOCLAIM', KEYS[1], 'ipc', ARGV[1], ARGV[3], '0-0', 'COUNT', want)
  end
  redis.call('HSET', KEYS[2], 'cursor', claimed[1])
  for _, e in ipairs(claimed[2]) do
    local deliveries = redis.call('XPENDING', KEYS[1], 'ipc', e[1], e[1], 1)[1][4]
    taken[#taken + 1] = {e[1], e[2], deliveries}
  end
end
if #taken < want then
  local read = redis.call('XREADGROUP', 'GROUP', 'ipc', ARGV[1], 'COUNT', want - #taken,
                          'STREAMS', KEYS[1], '>')
  if read then
    for _, e in ipairs(read[1][2]) do
      taken[#taken + 1] = {e[1], e[2], 1}
    end
    if (tonumber(m[3]) or 0) > 0 then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', 100, '*', 'f', '1')
    end
  end
end
if #taken == 0 then
  if m[2] == '1' and (ARGV[2] == 'once' or redis.call('XLEN', KEYS[1]) == 0) then
    return -1
  end
  return {0, m[4] or '0-0'}
end
if ARGV[2] == 'once' then
  for _, t in ipairs(taken) do
    redis.call('XACK', KEYS[1], 'ipc', t[1])
    redis.call('XDEL', KEYS[1], t[1])
  end
end
return taken
",
    )
});

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
