//! Call recording, off the media path.
//!
//! The media task must never wait on the disk, so it only copies samples into a frame
//! from a fixed pool and queues it; a writer thread drains the queue into a
//! [`WavWriter`]. Frames go back to the pool through a return channel, so after
//! [`Recorder::start`] pushing allocates nothing. When the writer falls behind and the
//! pool is empty, the frame is dropped and counted rather than blocking.
//!
//! The writer thread checkpoints the WAV header after each second of audio, so a
//! process killed mid-call (even by SIGKILL) leaves a file readable up to the last
//! checkpoint; [`crate::media::wav::repair`] recovers the rest.

use std::io;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::media::wav::WavWriter;

/// Samples per frame: 20 ms of 16 kHz stereo (or 40 ms of 8 kHz stereo). Longer pushes
/// are split over several frames.
pub const FRAME_SAMPLES: usize = 640;

/// Frames in the pool, i.e. the most the writer can fall behind: 2 s of 20 ms frames.
pub const QUEUE_FRAMES: usize = 100;

struct Frame {
    len: usize,
    samples: Box<[i16]>,
}

/// The media side of the queue: takes free frames, hands filled ones to the writer.
struct FrameQueue {
    /// `None` once closed: the writer then drains what is queued and finishes.
    filled: Option<SyncSender<Frame>>,
    free: Receiver<Frame>,
    dropped: u64,
}

/// The writer side of the queue.
struct FrameDrain {
    filled: Receiver<Frame>,
    free: SyncSender<Frame>,
}

/// A pool of `frames` frames, all free. Both channels can hold every frame, so neither
/// side's send ever blocks.
fn frame_queue(frames: usize) -> (FrameQueue, FrameDrain) {
    let (filled_tx, filled_rx) = sync_channel(frames);
    let (free_tx, free_rx) = sync_channel(frames);
    for _ in 0..frames {
        let frame = Frame {
            len: 0,
            samples: vec![0; FRAME_SAMPLES].into_boxed_slice(),
        };
        // Cannot fail: the receiver is alive and the channel holds `frames`.
        let _ = free_tx.try_send(frame);
    }
    let queue = FrameQueue {
        filled: Some(filled_tx),
        free: free_rx,
        dropped: 0,
    };
    (
        queue,
        FrameDrain {
            filled: filled_rx,
            free: free_tx,
        },
    )
}

impl FrameQueue {
    fn push(&mut self, samples: &[i16]) {
        for chunk in samples.chunks(FRAME_SAMPLES) {
            let (Some(filled), Ok(mut frame)) = (&self.filled, self.free.try_recv()) else {
                self.dropped += 1;
                continue;
            };
            frame.samples[..chunk.len()].copy_from_slice(chunk);
            frame.len = chunk.len();
            // Fails only if the writer thread has died (a disk error).
            if filled.try_send(frame).is_err() {
                self.dropped += 1;
            }
        }
    }

    fn close(&mut self) {
        self.filled = None;
    }
}

/// Writes queued frames until the queue is closed and empty, checkpointing the header
/// after each second of audio.
fn drain_into(
    mut writer: WavWriter,
    drain: FrameDrain,
    checkpoint_every: usize,
) -> io::Result<Duration> {
    let mut since_checkpoint = 0;
    while let Ok(frame) = drain.filled.recv() {
        writer.write(&frame.samples[..frame.len])?;
        since_checkpoint += frame.len;
        // The media side may be gone already; then the frame is simply freed.
        let _ = drain.free.try_send(frame);
        if since_checkpoint >= checkpoint_every {
            writer.checkpoint()?;
            since_checkpoint = 0;
        }
    }
    writer.finish()
}

/// The recording handle held by the media task.
pub struct Recorder {
    queue: FrameQueue,
    writer: Option<JoinHandle<io::Result<Duration>>>,
}

impl Recorder {
    /// Creates the file (errors are returned here, not later) and starts the writer
    /// thread with a preallocated pool of [`QUEUE_FRAMES`] frames.
    pub fn start(path: &Path, sample_rate: u32, channels: u16) -> io::Result<Recorder> {
        let writer = WavWriter::create(path, sample_rate, channels)?;
        let (queue, drain) = frame_queue(QUEUE_FRAMES);
        let checkpoint_every = sample_rate as usize * usize::from(channels);
        let handle = thread::Builder::new()
            .name("recorder".into())
            .spawn(move || drain_into(writer, drain, checkpoint_every))?;
        Ok(Recorder {
            queue,
            writer: Some(handle),
        })
    }

    /// Queues interleaved samples without blocking. A frame that finds no free slot (the
    /// writer is more than [`QUEUE_FRAMES`] frames behind) is dropped and counted.
    pub fn push(&mut self, samples: &[i16]) {
        self.queue.push(samples);
    }

    /// Frames dropped so far.
    pub fn dropped(&self) -> u64 {
        self.queue.dropped
    }

    /// Ends the recording: waits for the writer to write what is queued, fix the header
    /// and fsync. Returns the recording's length.
    pub fn stop(mut self) -> io::Result<Duration> {
        self.queue.close();
        let handle = self
            .writer
            .take()
            .ok_or_else(|| io::Error::other("recorder already stopped"))?;
        handle
            .join()
            .map_err(|_| io::Error::other("recorder thread panicked"))?
    }
}

