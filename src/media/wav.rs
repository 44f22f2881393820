//! WAV files: reading prompts and music on hold, writing call recordings.
//!
//! The reader is lenient where real files are sloppy (any chunk order, extra chunks,
//! missing pad bytes, a data chunk cut short by a killed writer) and strict about
//! what it can't decode: 16-bit and 8-bit PCM, G.711 μ-law and A-law, plain or as
//! WAVE_FORMAT_EXTENSIBLE, all decoded to interleaved 16-bit samples.
//!
//! The writer is crash-safe rather than crash-proof: the header starts with the
//! streaming placeholder sizes (0xFFFFFFFF, "to the end of the file"), and each
//! [`WavWriter::checkpoint`] flushes the samples and writes the real sizes, so a process
//! killed at any point leaves a file that reads correctly up to its last checkpoint (or to
//! its last flushed byte before the first one). [`repair`] recomputes the sizes from the
//! file length for files cut short after a checkpoint.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

/// Decoded audio: interleaved 16-bit samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wav {
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: Vec<i16>,
}

impl Wav {
    pub fn duration(&self) -> Duration {
        let frames = self.samples.len() as u64 / u64::from(self.channels.max(1));
        frames_duration(frames, self.sample_rate)
    }
}

#[derive(Debug)]
pub enum WavError {
    Io(io::Error),
    /// No "RIFF" at the start (or the file is shorter than a RIFF header).
    NotRiff,
    /// A RIFF file of another kind (AVI, WebP...).
    NotWave,
    MissingFormat,
    MissingData,
    /// The "fmt " chunk is malformed.
    BadFormat(&'static str),
    /// A well-formed format this reader doesn't decode.
    Unsupported {
        format: u16,
        bits: u16,
    },
}

impl fmt::Display for WavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WavError::Io(e) => write!(f, "reading WAV file: {e}"),
            WavError::NotRiff => f.write_str("not a WAV file (no RIFF header)"),
            WavError::NotWave => f.write_str("a RIFF file but not WAVE audio"),
            WavError::MissingFormat => f.write_str("WAV file has no \"fmt \" chunk"),
            WavError::MissingData => f.write_str("WAV file has no \"data\" chunk"),
            WavError::BadFormat(why) => write!(f, "malformed WAV format chunk: {why}"),
            WavError::Unsupported { format, bits } => write!(
                f,
                "unsupported WAV encoding (format tag {format:#06x}, {bits} bits per sample); \
                 use 16-bit PCM, 8-bit PCM, μ-law or A-law"
            ),
        }
    }
}

impl std::error::Error for WavError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WavError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for WavError {
    fn from(e: io::Error) -> Self {
        WavError::Io(e)
    }
}

const FORMAT_PCM: u16 = 1;
const FORMAT_ALAW: u16 = 6;
const FORMAT_MULAW: u16 = 7;
const FORMAT_EXTENSIBLE: u16 = 0xfffe;
/// Bytes 2..16 of every KSDATAFORMAT_SUBTYPE GUID built from a format tag
/// (xxxx0000-0000-0010-8000-00aa00389b71); the first two bytes are the tag.
const SUBFORMAT_SUFFIX: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71,
];
/// The data size meaning "to the end of the file" (streamed WAV).
const SIZE_UNKNOWN: u32 = u32::MAX;
/// Header bytes before the samples, as written by [`WavWriter`].
const HEADER_LEN: u64 = 44;

#[derive(Clone, Copy)]
enum Encoding {
    Pcm16,
    Pcm8,
    Mulaw,
    Alaw,
}

impl Encoding {
    fn bytes(self) -> usize {
        match self {
            Encoding::Pcm16 => 2,
            Encoding::Pcm8 | Encoding::Mulaw | Encoding::Alaw => 1,
        }
    }
}

struct Format {
    encoding: Encoding,
    channels: u16,
    sample_rate: u32,
}

pub fn read(path: &Path) -> Result<Wav, WavError> {
    read_bytes(&std::fs::read(path)?)
}

