//! iceoryx2's publish/subscribe on large items (1 producer / 1 consumer),
//! beside the queue written and read in place (see [`super::in_place`]).
//!
//! Built only with ipc-bench's `iceoryx2` cargo feature, which
//! `cargo xtask bench` turns on; without it the registry lists the
//! contender and skips it (see `contenders::registry`).
//!
//! # Setup
//!
//! The parent makes an iceoryx2 node and, for each item size, a
//! publish/subscribe service of `[u8]` slices with one publisher; the peer
//! (`ipc-bench --peer`) opens the same services with one subscriber each and
//! says it is ready on the control connection before the first run. Each
//! service holds 16 items in flight, like the queue's ring: a subscriber
//! buffer of 16 samples, one borrowed sample, no history, and a publisher
//! that loans one sample at a time from a data segment sized for items of
//! that size.
//!
//! Nothing may be lost: safe overflow (overwriting the oldest sample) is
//! off, and the publisher's backpressure is to retry until the subscriber
//! has room, for at most [`PATIENCE`]; a send that reached no subscriber
//! is an error, and at the end of each run the subscriber sends back on
//! the control connection the count of samples it received (one more if
//! another is still waiting), which must be the count sent.
//!
//! One item: the publisher `loan_slice_uninit`s a sample of the item's
//! size, `write_from_slice`s the stamped payload into it (one copy, as the
//! in-place queue's producer does) and sends it; the subscriber receives
//! it, checks its length and stamps where it lies and drops it, which
//! hands the memory back. iceoryx2's `receive` does not block (waking a
//! subscriber takes an event service beside the data), so the subscriber
//! polls, yielding its CPU between polls.
//!
//! # Files
//!
//! iceoryx2 keeps a service's shared memory in `/dev/shm` and its nodes'
//! and services' records under a root directory (`/tmp/iceoryx2/` by
//! default), and keeps a management segment in `/dev/shm` for good. Every
//! file of one contender's run is made in a domain of its own: a file-name
//! prefix and a root directory named after the process id and a count.
//! When the contender finishes (the peer gone and the parent's node
//! dropped), whatever iceoryx2 left there is removed; domains of ipc-bench
//! processes that no longer exist (killed before they could clean up) are
//! removed when the contender starts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ::iceoryx2::config::Config;
use ::iceoryx2::port::publisher::Publisher;
use ::iceoryx2::port::subscriber::Subscriber;
use ::iceoryx2::port::{BackpressureAction, BackpressureInfo};
use ::iceoryx2::prelude::*;
use ::iceoryx2::service::port_factory::publish_subscribe::PortFactory;
use ipc_core::process::{inherited, Child, Process};
use ipc_core::Connection;

use super::in_place::{self, ITEMS_IN_FLIGHT, SIZES};
use super::{quit_peer, serve_runs, spawn_peer, Contender, Control, Entry, Run, ICEORYX2};
use crate::bench::{Benchmark, Result, Sample, Via};

/// How long a publisher retries a sample the subscriber has no room for,
/// and a subscriber waits for the next sample, before the run fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// What the peer says once its subscribers are connected.
const READY: &str = "subscribed";

/// The registry entry.
pub fn entry() -> Entry {
    Entry {
        name: ICEORYX2,
        about: "iceoryx2 0.10 publish/subscribe of `[u8]` slices (one service per item \
                size: subscriber buffer of 4, no history, no safe overflow, the publisher \
                retrying until delivered): the publisher `loan_slice_uninit`s each item, \
                `write_from_slice`s the payload into it and `send`s it; the subscriber \
                polls `receive`, checks the sample's length and stamps where it lies and \
                drops it",
        start,
        peer: Some(peer),
        runs: in_place::large_one_to_one,
    }
}

type Slices = [u8];

/// The file-name prefix and root directory of one run's iceoryx2 files.
struct Domain {
    id: String,
}

/// What every domain's prefix and root directory start with.
const PREFIX: &str = "iox2_ipc-bench-";
const ROOT: &str = "iceoryx2-ipc-bench-";

impl Domain {
    /// A domain no other run uses: this process's id and a count.
    fn new() -> Domain {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        Domain {
            id: format!("{}-{run}", std::process::id()),
        }
    }

    fn prefix(id: &str) -> String {
        format!("{PREFIX}{id}_")
    }

