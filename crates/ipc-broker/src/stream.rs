//! What both queue types are made of: a handle's connection, the queue's
//! keys, and the put, take, done and wait steps over the scripts of
//! [`crate::scripts`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ipc_core::{Deadline, Error, Result};
use redis::Value;

use crate::broker::{block_ms, Broker, Link};
use crate::scripts::{self, GROUP, LAYOUT};

/// The longest one blocking command waits on the server before the handle
/// looks again (at a close, and for items whose consumer went away).
const BLOCK_SLICE: Duration = Duration::from_millis(500);

/// How an item taken is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// When it is taken: a consumer that dies with it loses it (the plain
    /// queue, like the shared-memory one).
    AtMostOnce,
    /// When it is done; until then, after `visibility` without that, any
    /// consumer may take it again.
    AtLeastOnce { visibility: Duration },
}

impl Delivery {
    fn mode(self) -> &'static str {
        match self {
            Delivery::AtMostOnce => "once",
            Delivery::AtLeastOnce { .. } => "least",
        }
    }

    fn visibility_ms(self) -> u64 {
        match self {
            Delivery::AtMostOnce => 0,
            Delivery::AtLeastOnce { visibility } => visibility.as_millis() as u64,
        }
    }
}

/// Whether [`Stream::open`] may create the queue, must, or must not.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Opening {
    Create,
    Open,
    Either,
}

/// An item as taken from the stream.
pub(crate) struct Taken {
    pub(crate) id: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) deliveries: u64,
}

/// The keys of queue `name`, sharing one hash tag.
struct Keys {
    items: String,
    meta: String,
    freed: String,
    done: String,
    producers: String,
}

impl Keys {
    fn of(name: &str) -> Keys {
        let key = |part: &str| format!("ipc:{{{name}}}:{part}");
        Keys {
            items: key("items"),
            meta: key("meta"),
            freed: key("freed"),
            done: key("done"),
            producers: key("producers"),
        }
    }
}

/// One handle on a queue: its own connection and consumer name.
pub struct Stream {
    link: Mutex<Link>,
    keys: Keys,
    name: String,
    /// This handle's name as a consumer, and as a producer.
    consumer: String,
    /// The sequence number of this handle's last put.
    puts: AtomicU64,
    kind: &'static str,
    maxsize: usize,
    delivery: Delivery,
}

impl Stream {
    /// Opens (or creates) queue `name` of `kind` on `broker`.
    pub(crate) fn open(
        broker: &Broker,
        name: &str,
        kind: &'static str,
        maxsize: usize,
        delivery: Delivery,
        opening: Opening,
    ) -> Result<Stream> {
        let mut link = broker.link();
        let keys = Keys::of(name);
        let how = match opening {
            Opening::Create => "create",
            Opening::Open => "open",
            Opening::Either => "either",
        };
        let opened: Value = link.run(Duration::ZERO, |conn| {
            scripts::OPEN
                .key(&keys.items)
                .key(&keys.meta)
                .arg(how)
                .arg(kind)
                .arg(maxsize)
                .invoke(conn)
        })?;
        let maxsize = match opened {
            Value::Int(0) => return Err(Error::NotFound(name.to_owned())),
            Value::Int(-3) => return Err(Error::AlreadyExists(name.to_owned())),
            Value::Array(fields) => {
                let text = |i: usize| match fields.get(i) {
                    Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(Value::Int(n)) => n.to_string(),
                    _ => String::new(),
                };
                let (layout, found, maxsize) = (text(1), text(2), text(3));
                if layout != LAYOUT || found != kind {
                    return Err(Error::Broker(format!(
                        "redis at {}: `{name}` is not a {kind} of this crate (layout `{layout}`, \
                         kind `{found}`)",
                        broker.address()
                    )));
                }
                maxsize.parse().unwrap_or(0)
            }
            other => return Err(unexpected(broker, "opening the queue", &other)),
        };
        Ok(Stream {
            link: Mutex::new(link),
            keys,
            name: name.to_owned(),
            consumer: consumer_name(),
            puts: AtomicU64::new(0),
            kind,
            maxsize,
            delivery,
        })
    }