pub fn read_bytes(bytes: &[u8]) -> Result<Wav, WavError> {
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" {
        return Err(WavError::NotRiff);
    }
    if &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWave);
    }
    let mut format = None;
    let mut data = None;
    let mut pos = 12;
    // The RIFF size is ignored: chunks run to the end of what is there.
    while let Some(header) = bytes.get(pos..pos + 8) {
        let id = &header[0..4];
        let declared = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = pos + 8;
        let available = bytes.len() - start;
        let size = usize::try_from(declared).unwrap_or(usize::MAX);
        let body = &bytes[start..start + size.min(available)];
        match id {
            b"fmt " if format.is_none() => format = Some(parse_format(body)?),
            b"data" if data.is_none() => {
                data = Some(body);
                // Cut short, or streamed: nothing can follow.
                if declared == SIZE_UNKNOWN || size > available {
                    break;
                }
            }
            _ => {}
        }
        // Chunks are padded to even length.
        pos = start.saturating_add(size).saturating_add(size & 1);
    }
    let format = format.ok_or(WavError::MissingFormat)?;
    let data = data.ok_or(WavError::MissingData)?;
    Ok(Wav {
        sample_rate: format.sample_rate,
        channels: format.channels,
        samples: decode(format.encoding, usize::from(format.channels), data),
    })
}

fn parse_format(body: &[u8]) -> Result<Format, WavError> {
    if body.len() < 16 {
        return Err(WavError::BadFormat("shorter than 16 bytes"));
    }
    let u16_at = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
    let mut tag = u16_at(0);
    let channels = u16_at(2);
    let sample_rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
    let bits = u16_at(14);
    if tag == FORMAT_EXTENSIBLE {
        let Some(guid) = body.get(24..40) else {
            return Err(WavError::BadFormat(
                "WAVE_FORMAT_EXTENSIBLE without a subformat",
            ));
        };
        if guid[2..] != SUBFORMAT_SUFFIX {
            return Err(WavError::Unsupported { format: tag, bits });
        }
        tag = u16::from_le_bytes([guid[0], guid[1]]);
    }
    if channels == 0 {
        return Err(WavError::BadFormat("zero channels"));
    }
    if sample_rate == 0 {
        return Err(WavError::BadFormat("zero sample rate"));
    }
    let encoding = match (tag, bits) {
        (FORMAT_PCM, 16) => Encoding::Pcm16,
        (FORMAT_PCM, 8) => Encoding::Pcm8,
        (FORMAT_MULAW, 8) => Encoding::Mulaw,
        (FORMAT_ALAW, 8) => Encoding::Alaw,
        (format, bits) => return Err(WavError::Unsupported { format, bits }),
    };
    Ok(Format {
        encoding,
        channels,
        sample_rate,
    })
}

/// Decodes whole frames (one sample per channel); a trailing partial frame is dropped.
fn decode(encoding: Encoding, channels: usize, data: &[u8]) -> Vec<i16> {
    let frame = encoding.bytes() * channels;
    let data = &data[..data.len() / frame * frame];
    match encoding {
        Encoding::Pcm16 => data
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect(),
        Encoding::Pcm8 => data.iter().map(|&b| (i16::from(b) - 128) << 8).collect(),
        Encoding::Mulaw => data.iter().map(|&b| mulaw_decode(b)).collect(),
        Encoding::Alaw => data.iter().map(|&b| alaw_decode(b)).collect(),
    }
}

/// G.711 μ-law to linear (ITU-T G.711 table, scaled to 16 bits): the byte is stored
/// inverted; 3 exponent bits and 4 mantissa bits on a bias of 0x84.
fn mulaw_decode(byte: u8) -> i16 {
    let u = !byte;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i16::from(u & 0x0f);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    if u & 0x80 != 0 { -magnitude } else { magnitude }
}

/// G.711 A-law to linear (scaled to 16 bits): even bits inverted (XOR 0x55), sign bit set
/// for positive values.
fn alaw_decode(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i16::from(a & 0x0f);
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    if a & 0x80 != 0 { magnitude } else { -magnitude }
}

fn frames_duration(frames: u64, sample_rate: u32) -> Duration {
    let rate = u64::from(sample_rate.max(1));
    Duration::from_secs(frames / rate)
        + Duration::from_nanos((frames % rate) * 1_000_000_000 / rate)
}