    fn root(id: &str) -> PathBuf {
        std::env::temp_dir().join(format!("{ROOT}{id}"))
    }

    /// The iceoryx2 configuration of domain `id`: its own prefix and root,
    /// and no configuration file read from the machine.
    fn config(id: &str) -> Result<Config> {
        let mut config = Config::default();
        config.global.prefix = FileName::new(Self::prefix(id).as_bytes())
            .map_err(|e| format!("iceoryx2 prefix of {id}: {e:?}"))?;
        let root = format!("{}/", Self::root(id).display());
        config.global.set_root_path(
            &Path::new(root.as_bytes()).map_err(|e| format!("iceoryx2 root {root}: {e:?}"))?,
        );
        Ok(config)
    }

    /// Removes what iceoryx2 left of domain `id`.
    fn sweep(id: &str) -> Result {
        let root = Self::root(id);
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        let prefix = Self::prefix(id);
        for entry in std::fs::read_dir("/dev/shm")? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(())
    }

    /// Removes the domains of ipc-bench processes that no longer exist.
    fn sweep_stale() -> Result {
        let dead = |rest: &str| {
            rest.split(['-', '_'])
                .next()
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !PathBuf::from(format!("/proc/{pid}")).exists())
        };
        for entry in std::fs::read_dir("/dev/shm")? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.strip_prefix(PREFIX).is_some_and(dead) {
                std::fs::remove_file(entry.path())?;
            }
        }
        for entry in std::fs::read_dir(std::env::temp_dir())? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.strip_prefix(ROOT).is_some_and(dead) {
                std::fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        if let Err(e) = Domain::sweep(&self.id) {
            eprintln!(
                "{ICEORYX2}: cannot remove the files of domain {}: {e}",
                self.id
            );
        }
    }
}

/// A node of domain `id`. It leaves the process's signals alone: by
/// default a node catches SIGINT and SIGTERM, and Ctrl-C must still stop
/// ipc-bench.
fn node(id: &str) -> Result<Node<ipc::Service>> {
    Ok(NodeBuilder::new()
        .config(&Domain::config(id)?)
        .signal_handling_mode(SignalHandlingMode::Disabled)
        .create::<ipc::Service>()?)
}

/// The service of domain `id` for items of `size` bytes, created by the
/// parent or opened by the peer with the same settings.
fn service(
    node: &Node<ipc::Service>,
    id: &str,
    size: usize,
    create: bool,
) -> Result<PortFactory<ipc::Service, Slices, ()>> {
    let name = format!("ipc-bench/{id}/large-{size}");
    let name: ServiceName = name.as_str().try_into()?;
    let builder = node
        .service_builder(&name)
        .publish_subscribe::<Slices>()
        .enable_safe_overflow(false)
        .subscriber_max_buffer_size(ITEMS_IN_FLIGHT)
        .subscriber_max_borrowed_samples(1)
        .history_size(0)
        .max_publishers(1)
        .max_subscribers(1)
        .max_nodes(2);
    Ok(if create {
        builder.create()?
    } else {
        builder.open()?
    })
}

/// The index of `size` in [`SIZES`].
fn size_index(size: usize) -> Result<usize> {
    SIZES
        .iter()
        .position(|&s| s == size)
        .ok_or_else(|| format!("no service for items of {size} bytes").into())
}

/// The parent: the publishers, their node, the peer and the domain.
struct Iceoryx2 {
    /// One per [`SIZES`].
    publishers: Vec<Publisher<ipc::Service, Slices, ()>>,
    node: Node<ipc::Service>,
    ctl: Connection,
    child: Child,
    payload: Vec<u8>,
    /// Last: fields drop in order, so even without `finish` its sweep
    /// comes after the ports and the node are gone.
    domain: Domain,
}