    /// Another handle on the same queue, with a connection of its own.
    pub(crate) fn try_clone(&self) -> Result<Stream> {
        let broker = self.link().broker().clone();
        Stream::open(
            &broker,
            &self.name,
            self.kind,
            self.maxsize,
            self.delivery,
            Opening::Open,
        )
    }

    fn link(&self) -> MutexGuard<'_, Link> {
        // A panic while holding the link leaves nothing half-done in it.
        self.link.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn maxsize(&self) -> usize {
        self.maxsize
    }

    /// Puts `items`, all or none, waiting for room until `deadline`.
    pub(crate) fn put(&self, items: &[&[u8]], deadline: Deadline) -> Result<()> {
        if self.maxsize > 0 && items.len() > self.maxsize {
            return Err(Error::InvalidArgument(
                "more items at once than the queue's maxsize",
            ));
        }
        let mut link = self.link();
        // One number per put, however often it is sent, taken under the
        // link's lock: a later number is never stored before an earlier.
        let seq = self.puts.fetch_add(1, Ordering::Relaxed) + 1;
        loop {
            let put: Value = link.run(Duration::ZERO, |conn| {
                let mut call = scripts::PUT.prepare_invoke();
                call.key(&self.keys.items)
                    .key(&self.keys.meta)
                    .key(&self.keys.freed)
                    .key(&self.keys.producers)
                    .arg(&self.consumer)
                    .arg(seq);
                for item in items {
                    call.arg(*item);
                }
                call.invoke(conn)
            })?;
            let freed_after = match &put {
                Value::Array(reply) => match reply.as_slice() {
                    [Value::Int(n)] if *n > 0 => return Ok(()),
                    [Value::Int(0), Value::BulkString(id)] => {
                        String::from_utf8_lossy(id).into_owned()
                    }
                    _ => return Err(unexpected(link.broker(), "a put", &put)),
                },
                Value::Int(-1) => return Err(Error::Closed),
                Value::Int(-2) => return Err(Error::NotFound(self.name.clone())),
                _ => return Err(unexpected(link.broker(), "a put", &put)),
            };
            let Some(block) = block_ms(deadline, BLOCK_SLICE) else {
                return Err(match deadline {
                    Deadline::Now => Error::Full,
                    _ => Error::Timeout,
                });
            };
            // Full: wait until a take frees a place (or the slice ends).
            wait_after(&mut link, &self.keys.freed, &freed_after, block)?;
        }
    }

    /// Takes one item, waiting until `deadline`.
    pub(crate) fn take(&self, deadline: Deadline) -> Result<Taken> {
        let mut taken = self.take_many(1, deadline)?;
        // take_many gives at least one item, or an error.
        taken.pop().ok_or(Error::Empty)
    }

    /// Takes between 1 and `most` items in one command, waiting until
    /// `deadline` for the first. An entry this crate did not write among
    /// them is an error for the whole call (those taken with it are taken:
    /// for a `Queue`, lost; for a `JoinableQueue`, delivered again later).
    pub(crate) fn take_many(&self, most: usize, deadline: Deadline) -> Result<Vec<Taken>> {
        let most = most.max(1);
        let mut link = self.link();
        loop {
            let took: Value = link.run(Duration::ZERO, |conn| {
                scripts::TAKE
                    .key(&self.keys.items)
                    .key(&self.keys.meta)
                    .key(&self.keys.freed)
                    .arg(&self.consumer)
                    .arg(self.delivery.mode())
                    .arg(self.delivery.visibility_ms())
                    .arg(most)
                    .invoke(conn)
            })?;
            match took {
                Value::Int(0) => {}
                Value::Int(-1) => return Err(Error::Closed),
                Value::Int(-2) => return Err(Error::NotFound(self.name.clone())),
                Value::Array(ref entries) => {
                    return entries
                        .iter()
                        .map(|entry| match entry {
                            Value::Array(reply) => self.taken(&mut link, reply, entry),
                            other => Err(unexpected(link.broker(), "a get", other)),
                        })
                        .collect();
                }
                other => return Err(unexpected(link.broker(), "a get", &other)),
            }
            let Some(block) = block_ms(deadline, BLOCK_SLICE) else {
                return Err(match deadline {
                    Deadline::Now => Error::Empty,
                    _ => Error::Timeout,
                });
            };
            // Nothing now: wait on the server for the next item, which
            // this read takes for this consumer.
            let wait = Duration::from_millis(block);
            let read: Value = link.run(wait, |conn| {
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(1)
                    .arg("BLOCK")
                    .arg(block)
                    .arg("STREAMS")
                    .arg(&self.keys.items)
                    .arg(">")
                    .query(conn)
            })?;
            let Some(entry) = first_entry(&read) else {
                continue;
            };
            let (id, fields) = entry;
            let id = id.to_owned();
            let _: Value = link.run(Duration::ZERO, |conn| {
                scripts::TAKEN
                    .key(&self.keys.items)
                    .key(&self.keys.meta)
                    .key(&self.keys.freed)
                    .arg(&id)
                    .arg(self.delivery.mode())
                    .invoke(conn)
            })?;
            return Ok(vec![self.checked(&mut link, id, fields, 1)?]);
        }
    }

