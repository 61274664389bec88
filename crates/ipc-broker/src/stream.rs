//! What both queue types are made of: a handle's connections, the queue's
//! keys, and the put, take, done and wait steps over the scripts of
//! [`crate::scripts`].

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ipc_core::{Deadline, Error, Result};
use redis::Value;

use crate::broker::{block_ms, Broker, Link};
use crate::scripts::{self, LAYOUT};

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
    fn visibility_ms(self) -> u64 {
        match self {
            Delivery::AtMostOnce => 0,
            Delivery::AtLeastOnce { visibility } => visibility.as_millis() as u64,
        }
    }
}

/// What one look of a take found.
enum Look {
    Taken(Vec<Taken>),
    /// Nothing now: wait for an entry after this id.
    Nothing(String),
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
    held: String,
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
            held: key("held"),
        }
    }
}

/// One handle on a queue. Each call runs on a connection of its own: an
/// idle one of the handle's, or a new one, so that threads sharing a
/// handle never wait for each other's calls.
pub struct Stream {
    broker: Broker,
    /// Connections not in use by a call.
    idle: Mutex<Vec<Link>>,
    keys: Keys,
    name: String,
    kind: &'static str,
    maxsize: usize,
    delivery: Delivery,
}

/// A connection taken by one call, given back when the call ends.
struct InUse<'a> {
    stream: &'a Stream,
    link: Option<Link>,
}

impl Deref for InUse<'_> {
    type Target = Link;

    fn deref(&self) -> &Link {
        self.link.as_ref().expect("held until dropped")
    }
}

impl DerefMut for InUse<'_> {
    fn deref_mut(&mut self) -> &mut Link {
        self.link.as_mut().expect("held until dropped")
    }
}

