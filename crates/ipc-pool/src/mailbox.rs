//! A worker's mailbox: two slots of shared memory, one for the chunk the
//! pool hands it and one for the outcomes that answer a chunk's last
//! tasks, so that a small chunk's frame crosses as one copy, with an
//! empty frame on the socket as its notice.
//!
//! Through the socket alone, a 50 KB chunk frame arrived in two or three
//! parts (the kernel queues a Unix stream's bytes in pieces of about
//! 32 KB), and its reader woke for each: a `map` of trivial tasks spent
//! more on those wake-ups and copies than on its tasks. Now a frame that
//! fits a slot is copied into it, and the socket carries an empty frame
//! that says "it is in the slot". A frame that does not fit goes through
//! the socket whole, as before.
//!
//! Each slot is written by one side and read by the other, and is free
//! for the next frame only when the reader is done with it, which the
//! pool's protocol ensures without any lock:
//! - the pool puts a chunk in [`Slot::Tasks`] only for an idle worker,
//!   which has read its last chunk (it answered every task of it);
//! - a worker puts outcomes in [`Slot::Outcomes`] only when they answer
//!   its chunk's last task, and is sent its next chunk only once the pool
//!   has read them.
//!
//! The reader takes the slot's length word back to zero, and a notice
//! whose slot holds nothing, or a length beyond the slot, is an error: the
//! worker that sent it is a broken worker. What a slot holds is read as a
//! frame from the socket would be, garbage included: a malformed frame of
//! outcomes makes a broken worker too, and outcomes that do not decode
//! fail their tasks.
//!
//! ```text
//! slot: u64 length (little-endian), then that many bytes of the frame
//! ```

use ipc_core::{Connection, Deadline, Error, FdStream, Result};
use ipc_shm::SharedMemory;

/// The bytes of one slot, its length word included: a chunk of a few
/// thousand small tasks fits many times over, and a frame larger than
/// this costs far more to run than the socket's wake-ups.
const SLOT_BYTES: usize = 1 << 20;

/// The length word before a slot's frame.
const LENGTH_BYTES: usize = 8;

/// One of a mailbox's two slots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slot {
    /// The chunk the pool hands the worker.
    Tasks,
    /// The worker's outcomes for its chunk's last tasks.
    Outcomes,
}

impl Slot {
    fn offset(self) -> usize {
        match self {
            Slot::Tasks => 0,
            Slot::Outcomes => SLOT_BYTES,
        }
    }
}

/// A worker's two slots, in one segment the pool and the worker share.
#[derive(Debug)]
pub(crate) struct Mailbox(SharedMemory);

impl Mailbox {
    /// A new mailbox, both slots empty; its pages take memory only once
    /// a frame is written there. Workers forked later (the fork start
    /// method) do not map it: only the worker it is passed to.
    pub fn new() -> Result<Mailbox> {
        let shared = SharedMemory::anonymous(2 * SLOT_BYTES)?;
        shared.exclude_from_forks()?;
        Ok(Mailbox(shared))
    }

    /// The mailbox given to a worker as `shared`, checked for its size.
    pub fn from_shared(shared: SharedMemory) -> Result<Mailbox> {
        if shared.size() < 2 * SLOT_BYTES {
            return Err(Error::InvalidArgument("a pool mailbox is too small"));
        }
        Ok(Mailbox(shared))
    }

    /// Its segment, to pass to the worker.
    pub fn shared(&self) -> &SharedMemory {
        &self.0
    }

    /// Sends `frame` on `socket` by `deadline`: through `slot` with an
    /// empty frame as its notice when it fits there, else whole. An empty
    /// frame is refused: it would read as a notice.
    pub fn send(
        &self,
        slot: Slot,
        frame: &[u8],
        socket: &mut Connection<FdStream>,
        deadline: Deadline,
    ) -> Result<()> {
        if frame.is_empty() {
            return Err(Error::InvalidArgument(
                "an empty frame cannot go through a pool mailbox's socket",
            ));
        }
        if self.put(slot, frame) {
            socket.send_bytes_until(&[], deadline)
        } else {
            socket.send_bytes_until(frame, deadline)
        }
    }

    /// The frame that `received` (a frame read from the socket) stands
    /// for: itself, or for an empty one, the frame in `slot`.
    pub fn open(&self, slot: Slot, received: Vec<u8>) -> Result<Vec<u8>> {
        if received.is_empty() {
            self.take(slot)
        } else {
            Ok(received)
        }
    }