fn start() -> Result<Option<Box<dyn Contender>>> {
    Domain::sweep_stale()?;
    let domain = Domain::new();
    let node = node(&domain.id)?;
    let mut publishers = Vec::new();
    for &size in &SIZES {
        let publisher = service(&node, &domain.id, size, true)?
            .publisher_builder()
            .initial_max_slice_len(size)
            .allocation_strategy(AllocationStrategy::Static)
            .max_loaned_samples(1)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            // The strategy alone would retry forever: a subscriber that
            // stopped taking samples must fail the run instead.
            .set_backpressure_handler(|info: &BackpressureInfo| {
                if info.elapsed_time < PATIENCE {
                    BackpressureAction::Retry
                } else {
                    BackpressureAction::DiscardDataAndFail
                }
            })
            .create()?;
        publishers.push(publisher);
    }
    let (mut ctl, mut child) = spawn_peer(ICEORYX2, Process::new(), &[&domain.id])?;
    match ctl.recv::<String>() {
        Ok(ready) if ready == READY => {}
        other => {
            let _ = quit_peer(&mut ctl, &mut child);
            return Err(format!("the iceoryx2 peer did not subscribe: {other:?}").into());
        }
    }
    Ok(Some(Box::new(Iceoryx2 {
        publishers,
        node,
        ctl,
        child,
        payload: in_place::stamped(in_place::MAX_ITEM),
        domain,
    })))
}

impl Contender for Iceoryx2 {
    fn run(&mut self, bench: Benchmark, count: usize, _cpu: Option<usize>) -> Result<Sample> {
        if bench.via != Via::Large {
            return Err(format!("{ICEORYX2} cannot run {bench}").into());
        }
        let size = bench.size;
        let publisher = &self.publishers[size_index(size)?];
        in_place::stamp(&mut self.payload[..size]);
        let payload = &self.payload[..size];
        self.ctl.send(&Control::Run {
            bench,
            warmup: 0,
            count,
            cpu: None,
        })?;
        let start = Instant::now();
        for _ in 0..count {
            let sample = publisher.loan_slice_uninit(size)?;
            let sample = sample.write_from_slice(payload);
            if sample.send()? != 1 {
                return Err("a sample reached no subscriber".into());
            }
        }
        let received: u64 = self.ctl.recv()?;
        let elapsed = start.elapsed();
        if received != count as u64 {
            return Err(format!("the subscriber received {received} of {count} samples").into());
        }
        Ok(Sample::Throughput {
            messages: count,
            size,
            elapsed_ns: elapsed.as_nanos() as f64,
        })
    }

    fn finish(self: Box<Self>) -> Result<()> {
        let Iceoryx2 {
            publishers,
            node,
            mut ctl,
            mut child,
            payload: _,
            domain,
        } = *self;
        // The peer's subscribers and node go first, then the publishers
        // and the node that removes the services, then the leftovers.
        let quit = quit_peer(&mut ctl, &mut child);
        drop(publishers);
        drop(node);
        drop(domain);
        quit
    }
}

/// Waits for the next sample, polling: `receive` does not block.
fn next(
    subscriber: &Subscriber<ipc::Service, Slices, ()>,
) -> Result<::iceoryx2::sample::Sample<ipc::Service, Slices, ()>> {
    let mut deadline = None;
    loop {
        if let Some(sample) = subscriber.receive()? {
            return Ok(sample);
        }
        // The clock is read only once the first poll came back empty.
        let deadline = *deadline.get_or_insert_with(|| Instant::now() + PATIENCE);
        if Instant::now() > deadline {
            return Err(format!("no sample within {} s", PATIENCE.as_secs()).into());
        }
        std::thread::yield_now();
    }
}

fn peer(args: &[String]) -> Result {
    let id = args.first().ok_or("the iceoryx2 peer needs its domain")?;
    let node = node(id)?;
    let subscribers = SIZES
        .iter()
        .map(|&size| {
            Ok(service(&node, id, size, false)?
                .subscriber_builder()
                .create()?)
        })
        .collect::<Result<Vec<_>>>()?;
    let mut ctl: Connection = inherited("ctl")?;
    ctl.send(&READY)?;
    serve_runs(&mut ctl, |ctl, run| {
        let Run { bench, count, .. } = run;
        if bench.via != Via::Large {
            return Err(format!("the iceoryx2 peer cannot run {bench}").into());
        }
        let size = bench.size;
        let subscriber = &subscribers[size_index(size)?];
        let mut received = 0u64;
        for _ in 0..count {
            let sample = next(subscriber)?;
            in_place::check(sample.payload(), size)?;
            received += 1;
        }
        // The publisher sent `count` and no more: one left over would be a
        // sample delivered twice, or one of an earlier run.
        if subscriber.has_samples()? {
            received += 1;
        }
        Ok(ctl.send(&received)?)
    })
}