    /// The item in a `TAKE` reply `{id, fields, deliveries}`.
    fn taken(&self, link: &mut Link, reply: &[Value], whole: &Value) -> Result<Taken> {
        match reply {
            [Value::BulkString(id), Value::Array(fields), Value::Int(deliveries)] => {
                let id = String::from_utf8_lossy(id).into_owned();
                self.checked(link, id, fields, (*deliveries).max(1) as u64)
            }
            _ => Err(unexpected(link.broker(), "a get", whole)),
        }
    }

    /// The item of entry `id`, if this crate wrote it: one field `d`. An
    /// entry someone else wrote is an error for that entry, which is then
    /// done with, so the queue goes on.
    fn checked(
        &self,
        link: &mut Link,
        id: String,
        fields: &[Value],
        deliveries: u64,
    ) -> Result<Taken> {
        if let [Value::BulkString(field), Value::BulkString(bytes)] = fields {
            if field == b"d" {
                return Ok(Taken {
                    id,
                    bytes: bytes.clone(),
                    deliveries,
                });
            }
        }
        if matches!(self.delivery, Delivery::AtLeastOnce { .. }) {
            self.done_with(link, &id)?;
        }
        Err(Error::Broker(format!(
            "redis at {}: entry {id} of `{}` was not written by ipc-broker (its fields are not \
             one `d`); it was taken and dropped",
            link.broker().address(),
            self.keys.items
        )))
    }

    /// Marks item `id` done: `true` if this call finished it, `false` if
    /// it was finished already (by another delivery of it).
    pub(crate) fn done(&self, id: &str) -> Result<bool> {
        let mut link = self.link();
        self.done_with(&mut link, id)
    }

    fn done_with(&self, link: &mut Link, id: &str) -> Result<bool> {
        let acked: i64 = link.run(Duration::ZERO, |conn| {
            scripts::DONE
                .key(&self.keys.items)
                .key(&self.keys.done)
                .arg(id)
                .invoke(conn)
        })?;
        Ok(acked == 1)
    }

    /// `(length, pending, last done id)` of the stream at one instant.
    fn state(&self, link: &mut Link) -> Result<(usize, usize, String)> {
        let state: Value = link.run(Duration::ZERO, |conn| {
            scripts::STATE
                .key(&self.keys.items)
                .key(&self.keys.done)
                .invoke(conn)
        })?;
        match &state {
            Value::Array(reply) => match reply.as_slice() {
                [Value::Int(len), Value::Int(pending), Value::BulkString(last)] => Ok((
                    (*len).max(0) as usize,
                    (*pending).max(0) as usize,
                    String::from_utf8_lossy(last).into_owned(),
                )),
                _ => Err(unexpected(link.broker(), "the queue's size", &state)),
            },
            _ => Err(unexpected(link.broker(), "the queue's size", &state)),
        }
    }

    /// Items put and not yet taken.
    pub(crate) fn waiting(&self) -> Result<usize> {
        let mut link = self.link();
        let (len, pending, _) = self.state(&mut link)?;
        Ok(len.saturating_sub(pending))
    }