impl Drop for InUse<'_> {
    fn drop(&mut self) {
        if let Some(link) = self.link.take() {
            self.stream.idle().push(link);
        }
    }
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
        if name.is_empty() {
            // `ipc:{}:…` would not tag the keys into one cluster slot.
            return Err(Error::InvalidArgument("a queue's name may not be empty"));
        }
        if delivery.visibility_ms() == 0 && delivery != Delivery::AtMostOnce {
            return Err(Error::InvalidArgument(
                "a visibility timeout of less than a millisecond takes every item from its consumer",
            ));
        }
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
            Value::Int(-4) => {
                return Err(Error::Broker(format!(
                    "redis at {}: the maxsize of `{name}` is not a number",
                    broker.address()
                )))
            }
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
        // Every put and take is a transaction: a user the server does not
        // let run one is refused here, rather than half-way through a put.
        link.run(Duration::ZERO, |conn| {
            redis::pipe().cmd("MULTI").cmd("DISCARD").query::<()>(conn)
        })
        .map_err(|e| match e {
            Error::Authentication(why) => Error::Authentication(format!(
                "{why} (a queue's puts and takes are transactions: its user needs MULTI, EXEC \
                 and DISCARD)"
            )),
            other => other,
        })?;
        Ok(Stream {
            broker: broker.clone(),
            idle: Mutex::new(vec![link]),
            keys,
            name: name.to_owned(),
            kind,
            maxsize,
            delivery,
        })
    }

    /// Another handle on the same queue, with connections of its own.
    pub(crate) fn try_clone(&self) -> Result<Stream> {
        Stream::open(
            &self.broker,
            &self.name,
            self.kind,
            self.maxsize,
            self.delivery,
            Opening::Open,
        )
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Link>> {
        // The list is whole whatever panicked while it was held.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection for one call: an idle one, or a new one.
    fn link(&self) -> InUse<'_> {
        let link = self.idle().pop().unwrap_or_else(|| self.broker.link());
        InUse {
            stream: self,
            link: Some(link),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn maxsize(&self) -> usize {
        self.maxsize
    }

    /// Puts `items`, all or none, waiting for room until `deadline`.
    pub(crate) fn put(&self, items: &[&[u8]], deadline: Deadline) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let mut link = self.link();
        // One number per put, however often it is sent.
        let seq = link.next_put();
        loop {
            let producer = link.name().to_owned();
            let put: Value = link.run(Duration::ZERO, |conn| {
                // One transaction: the gate decides, the items go as plain
                // commands (added only if the gate let them), the stream
                // gets its name back if the gate held them.
                let mut transaction = redis::pipe();
                transaction.atomic().ignore_errors();
                transaction
                    .cmd("EVAL")
                    .arg(scripts::GATE)
                    .arg(5)
                    .arg(&self.keys.items)
                    .arg(&self.keys.meta)
                    .arg(&self.keys.freed)
                    .arg(&self.keys.producers)
                    .arg(&self.keys.held)
                    .arg(&producer)
                    .arg(seq)
                    .arg(items.len());
                for item in items {
                    transaction
                        .cmd("XADD")
                        .arg(&self.keys.items)
                        .arg("NOMKSTREAM")
                        .arg("*")
                        .arg("d")
                        .arg(*item);
                }
                transaction
                    .cmd("EVAL")
                    .arg(scripts::RESTORE)
                    .arg(2)
                    .arg(&self.keys.items)
                    .arg(&self.keys.held)
                    .ignore();
                transaction.query(conn)
            })?;
            // The gate's answer, then the `XADD`s'.
            let Some((put, added)) = (match &put {
                Value::Array(answers) => answers.split_first(),
                _ => None,
            }) else {
                return Err(unexpected(link.broker(), "a put", &put));
            };
            let freed_after = match put {
                Value::Array(reply) => match reply.as_slice() {
                    [Value::Int(n)] if *n > 0 => return self.check_added(&link, added),
                    [Value::Int(0), Value::BulkString(id)] => {
                        String::from_utf8_lossy(id).into_owned()
                    }
                    _ => return Err(unexpected(link.broker(), "a put", put)),
                },
                Value::Int(-1) => return Err(Error::Closed),
                Value::Int(-2) => return Err(Error::NotFound(self.name.clone())),
                Value::Int(-4) => {
                    return Err(Error::InvalidArgument(
                        "more items at once than the queue's maxsize",
                    ))
                }
                _ => return Err(unexpected(link.broker(), "a put", put)),
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

    /// Checks the answers of a put's `XADD`s once the gate said the put is
    /// in: every one an id (the items went in), or every one nothing (the
    /// gate held back a put sent twice, which went in the first time).
    /// Anything else means the server refused an item after the gate let
    /// it through (a stream at its last possible id, say): an error, not
    /// an acknowledged put.
    fn check_added(&self, link: &Link, added: &[Value]) -> Result<()> {
        let ids = added
            .iter()
            .filter(|a| matches!(a, Value::BulkString(_) | Value::SimpleString(_)))
            .count();
        let none = added.iter().filter(|a| matches!(a, Value::Nil)).count();
        if ids == added.len() || none == added.len() {
            return Ok(());
        }
        let refused = added
            .iter()
            .find(|a| !matches!(a, Value::BulkString(_) | Value::SimpleString(_)));
        Err(Error::Broker(format!(
            "redis at {}: {ids} of {} items of a put to `{}` went in, then the server refused              one: {}",
            link.broker().address(),
            added.len(),
            self.name,
            refused.map_or_else(String::new, shortened)
        )))
    }

    /// Takes one item, waiting until `deadline`.
    pub(crate) fn take(&self, deadline: Deadline) -> Result<Taken> {
        let mut taken = self.take_many(1, deadline)?;
        // take_many gives at least one item, or an error.
        taken.pop().ok_or(Error::Empty)
    }

    /// Takes between 1 and `most` items in one command, waiting until
    /// `deadline` for the first. Entries this crate did not write among
    /// them are dropped (done with, for a `JoinableQueue`); only a take
    /// that brings nothing else is an error, naming the first of them.
    pub(crate) fn take_many(&self, most: usize, deadline: Deadline) -> Result<Vec<Taken>> {
        let most = most.max(1);
        let mut link = self.link();
        // A `Queue`'s first look does not block, so that a closed and
        // drained queue says so at once; the looks after it wait on the
        // server and take in the same round trip.
        let mut block = None;
        loop {
            let newest = match self.delivery {
                Delivery::AtMostOnce => match self.take_once(&mut link, most, block)? {
                    Some(items) => return Ok(items),
                    None => None,
                },
                Delivery::AtLeastOnce { .. } => match self.take_least(&mut link, most)? {
                    Look::Taken(items) => return Ok(items),
                    Look::Nothing(newest) => Some(newest),
                },
            };
            block = block_ms(deadline, BLOCK_SLICE);
            let Some(block) = block else {
                return Err(match deadline {
                    Deadline::Now => Error::Empty,
                    _ => Error::Timeout,
                });
            };
            if let Some(newest) = newest {
                // A `JoinableQueue` had nothing now: wait for an entry
                // newer than the newest there was (without taking it: the
                // next look takes, in one step, after reclaiming what is
                // due).
                wait_after(&mut link, &self.keys.items, &newest, block)?;
            }
        }
    }

    /// One look of a `Queue`'s take: `XREADGROUP` and [`scripts::TAKEN_ONCE`],
    /// so the items' bytes come back as the read's own answer.
    ///
    /// Without `block`, the two are one transaction. With it, the read
    /// waits on the server for up to `block` ms and the script follows it
    /// in the same pipeline, run once the read has answered: the script
    /// takes whatever is pending with this consumer, which no other
    /// consumer can take in between (other commands may run there, a
    /// close or a delete, and the script sees them), so the pair needs no
    /// transaction (a blocking command in one does not block).
    /// `None` when it took nothing.
    fn take_once(
        &self,
        link: &mut Link,
        most: usize,
        block: Option<u64>,
    ) -> Result<Option<Vec<Taken>>> {
        let consumer = link.name().to_owned();
        let wait = Duration::from_millis(block.unwrap_or(0));
        let answers: Value = link.run(wait, |conn| {
            let mut pipeline = redis::pipe();
            if block.is_none() {
                pipeline.atomic();
            }
            pipeline.ignore_errors();
            self.read_new(&mut pipeline, &consumer, most, block)
                .cmd("EVAL")
                .arg(scripts::TAKEN_ONCE)
                .arg(3)
                .arg(&self.keys.items)
                .arg(&self.keys.meta)
                .arg(&self.keys.freed)
                .arg(&consumer)
                .arg(most)
                .query(conn)
                .and_then(refused_read)
        })?;
        let [read, took] =
            answers_of(answers).map_err(|other| unexpected(link.broker(), "a get", &other))?;
        match took {
            Value::Int(-1) => Err(Error::Closed),
            Value::Int(-2) => Err(Error::NotFound(self.name.clone())),
            Value::Int(n) if n > 0 => {
                // `n` also counts what a take that failed had left pending
                // with this consumer: acknowledged now, and lost, as at
                // most once allows.
                let entries = read_entries(read)
                    .filter(|entries| entries.len() <= n as usize)
                    .ok_or_else(|| misread(link.broker()))?;
                if entries.is_empty() {
                    return Ok(None);
                }
                self.first_deliveries(link, entries).map(Some)
            }
            Value::Int(0) => Ok(None),
            other => Err(unexpected(link.broker(), "a get", &other)),
        }
    }

    /// One look of a `JoinableQueue`'s take: [`scripts::RECLAIM`],
    /// `XREADGROUP` and [`scripts::TAKEN_LEAST`] in one transaction, so the
    /// bytes of new items come back as the read's own answer.
    fn take_least(&self, link: &mut Link, most: usize) -> Result<Look> {
        let consumer = link.name().to_owned();
        let answers: Value = link.run(Duration::ZERO, |conn| {
            let mut transaction = redis::pipe();
            transaction
                .atomic()
                .ignore_errors()
                .cmd("EVAL")
                .arg(scripts::RECLAIM)
                .arg(3)
                .arg(&self.keys.items)
                .arg(&self.keys.meta)
                .arg(&self.keys.held)
                .arg(&consumer)
                .arg(self.delivery.visibility_ms())
                .arg(most);
            self.read_new(&mut transaction, &consumer, most, None)
                .cmd("EVAL")
                .arg(scripts::TAKEN_LEAST)
                .arg(4)
                .arg(&self.keys.items)
                .arg(&self.keys.meta)
                .arg(&self.keys.freed)
                .arg(&self.keys.held)
                .query(conn)
        })?;
        let [reclaimed, read, took] =
            answers_of(answers).map_err(|other| unexpected(link.broker(), "a get", &other))?;
        if matches!(reclaimed, Value::Int(-2)) || matches!(took, Value::Int(-2)) {
            return Err(Error::NotFound(self.name.clone()));
        }
        let Value::Array(reclaimed) = reclaimed else {
            // Items the read gave stay pending, for a later reclaim.
            return Err(unexpected(link.broker(), "a get", &reclaimed));
        };
        match took {
            Value::Array(reply) if matches!(reply.as_slice(), [Value::Int(1)]) => {
                let taken = reclaimed_entries(reclaimed)
                    .filter(|taken| !taken.is_empty())
                    .ok_or_else(|| misread(link.broker()))?;
                self.items(link, taken.into_iter()).map(Look::Taken)
            }
            Value::Array(reply) if matches!(reply.as_slice(), [Value::Int(2)]) => {
                let entries = read_entries(read)
                    .filter(|entries| !entries.is_empty())
                    .ok_or_else(|| misread(link.broker()))?;
                self.first_deliveries(link, entries).map(Look::Taken)
            }
            other => nothing_now(link.broker(), other),
        }
    }

    /// Adds to `pipeline` the read of up to `most` items no consumer had
    /// yet, for `consumer`, waiting up to `block` ms for the first.
    fn read_new<'p>(
        &self,
        pipeline: &'p mut redis::Pipeline,
        consumer: &str,
        most: usize,
        block: Option<u64>,
    ) -> &'p mut redis::Pipeline {
        let read = pipeline
            .cmd("XREADGROUP")
            .arg("GROUP")
            .arg("ipc")
            .arg(consumer)
            .arg("COUNT")
            .arg(most);
        if let Some(block) = block {
            read.arg("BLOCK").arg(block);
        }
        read.arg("STREAMS").arg(&self.keys.items).arg(">")
    }

    /// The items of a read of new entries: each delivered for the first
    /// time.
    fn first_deliveries(
        &self,
        link: &mut Link,
        entries: Vec<(Vec<u8>, Value)>,
    ) -> Result<Vec<Taken>> {
        let entries = entries.into_iter().map(|(id, fields)| (id, fields, 1));
        self.items(link, entries)
    }

    /// The items among `entries` (id, fields, deliveries), without the
    /// entries this crate did not write.
    fn items(
        &self,
        link: &mut Link,
        entries: impl Iterator<Item = (Vec<u8>, Value, i64)>,
    ) -> Result<Vec<Taken>> {
        let mut items = Vec::new();
        let mut foreign = None;
        for (id, fields, deliveries) in entries {
            let id = String::from_utf8_lossy(&id).into_owned();
            // The bytes are moved out of the reply, not copied.
            let ours = match fields {
                Value::Array(fields) => match <[Value; 2]>::try_from(fields) {
                    Ok([Value::BulkString(field), Value::BulkString(bytes)]) if field == b"d" => {
                        Some(bytes)
                    }
                    _ => None,
                },
                Value::Map(fields) => match <[(Value, Value); 1]>::try_from(fields) {
                    Ok([(Value::BulkString(field), Value::BulkString(bytes))]) if field == b"d" => {
                        Some(bytes)
                    }
                    _ => None,
                },
                _ => None,
            };
            match ours {
                Some(bytes) => items.push(Taken {
                    id,
                    bytes,
                    deliveries: deliveries.max(1) as u64,
                }),
                None => {
                    // Not ours: done with, so that it is not delivered
                    // again (a `Queue`'s take deleted it already).
                    if matches!(self.delivery, Delivery::AtLeastOnce { .. }) {
                        self.done_with(link, &id)?;
                    }
                    foreign.get_or_insert(id);
                }
            }
        }
        match foreign {
            Some(id) if items.is_empty() => Err(Error::Broker(format!(
                "redis at {}: entry {id} of `{}` was not written by ipc-broker (its fields are \
                 not one `d`); it was taken and dropped",
                link.broker().address(),
                self.keys.items
            ))),
            _ => Ok(items),
        }
    }

    /// Marks item `id` done: `true` if this call finished it, `false` if
    /// it was finished already (by another delivery of it, or by this call
    /// sent twice when its first answer was lost).
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
        let (len, pending, _) = self.state(&mut self.link())?;
        Ok(len.saturating_sub(pending))
    }

    /// Items put and not yet done (taken or not).
    pub(crate) fn unfinished(&self) -> Result<usize> {
        Ok(self.state(&mut self.link())?.0)
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
        self.link().run(Duration::ZERO, |conn| {
            redis::cmd("HSET")
                .arg(&self.keys.meta)
                .arg("closed")
                .arg("1")
                .exec(conn)
        })
    }

    /// Whether the queue was closed.
    pub(crate) fn is_closed(&self) -> Result<bool> {
        let closed: Option<String> = self.link().run(Duration::ZERO, |conn| {
            redis::cmd("HGET")
                .arg(&self.keys.meta)
                .arg("closed")
                .query(conn)
        })?;
        Ok(closed.as_deref() == Some("1"))
    }

    /// Deletes the queue's keys from the server: the items with it.
    pub(crate) fn unlink(&self) -> Result<()> {
        self.link().run(Duration::ZERO, |conn| {
            redis::cmd("DEL")
                .arg(&self.keys.items)
                .arg(&self.keys.meta)
                .arg(&self.keys.freed)
                .arg(&self.keys.done)
                .arg(&self.keys.producers)
                .arg(&self.keys.held)
                .exec(conn)
        })
    }
}

/// Waits (at most `block` ms) until stream `key` has an entry after `id`:
/// the newest one the look that decided to wait saw, so an entry added
/// between that look and this wait is not missed.
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

/// A handle that goes away takes its connections' sequence numbers and
/// (when nothing is pending with them) their consumers out of the server,
/// so that neither grows with every handle made; skipped for a connection
/// that is down, and bounded by the command timeout.
impl Drop for Stream {
    fn drop(&mut self) {
        let keys = &self.keys;
        let idle = self.idle.get_mut().unwrap_or_else(|e| e.into_inner());
        for link in idle.iter_mut() {
            let name = link.name().to_owned();
            link.run_if_connected(|conn| {
                scripts::FORGET
                    .key(&keys.items)
                    .key(&keys.producers)
                    .arg(&name)
                    .invoke::<i64>(conn)
            });
        }
    }
}

/// A reply this crate's scripts never give.
fn unexpected(broker: &Broker, doing: &str, reply: &Value) -> Error {
    Error::Broker(format!(
        "redis at {}: unexpected reply to {doing}: {}",
        broker.address(),
        shortened(reply)
    ))
}

/// A reply as text for an error message: its first few hundred characters,
/// since a reply may hold items of any size.
fn shortened(reply: &Value) -> String {
    const MOST: usize = 300;
    let mut text = format!("{reply:?}");
    if text.len() > MOST {
        let mut end = MOST;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str(" …");
    }
    text
}

/// `(id, fields)` of each entry of an `XREADGROUP` answer for one stream
/// (an array of `[stream, entries]` pairs, or a map in RESP3), taken apart
/// so that the items' bytes move on without a copy; `Some(vec![])` when it
/// read nothing, `None` when it is not such an answer.
fn read_entries(read: Value) -> Option<Vec<(Vec<u8>, Value)>> {
    let entries = match read {
        Value::Nil => return Some(Vec::new()),
        Value::Array(streams) => {
            let [Value::Array(stream)] = <[Value; 1]>::try_from(streams).ok()? else {
                return None;
            };
            let [_, entries] = <[Value; 2]>::try_from(stream).ok()?;
            entries
        }
        Value::Map(streams) => {
            let [(_, entries)] = <[(Value, Value); 1]>::try_from(streams).ok()?;
            entries
        }
        _ => return None,
    };
    let Value::Array(entries) = entries else {
        return None;
    };
    entries
        .into_iter()
        .map(|entry| match entry {
            Value::Array(entry) => match <[Value; 2]>::try_from(entry).ok()? {
                [Value::BulkString(id), fields] => Some((id, fields)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// `(id, fields, deliveries)` of each entry [`scripts::RECLAIM`] gave.
fn reclaimed_entries(reclaimed: Vec<Value>) -> Option<Vec<(Vec<u8>, Value, i64)>> {
    reclaimed
        .into_iter()
        .map(|entry| match entry {
            Value::Array(entry) => match <[Value; 3]>::try_from(entry).ok()? {
                [Value::BulkString(id), fields, Value::Int(deliveries)] => {
                    Some((id, fields, deliveries))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The answers of a take's read and script, or the read's refusal as an
/// error for [`Link::run`] to judge: a server still loading its data is
/// waited for, a read-only or failing one is an error for the get. In a
/// pipeline (and in a transaction, for an error found only as the read
/// runs) a refused command is one answer among the others, which would
/// otherwise read as nothing taken and have the get look again at once,
/// over and over. A read ended because its stream went away
/// (`UNBLOCKED`), or beside a script that says the queue is closed or
/// gone, is left to the script's answer.
fn refused_read(answers: Value) -> redis::RedisResult<Value> {
    if let Value::Array(list) = &answers {
        if let [Value::ServerError(refusal), took] = list.as_slice() {
            if refusal.code() != "UNBLOCKED" && !matches!(took, Value::Int(-1 | -2)) {
                return Err(refusal.clone().into());
            }
        }
    }
    Ok(answers)
}

/// The `N` answers of a transaction of `N` commands, or the reply itself
/// if it is not that.
fn answers_of<const N: usize>(answers: Value) -> std::result::Result<[Value; N], Value> {
    match answers {
        Value::Array(list) => <[Value; N]>::try_from(list).map_err(Value::Array),
        other => Err(other),
    }
}

/// A take's last answer when it took nothing: closed (and drained), or
/// the id to wait after.
fn nothing_now(broker: &Broker, took: Value) -> Result<Look> {
    match took {
        Value::Int(-1) => Err(Error::Closed),
        Value::Array(reply) => match <[Value; 2]>::try_from(reply) {
            Ok([Value::Int(0), Value::BulkString(newest)]) => {
                Ok(Look::Nothing(String::from_utf8_lossy(&newest).into_owned()))
            }
            Ok(other) => Err(unexpected(broker, "a get", &Value::Array(other.into()))),
            Err(other) => Err(unexpected(broker, "a get", &Value::Array(other))),
        },
        other => Err(unexpected(broker, "a get", &other)),
    }
}

/// The error of a read whose answer is not a list of entries.
fn misread(broker: &Broker) -> Error {
    Error::Broker(format!(
        "redis at {}: a get's read answered with something other than stream entries",
        broker.address()
    ))
}
