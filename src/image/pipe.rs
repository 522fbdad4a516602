//! A pipeline stage: a thread reads a stream in large chunks and hands them to the consumer
//! through a bounded channel, so decompression and hashing run while the main thread writes
//! files. Memory stays bounded (DEPTH chunks of CHUNK bytes per stage).

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

const CHUNK: usize = 256 << 10;
const DEPTH: usize = 8;

pub struct PipeReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    done: bool,
    // returns used buffers to the producer so it does not allocate per chunk
    recycle: SyncSender<Vec<u8>>,
    handle: Option<JoinHandle<()>>,
}

/// Runs `r` on a thread of its own; its output is read from the returned reader.
pub fn spawn<R: Read + Send + 'static>(mut r: R) -> PipeReader {
    let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(DEPTH);
    let (rtx, rrx) = sync_channel::<Vec<u8>>(DEPTH + 2);
    let handle = std::thread::Builder::new()
        .name("berth-pipe".into())
        .spawn(move || {
            loop {
                let mut buf = rrx.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
                buf.resize(CHUNK, 0);
                let mut filled = 0;
                // fill the chunk (decoders return small reads)
                let res = loop {
                    match r.read(&mut buf[filled..]) {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            filled += n;
                            if filled == buf.len() {
                                break Ok(());
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => break Err(e),
                    }
                };
                buf.truncate(filled);
                let eof = filled == 0;
                if filled > 0 && tx.send(Ok(buf)).is_err() {
                    return;
                }
                if let Err(e) = res {
                    let _ = tx.send(Err(e));
                    return;
                }
                if eof {
                    return;
                }
            }
        })
        .expect("spawning a pipeline thread");
    PipeReader {
        rx,
        cur: Vec::new(),
        pos: 0,
        done: false,
        recycle: rtx,
        handle: Some(handle),
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let old = std::mem::replace(&mut self.cur, chunk);
                    let _ = self.recycle.try_send(old);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        // The producer's next send fails once rx is gone and it ends by itself; it is not
        // joined, since it may be blocked reading a pipe whose writer is still going.
        drop(self.handle.take());
    }
}