    /// Items put and not yet done (taken or not).
    pub(crate) fn unfinished(&self) -> Result<usize> {
        let mut link = self.link();
        Ok(self.state(&mut link)?.0)
    }

    /// Waits until every item put is done, or `deadline`.
    pub(crate) fn join(&self, deadline: Deadline) -> Result<()> {
        let mut link = self.link();
        loop {
            let (len, _, last_done) = self.state(&mut link)?;
            if len == 0 {
                return Ok(());
            }
            let Some(block) = block_ms(deadline, BLOCK_SLICE) else {
                return Err(Error::Timeout);
            };
            wait_after(&mut link, &self.keys.done, &last_done, block)?;
        }
    }

    /// Closes the queue for every handle: puts fail with
    /// [`Error::Closed`], gets take what is left and are then told
    /// `Closed`.
    pub(crate) fn close(&self) -> Result<()> {
        let mut link = self.link();
        link.run(Duration::ZERO, |conn| {
            redis::cmd("HSET")
                .arg(&self.keys.meta)
                .arg("closed")
                .arg("1")
                .exec(conn)
        })
    }

    /// Whether the queue was closed.
    pub(crate) fn is_closed(&self) -> Result<bool> {
        let mut link = self.link();
        let closed: Option<String> = link.run(Duration::ZERO, |conn| {
            redis::cmd("HGET")
                .arg(&self.keys.meta)
                .arg("closed")
                .query(conn)
        })?;
        Ok(closed.as_deref() == Some("1"))
    }

    /// Deletes the queue's keys from the server: the items with it.
    pub(crate) fn unlink(&self) -> Result<()> {
        let mut link = self.link();
        link.run(Duration::ZERO, |conn| {
            redis::cmd("DEL")
                .arg(&self.keys.items)
                .arg(&self.keys.meta)
                .arg(&self.keys.freed)
                .arg(&self.keys.done)
                .arg(&self.keys.producers)
                .exec(conn)
        })
    }
}

/// Waits (at most `block` ms) until notification stream `key` has an
/// entry after `id`: the last one seen by the look that decided to wait,
/// so a notification between that look and this wait is not missed.
fn wait_after(link: &mut Link, key: &str, id: &str, block: u64) -> Result<()> {
    let _: Value = link.run(Duration::from_millis(block), |conn| {
        redis::cmd("XREAD")
            .arg("BLOCK")
            .arg(block)
            .arg("STREAMS")
            .arg(key)
            .arg(id)
            .query(conn)
    })?;
    Ok(())
}

/// A handle that goes away takes its sequence number and (when nothing is
/// pending with it) its consumer out of the server, so that neither grows
/// with every handle ever made; skipped when its connection is down.
impl Drop for Stream {
    fn drop(&mut self) {
        let keys = &self.keys;
        let consumer = &self.consumer;
        self.link
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .run_if_connected(|conn| {
                scripts::FORGET
                    .key(&keys.items)
                    .key(&keys.producers)
                    .arg(consumer)
                    .invoke::<i64>(conn)
            });
    }
}

/// The first entry `(id, fields)` of an `XREADGROUP` reply, if any.
fn first_entry(read: &Value) -> Option<(&str, &[Value])> {
    // [[stream, [[id, [field, value, ...]], ...]]]
    let Value::Array(streams) = read else {
        return None;
    };
    let Some(Value::Array(stream)) = streams.first() else {
        return None;
    };
    let Some(Value::Array(entries)) = stream.get(1) else {
        return None;
    };
    let Some(Value::Array(entry)) = entries.first() else {
        return None;
    };
    match entry.as_slice() {
        [Value::BulkString(id), Value::Array(fields)] => {
            Some((std::str::from_utf8(id).ok()?, fields.as_slice()))
        }
        _ => None,
    }
}

/// A reply this crate's scripts never give.
fn unexpected(broker: &Broker, doing: &str, reply: &Value) -> Error {
    Error::Broker(format!(
        "redis at {}: unexpected reply to {doing}: {reply:?}",
        broker.address()
    ))
}

/// A consumer name no other handle uses, now or later: the host, the
/// process, and a count and clock reading of this process.
fn consumer_name() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{host}:{}:{}:{since_epoch:x}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::Relaxed)
    )
}