    /// Copies `frame` into `slot` if it fits; `false` if it does not.
    fn put(&self, slot: Slot, frame: &[u8]) -> bool {
        if frame.len() > SLOT_BYTES - LENGTH_BYTES {
            return false;
        }
        let at = slot.offset();
        // In range: the segment holds both slots (checked when made).
        let copied = self
            .0
            .write_at(at + LENGTH_BYTES, frame)
            .and_then(|()| self.0.write_at(at, &(frame.len() as u64).to_le_bytes()));
        copied.is_ok()
    }

    /// Takes the frame in `slot`, leaving the slot empty.
    fn take(&self, slot: Slot) -> Result<Vec<u8>> {
        let at = slot.offset();
        let mut word = [0u8; LENGTH_BYTES];
        self.0.read_at(at, &mut word)?;
        let len = u64::from_le_bytes(word);
        let limit = (SLOT_BYTES - LENGTH_BYTES) as u64;
        if len == 0 || len > limit {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a notice whose mailbox slot holds no frame (its length word says {len})"),
            )));
        }
        let mut frame = vec![0u8; len as usize];
        self.0.read_at(at + LENGTH_BYTES, &mut frame)?;
        self.0.write_at(at, &[0; LENGTH_BYTES])?;
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn pair() -> (Connection<FdStream>, Connection<FdStream>) {
        let (a, b) = UnixStream::pair().unwrap();
        let connection = |s: UnixStream| Connection::new(FdStream::new(s.into()).unwrap());
        (connection(a), connection(b))
    }

    #[test]
    fn a_frame_that_fits_goes_through_its_slot_and_a_larger_one_whole() {
        let mailbox = Mailbox::new().unwrap();
        let (mut ours, mut theirs) = pair();
        let small = vec![7u8; 1000];
        let large = vec![9u8; SLOT_BYTES];
        for (slot, frame) in [
            (Slot::Tasks, &small),
            (Slot::Outcomes, &small),
            (Slot::Tasks, &large),
        ] {
            // Read as it is sent: a whole large frame outgrows the
            // socket's buffer.
            let received = std::thread::scope(|scope| {
                let reader = scope.spawn(|| theirs.recv_bytes().unwrap());
                mailbox
                    .send(slot, frame, &mut ours, Deadline::Never)
                    .unwrap();
                reader.join().unwrap()
            });
            // Only the small one leaves the socket empty.
            assert_eq!(received.is_empty(), frame.len() < SLOT_BYTES);
            assert_eq!(&mailbox.open(slot, received).unwrap(), frame);
        }
        // The largest frame that fits, and one byte more.
        let fits = vec![3u8; SLOT_BYTES - LENGTH_BYTES];
        assert!(mailbox.put(Slot::Outcomes, &fits));
        assert_eq!(mailbox.take(Slot::Outcomes).unwrap(), fits);
        assert!(!mailbox.put(Slot::Outcomes, &vec![3u8; SLOT_BYTES - LENGTH_BYTES + 1]));
        assert!(mailbox
            .send(Slot::Tasks, &[], &mut ours, Deadline::Never)
            .is_err());
        // The two slots do not overlap.
        assert!(mailbox.put(Slot::Tasks, &[1; 100]));
        assert!(mailbox.put(Slot::Outcomes, &[2; 100]));
        assert_eq!(mailbox.take(Slot::Tasks).unwrap(), [1; 100]);
        assert_eq!(mailbox.take(Slot::Outcomes).unwrap(), [2; 100]);
    }

    #[test]
    fn a_notice_with_nothing_or_garbage_in_its_slot_is_an_error() {
        let mailbox = Mailbox::new().unwrap();
        // Nothing was ever put there.
        assert!(mailbox.open(Slot::Outcomes, Vec::new()).is_err());
        // Taken once: a second notice finds nothing.
        assert!(mailbox.put(Slot::Outcomes, &[1, 2, 3, 4]));
        assert_eq!(
            mailbox.open(Slot::Outcomes, Vec::new()).unwrap(),
            [1, 2, 3, 4]
        );
        assert!(mailbox.open(Slot::Outcomes, Vec::new()).is_err());
        // A length word beyond the slot, as a broken worker may write.
        for len in [(SLOT_BYTES - LENGTH_BYTES + 1) as u64, u64::MAX] {
            mailbox
                .shared()
                .write_at(SLOT_BYTES, &len.to_le_bytes())
                .unwrap();
            assert!(mailbox.open(Slot::Outcomes, Vec::new()).is_err());
        }
        // A segment too small to be a mailbox is refused.
        let small = SharedMemory::anonymous(SLOT_BYTES).unwrap();
        assert!(Mailbox::from_shared(small).is_err());
    }
}