/// A 16-bit PCM WAV header for `data_len` bytes of samples (or the streaming
/// placeholder).
fn header(sample_rate: u32, channels: u16, data_len: u32) -> [u8; HEADER_LEN as usize] {
    let block_align = channels.saturating_mul(2);
    let byte_rate = sample_rate.saturating_mul(u32::from(block_align));
    let riff_len = if data_len == SIZE_UNKNOWN {
        SIZE_UNKNOWN
    } else {
        data_len + 36
    };
    let mut h = [0; HEADER_LEN as usize];
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&riff_len.to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&FORMAT_PCM.to_le_bytes());
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&sample_rate.to_le_bytes());
    h[28..32].copy_from_slice(&byte_rate.to_le_bytes());
    h[32..34].copy_from_slice(&block_align.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// The most sample bytes a RIFF size field can describe.
const MAX_DATA: u64 = u32::MAX as u64 - 36;

/// Writes a 16-bit PCM WAV file.
pub struct WavWriter {
    /// `None` once finished (so `Drop` knows there is nothing left to do).
    out: Option<BufWriter<File>>,
    sample_rate: u32,
    channels: u16,
    data_len: u64,
}

impl WavWriter {
    pub fn create(path: &Path, sample_rate: u32, channels: u16) -> io::Result<WavWriter> {
        if sample_rate == 0 || channels == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "WAV needs a sample rate and at least one channel",
            ));
        }
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(&header(sample_rate, channels, SIZE_UNKNOWN))?;
        Ok(WavWriter {
            out: Some(out),
            sample_rate,
            channels,
            data_len: 0,
        })
    }

    /// Appends interleaved samples (buffered; on disk at the next checkpoint).
    pub fn write(&mut self, samples: &[i16]) -> io::Result<()> {
        let out = self.out.as_mut().ok_or_else(finished)?;
        let bytes = 2 * samples.len() as u64;
        if self.data_len + bytes > MAX_DATA {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "WAV file would exceed 4 GiB",
            ));
        }
        let mut buf = [0u8; 1024];
        for chunk in samples.chunks(buf.len() / 2) {
            for (b, s) in buf.chunks_exact_mut(2).zip(chunk) {
                b.copy_from_slice(&s.to_le_bytes());
            }
            out.write_all(&buf[..2 * chunk.len()])?;
        }
        self.data_len += bytes;
        Ok(())
    }

    /// Flushes and writes the real sizes into the header, so the file is complete up to
    /// here even if the process is killed next. (It does not fsync: that survives a
    /// crash of the process, not of the machine.)
    pub fn checkpoint(&mut self) -> io::Result<()> {
        let out = self.out.as_mut().ok_or_else(finished)?;
        out.flush()?;
        let file = out.get_mut();
        // The data size first: it is what readers go by.
        let data_len = self.data_len as u32; // at most MAX_DATA, checked in write
        file.seek(SeekFrom::Start(40))?;
        file.write_all(&data_len.to_le_bytes())?;
        file.seek(SeekFrom::Start(4))?;
        file.write_all(&(data_len + 36).to_le_bytes())?;
        file.seek(SeekFrom::End(0))?;
        Ok(())
    }

    /// Writes the final header and fsyncs; returns the length of the recording.
    pub fn finish(mut self) -> io::Result<Duration> {
        self.checkpoint()?;
        if let Some(out) = self.out.take() {
            out.get_ref().sync_all()?;
        }
        Ok(self.duration())
    }

    /// The length of what has been written so far.
    pub fn duration(&self) -> Duration {
        frames_duration(
            self.data_len / (2 * u64::from(self.channels)),
            self.sample_rate,
        )
    }
}

impl Drop for WavWriter {
    /// Unfinished: leave a readable file (errors have nowhere to go).
    fn drop(&mut self) {
        if self.out.is_some() {
            let _ = self.checkpoint();
        }
    }
}

fn finished() -> io::Error {
    io::Error::other("WAV writer already finished")
}