impl Drop for Recorder {
    /// Without `stop`, the writer finishes the file in the background.
    fn drop(&mut self) {
        self.queue.close();
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dropped", &self.dropped())
            .finish()
    }
}

/// Interleaves a caller frame and a callee frame into stereo (caller left, callee right)
/// for `out.len() / 2` sample frames; a side with fewer samples (or none, when that leg
/// sent nothing) is padded with silence.
pub fn interleave(left: &[i16], right: &[i16], out: &mut [i16]) {
    for (i, pair) in out.chunks_exact_mut(2).enumerate() {
        pair[0] = left.get(i).copied().unwrap_or(0);
        pair[1] = right.get(i).copied().unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::wav;

    #[test]
    fn interleaves_caller_left_callee_right() {
        let mut out = [9; 8];
        interleave(&[1, 2, 3, 4], &[-1, -2, -3, -4], &mut out);
        assert_eq!(out, [1, -1, 2, -2, 3, -3, 4, -4]);
        interleave(&[5, 6], &[], &mut out);
        assert_eq!(out, [5, 0, 6, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn records_three_seconds_and_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("call.wav");
        let mut recorder = Recorder::start(&path, 8000, 2).unwrap();
        let mut expected = Vec::new();
        // 75 frames of 40 ms: fewer than the pool holds, so none can be dropped however
        // slow the writer thread is.
        for k in 0..75i16 {
            let caller: Vec<i16> = (0..320).map(|i| k * 100 + i).collect();
            let callee: Vec<i16> = caller.iter().map(|s| -s).collect();
            let mut stereo = [0i16; 640];
            interleave(&caller, &callee, &mut stereo);
            recorder.push(&stereo);
            expected.extend_from_slice(&stereo);
        }
        assert_eq!(recorder.dropped(), 0);
        assert_eq!(recorder.stop().unwrap(), Duration::from_secs(3));
        let wav = wav::read(&path).unwrap();
        assert_eq!((wav.sample_rate, wav.channels), (8000, 2));
        assert_eq!(wav.samples, expected);
    }

    #[test]
    fn long_pushes_span_several_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.wav");
        let mut recorder = Recorder::start(&path, 16000, 1).unwrap();
        let samples: Vec<i16> = (0..16000).map(|i| (i % 1000) as i16).collect();
        recorder.push(&samples); // 25 frames
        assert_eq!(recorder.stop().unwrap(), Duration::from_secs(1));
        assert_eq!(wav::read(&path).unwrap().samples, samples);
    }

    #[test]
    fn dropping_the_recorder_still_finishes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropped.wav");
        let mut recorder = Recorder::start(&path, 8000, 1).unwrap();
        recorder.push(&[7; 160]);
        // Keep the thread's handle to wait for it, as the process would keep running.
        let handle = recorder.writer.take().unwrap();
        drop(recorder);
        assert_eq!(handle.join().unwrap().unwrap(), Duration::from_millis(20));
        assert_eq!(wav::read(&path).unwrap().samples, [7; 160]);
    }

    #[test]
    fn full_queue_drops_and_counts_frames() {
        let (mut queue, drain) = frame_queue(4);
        for k in 0..6 {
            queue.push(&[k; 10]);
        }
        assert_eq!(queue.dropped, 2);
        // The writer gets the first four in order, and recycles them.
        for k in 0..4 {
            let frame = drain.filled.try_recv().unwrap();
            assert_eq!(&frame.samples[..frame.len], &[k; 10]);
            drain.free.try_send(frame).unwrap();
        }
        assert!(drain.filled.try_recv().is_err());
        queue.push(&[9; FRAME_SAMPLES + 1]); // two frames
        assert_eq!(queue.dropped, 2);
        assert_eq!(drain.filled.try_recv().unwrap().len, FRAME_SAMPLES);
        assert_eq!(drain.filled.try_recv().unwrap().len, 1);
        queue.close();
        queue.push(&[1]);
        assert_eq!(queue.dropped, 3);
    }

    #[test]
    fn writer_checkpoints_every_second_of_audio() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints.wav");
        let writer = WavWriter::create(&path, 8000, 1).unwrap();
        let (mut queue, drain) = frame_queue(QUEUE_FRAMES);
        // 1.5 s queued, then the writer runs until the queue is empty, but not closed.
        for k in 0..75 {
            queue.push(&[k; 160]);
        }
        let writer_thread = thread::spawn(move || drain_into(writer, drain, 8000));
        // Wait until the writer has taken every frame (they come back to the pool).
        let mut back = 0;
        while back < QUEUE_FRAMES {
            if queue.free.recv().is_ok() {
                back += 1;
            }
        }
        // Written so far and not finished: the header says one second (the checkpoint).
        let wav = wav::read(&path).unwrap();
        assert_eq!(wav.samples.len(), 8000);
        queue.close();
        assert_eq!(
            writer_thread.join().unwrap().unwrap(),
            Duration::from_millis(1500)
        );
    }
}