/// Fixes the RIFF and data sizes of a file cut short (a recording whose process died
/// after a checkpoint): the data chunk is taken to run to the end of the file, minus any
/// trailing partial sample frame, which is cut off. Assumes "data" is the last chunk, as
/// [`WavWriter`] writes it.
pub fn repair(path: &Path) -> io::Result<()> {
    let invalid = |why: &'static str| io::Error::new(io::ErrorKind::InvalidData, why);
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut riff = [0u8; 12];
    file.read_exact(&mut riff)
        .map_err(|_| invalid("not a WAV file"))?;
    if &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
        return Err(invalid("not a WAV file"));
    }
    let mut frame_bytes = 1;
    let mut pos = 12u64;
    let data_start = loop {
        let mut chunk = [0u8; 8];
        if pos + 8 > len {
            return Err(invalid("WAV file has no data chunk"));
        }
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        let size = u64::from(u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]));
        match &chunk[0..4] {
            b"data" => break pos + 8,
            b"fmt " => {
                let mut fmt = [0u8; 16];
                if size >= 16 && file.read_exact(&mut fmt).is_ok() {
                    let channels = u64::from(u16::from_le_bytes([fmt[2], fmt[3]]));
                    let bits = u64::from(u16::from_le_bytes([fmt[14], fmt[15]]));
                    frame_bytes = (channels * bits.div_ceil(8)).max(1);
                }
            }
            _ => {}
        }
        pos += 8 + size + (size & 1);
    };
    let available = len.saturating_sub(data_start).min(MAX_DATA);
    let data_len = available - available % frame_bytes;
    file.set_len(data_start + data_len)?;
    file.seek(SeekFrom::Start(data_start - 4))?;
    file.write_all(&(data_len as u32).to_le_bytes())?;
    file.seek(SeekFrom::Start(4))?;
    let riff_len = u32::try_from(data_start + data_len - 8).unwrap_or(u32::MAX);
    file.write_all(&riff_len.to_le_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Vec<i16> {
        (0..n)
            .map(|i| (i as i32 * 7919 % 65536 - 32768) as i16)
            .collect()
    }

    /// A RIFF/WAVE file from (id, body) chunks, padding odd bodies.
    fn riff(chunks: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
        let mut body = b"WAVE".to_vec();
        for (id, data) in chunks {
            body.extend_from_slice(*id);
            body.extend_from_slice(&(data.len() as u32).to_le_bytes());
            body.extend_from_slice(data);
            if data.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut file = b"RIFF".to_vec();
        file.extend_from_slice(&(body.len() as u32).to_le_bytes());
        file.extend(body);
        file
    }

    fn fmt(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let align = channels * bits / 8;
        let mut f = Vec::new();
        f.extend_from_slice(&tag.to_le_bytes());
        f.extend_from_slice(&channels.to_le_bytes());
        f.extend_from_slice(&rate.to_le_bytes());
        f.extend_from_slice(&(rate * u32::from(align)).to_le_bytes());
        f.extend_from_slice(&align.to_le_bytes());
        f.extend_from_slice(&bits.to_le_bytes());
        f
    }

    fn extensible(subformat: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let mut f = fmt(FORMAT_EXTENSIBLE, channels, rate, bits);
        f.extend_from_slice(&22u16.to_le_bytes()); // cbSize
        f.extend_from_slice(&bits.to_le_bytes()); // valid bits
        f.extend_from_slice(&0u32.to_le_bytes()); // channel mask
        f.extend_from_slice(&subformat.to_le_bytes());
        f.extend_from_slice(&SUBFORMAT_SUFFIX);
        f
    }

    #[test]
    fn written_files_read_back_identical() {
        let dir = tempfile::tempdir().unwrap();
        for (rate, channels) in [(8000, 1), (16000, 1), (8000, 2), (16000, 2)] {
            let path = dir.path().join(format!("{rate}-{channels}.wav"));
            let samples = ramp(rate as usize * usize::from(channels) / 2); // 0.5 s
            let mut w = WavWriter::create(&path, rate, channels).unwrap();
            for chunk in samples.chunks(333 * usize::from(channels)) {
                w.write(chunk).unwrap();
            }
            assert_eq!(w.finish().unwrap(), Duration::from_millis(500));
            let wav = read(&path).unwrap();
            assert_eq!((wav.sample_rate, wav.channels), (rate, channels));
            assert_eq!(wav.samples, samples);
            assert_eq!(wav.duration(), Duration::from_millis(500));
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len(), 44 + 2 * samples.len());
            assert_eq!(
                &bytes[..44],
                &header(rate, channels, 2 * samples.len() as u32)
            );
        }
    }

    #[test]
    fn header_matches_the_canonical_layout() {
        let h = header(8000, 1, 320);
        assert_eq!(
            h,
            *b"RIFF\x64\x01\0\0WAVEfmt \x10\0\0\0\x01\0\x01\0\x40\x1f\0\0\x80\x3e\0\0\x02\0\x10\0data\x40\x01\0\0"
        );
    }

    #[test]
    fn killed_writer_leaves_the_checkpointed_samples() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("killed.wav");
        let samples = ramp(12000);
        let mut w = WavWriter::create(&path, 8000, 1).unwrap();
        w.write(&samples[..8000]).unwrap();
        w.checkpoint().unwrap();
        w.write(&samples[8000..]).unwrap();
        // A kill: no destructor, buffered bytes lost.
        std::mem::forget(w);
        let wav = read(&path).unwrap();
        assert!(wav.samples.len() >= 8000);
        assert_eq!(wav.samples, samples[..wav.samples.len()]);
    }

    #[test]
    fn killed_before_any_checkpoint_reads_what_reached_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("early.wav");
        let samples = ramp(20000); // more than the write buffer, so some reaches the file
        let mut w = WavWriter::create(&path, 8000, 1).unwrap();
        w.write(&samples).unwrap();
        std::mem::forget(w);
        let wav = read(&path).unwrap();
        assert!(!wav.samples.is_empty());
        assert_eq!(wav.samples, samples[..wav.samples.len()]);
    }

    #[test]
    fn dropped_writer_fixes_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropped.wav");
        let samples = ramp(5000);
        let mut w = WavWriter::create(&path, 16000, 2).unwrap();
        w.write(&samples).unwrap();
        drop(w);
        assert_eq!(read(&path).unwrap().samples, samples);
    }

    #[test]
    fn repair_fixes_a_stale_header_and_cuts_a_partial_frame() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stale.wav");
        let samples = ramp(10000);
        let mut w = WavWriter::create(&path, 8000, 2).unwrap();
        w.write(&samples).unwrap();
        w.finish().unwrap();
        // As if the header had last been fixed at 1000 bytes, and the process died mid-frame.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[4..8].copy_from_slice(&1036u32.to_le_bytes());
        bytes[40..44].copy_from_slice(&1000u32.to_le_bytes());
        bytes.extend_from_slice(&[1, 2, 3]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(&path).unwrap().samples.len(), 500);

        repair(&path).unwrap();
        let fixed = std::fs::read(&path).unwrap();
        assert_eq!(fixed.len(), 44 + 20000);
        assert_eq!(&fixed[..44], &header(8000, 2, 20000));
        assert_eq!(read(&path).unwrap().samples, samples);
    }

    #[test]
    fn repair_rejects_files_that_are_not_wav() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk.wav");
        std::fs::write(&path, b"RIFF\0\0\0\0WAVEfmt ").unwrap();
        assert_eq!(
            repair(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        std::fs::write(&path, b"hello").unwrap();
        assert_eq!(
            repair(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn mulaw_fixture_with_a_fact_chunk() {
        let mut format = fmt(FORMAT_MULAW, 1, 8000, 8);
        format.extend_from_slice(&0u16.to_le_bytes()); // 18-byte fmt with cbSize
        let file = riff(&[
            (b"fmt ", &format),
            (b"fact", &5u32.to_le_bytes()),
            (b"data", &[0xff, 0x7f, 0x00, 0x80, 0xf0]),
        ]);
        let wav = read_bytes(&file).unwrap();
        assert_eq!((wav.sample_rate, wav.channels), (8000, 1));
        assert_eq!(wav.samples, [0, 0, -32124, 32124, 120]);
    }

    #[test]
    fn alaw_fixture() {
        let file = riff(&[
            (b"fmt ", &fmt(FORMAT_ALAW, 1, 8000, 8)),
            (b"data", &[0xd5, 0x55, 0xaa, 0x2a]),
        ]);
        assert_eq!(read_bytes(&file).unwrap().samples, [8, -8, 32256, -32256]);
    }

    #[test]
    fn list_chunk_with_odd_length_before_data() {
        let file = riff(&[
            (b"fmt ", &fmt(FORMAT_PCM, 2, 16000, 16)),
            (b"LIST", b"INFOx"),
            (b"data", &[1, 0, 2, 0, 0xff, 0xff, 0x00, 0x80]),
        ]);
        assert_eq!(file.len(), 12 + 24 + 14 + 16);
        let wav = read_bytes(&file).unwrap();
        assert_eq!((wav.sample_rate, wav.channels), (16000, 2));
        assert_eq!(wav.samples, [1, 2, -1, -32768]);
    }

    #[test]
    fn data_before_fmt_and_extensible_pcm() {
        let file = riff(&[
            (b"data", &[0x34, 0x12]),
            (b"fmt ", &extensible(FORMAT_PCM, 1, 48000, 16)),
        ]);
        let wav = read_bytes(&file).unwrap();
        assert_eq!(
            (wav.sample_rate, wav.samples.as_slice()),
            (48000, &[0x1234][..])
        );
    }

    #[test]
    fn eight_bit_unsigned_pcm() {
        let file = riff(&[
            (b"fmt ", &fmt(FORMAT_PCM, 1, 8000, 8)),
            (b"data", &[0x80, 0x00, 0xff]),
        ]);
        assert_eq!(read_bytes(&file).unwrap().samples, [0, -32768, 32512]);
    }

    #[test]
    fn truncated_data_chunk_reads_what_is_there() {
        let mut file = riff(&[
            (b"fmt ", &fmt(FORMAT_PCM, 2, 8000, 16)),
            (b"data", &[1, 0, 2, 0, 3, 0, 4, 0, 5]),
        ]);
        // Declare 1000 bytes of data; 9 are there (two whole frames and a bit).
        let at = file.len() - 9 - 1 - 4;
        file[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
        file.pop(); // the pad byte
        let wav = read_bytes(&file).unwrap();
        assert_eq!(wav.samples, [1, 2, 3, 4]);
    }

    #[test]
    fn bad_files_give_errors() {
        let pcm = fmt(FORMAT_PCM, 1, 8000, 16);
        let valid = riff(&[(b"fmt ", &pcm), (b"data", &[0, 0])]);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (Vec::new(), "no RIFF"),
            (b"RIFX\0\0\0\0WAVE".to_vec(), "no RIFF"),
            (b"RIFF\0\0\0\0AVI ".to_vec(), "not WAVE"),
            (riff(&[(b"data", &[0, 0])]), "no \"fmt \""),
            (riff(&[(b"fmt ", &pcm)]), "no \"data\""),
            (
                riff(&[(b"fmt ", &pcm[..14]), (b"data", &[0, 0])]),
                "shorter than 16",
            ),
            (
                riff(&[(b"fmt ", &fmt(FORMAT_PCM, 1, 8000, 24)), (b"data", &[0; 3])]),
                "24 bits",
            ),
            (
                riff(&[(b"fmt ", &fmt(FORMAT_PCM, 0, 8000, 16)), (b"data", &[0; 2])]),
                "zero channels",
            ),
            (
                riff(&[(b"fmt ", &fmt(FORMAT_PCM, 1, 0, 16)), (b"data", &[0; 2])]),
                "zero sample rate",
            ),
            (
                riff(&[(b"fmt ", &extensible(3, 1, 8000, 32)), (b"data", &[0; 4])]),
                "format tag 0x0003",
            ),
            (
                riff(&[
                    (b"fmt ", &fmt(FORMAT_EXTENSIBLE, 1, 8000, 16)),
                    (b"data", &[0; 2]),
                ]),
                "without a subformat",
            ),
            (valid[..20].to_vec(), "shorter than 16"),
            (valid[..30].to_vec(), "shorter than 16"),
        ];
        for (bytes, message) in cases {
            let err = read_bytes(&bytes).unwrap_err().to_string();
            assert!(err.contains(message), "{err:?} lacks {message:?}");
        }
        assert!(read_bytes(&valid).is_ok());
        assert!(matches!(
            read(Path::new("/nonexistent/x.wav")),
            Err(WavError::Io(_))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let valid = riff(&[
            (b"fmt ", &fmt(FORMAT_PCM, 2, 8000, 16)),
            (b"LIST", b"abc"),
            (b"data", &[1, 2, 3, 4, 5, 6, 7, 8]),
        ]);
        let mut state = 1u64;
        for _ in 0..20000 {
            let mut bytes = valid.clone();
            for _ in 0..4 {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let at = (state >> 33) as usize % bytes.len();
                bytes[at] = (state >> 20) as u8;
            }
            let cut = (state >> 40) as usize % (bytes.len() + 1);
            let _ = read_bytes(&bytes[..cut]);
            let _ = read_bytes(&bytes);
        }
    }
}
