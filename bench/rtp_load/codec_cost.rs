//! The codec library alone doing a transcoded call's work, measured in the same run as
//! switchboard so the two figures share the machine's conditions: per 20 ms, the
//! caller's PCMU frame decoded, resampled to the callee codec's rate and encoded, and
//! the callee's frame decoded, resampled to 8 kHz and encoded as PCMU, the chain
//! switchboard's transcoder runs for each direction. Nothing else: no sockets, no
//! jitter buffer, no task wake-ups, no RTP.
//!
//! Two figures: the whole signal chain, and the codecs alone (decode and encode, each
//! encoder fed what the chain would have given it, resampled beforehand), so their
//! difference is the resampler's share. The content matters: the callee's encoder gets
//! the caller's narrowband speech, which Opus encodes more cheaply than wideband.
//! Many calls' states are cycled through, as a busy server would, rather than one
//! call's state kept hot in the cache. CPU time is this thread's, from /proc.

use crate::audio::EncodedLoop;
use crate::procfs;
use std::hint::black_box;
use std::io;
use switchboard::media::codec::{CodecKind, Decoder, Encoder};
use switchboard::media::resample::Resampler;

/// Calls whose codec states are cycled through.
const CALLS: usize = 64;
/// Frames between two reads of the thread's CPU time.
const CHECK_EVERY: usize = 256;

/// What one call's transcoding costs in codec work alone, in µs of CPU per second of
/// call (50 frames each way).
#[derive(Clone, Debug, serde::Serialize)]
pub struct CodecCost {
    pub callee_codec: &'static str,
    /// Decode and encode only, both directions.
    pub codecs_us_per_call_second: f64,
    /// Decode, resample and encode, both directions: the transcoder's signal chain.
    pub chain_us_per_call_second: f64,
    /// The same as a share of one core per call.
    pub chain_core_pct_per_call: f64,
    pub cpu_s: f64,
}

/// One call's codec state, both directions.
struct Call {
    pcmu_decoder: Decoder,
    pcmu_encoder: Encoder,
    decoder: Decoder,
    encoder: Encoder,
    up: Resampler,
    down: Resampler,
}

impl Call {
    fn new(kind: CodecKind) -> io::Result<Call> {
        let err = |e: &dyn std::fmt::Display| io::Error::other(e.to_string());
        Ok(Call {
            pcmu_decoder: Decoder::new(CodecKind::Pcmu).map_err(|e| err(&e))?,
            pcmu_encoder: Encoder::new(CodecKind::Pcmu).map_err(|e| err(&e))?,
            decoder: Decoder::new(kind).map_err(|e| err(&e))?,
            encoder: Encoder::new(kind).map_err(|e| err(&e))?,
            up: Resampler::new(8000, kind.pcm_rate()).map_err(|e| err(&e))?,
            down: Resampler::new(kind.pcm_rate(), 8000).map_err(|e| err(&e))?,
        })
    }
}

/// The inputs: both legs' payloads, and for the codecs-only pass what each encoder gets
/// in the chain: the caller's audio decoded and resampled to the callee codec's rate
/// (`to_callee`), the callee's decoded and resampled to 8 kHz (`to_caller`).
struct Inputs {
    pcmu: EncodedLoop,
    callee: EncodedLoop,
    to_callee: Vec<i16>,
    to_caller: Vec<i16>,
}

/// `audio` decoded frame by frame and resampled to `rate`, as the chain would.
fn decoded_at(audio: &EncodedLoop, rate: u32) -> io::Result<Vec<i16>> {
    let mut decoder = Decoder::new(audio.kind).map_err(codec_err)?;
    let mut resampler =
        Resampler::new(audio.kind.pcm_rate(), rate).map_err(|e| io::Error::other(e.to_string()))?;
    let (mut pcm, mut resampled) = ([0i16; 960], [0i16; 1920]);
    let mut out = Vec::new();
    for frame in &audio.frames {
        let n = decoder.decode(frame, &mut pcm).map_err(codec_err)?;
        let m = resampler.process(&pcm[..n], &mut resampled);
        out.extend_from_slice(&resampled[..m]);
    }
    Ok(out)
}

struct Buffers {
    pcm: [i16; 960],
    resampled: [i16; 1920],
    payload: [u8; 1500],
}

/// Measures `kind` against PCMU for about `seconds` of CPU time per figure.
pub fn measure(kind: CodecKind, seconds: f64) -> io::Result<CodecCost> {
    let pcmu = EncodedLoop::new(CodecKind::Pcmu)?;
    let callee = EncodedLoop::new(kind)?;
    let inputs = Inputs {
        to_callee: decoded_at(&pcmu, kind.pcm_rate())?,
        to_caller: decoded_at(&callee, 8000)?,
        pcmu,
        callee,
    };
    let mut calls = (0..CALLS)
        .map(|_| Call::new(kind))
        .collect::<io::Result<Vec<_>>>()?;
    let mut buffers = Buffers {
        pcm: [0; 960],
        resampled: [0; 1920],
        payload: [0; 1500],
    };
    // A warm-up pass so both figures start with every state touched once.
    run(&mut calls, &inputs, &mut buffers, 0.05, codecs_only)?;
    let (codecs_cpu, codecs_frames) = run(&mut calls, &inputs, &mut buffers, seconds, codecs_only)?;
    let (chain_cpu, chain_frames) = run(&mut calls, &inputs, &mut buffers, seconds, chain)?;
    let per_call_second = |cpu: f64, frames: u64| cpu * 1e6 / (frames as f64 / 50.0);
    let chain_us = per_call_second(chain_cpu, chain_frames);
    Ok(CodecCost {
        callee_codec: kind.name(),
        codecs_us_per_call_second: round2(per_call_second(codecs_cpu, codecs_frames)),
        chain_us_per_call_second: round2(chain_us),
        chain_core_pct_per_call: round2(chain_us / 1e4),
        cpu_s: round2(codecs_cpu + chain_cpu),
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

type Work = fn(&mut Call, &Inputs, &mut Buffers, u64) -> io::Result<()>;

/// Runs `work` over the calls in turn, one 20 ms frame each way per call and turn,
/// until `seconds` of this thread's CPU time have passed; returns the CPU time and
/// the frames done (each frame is both directions).
fn run(
    calls: &mut [Call],
    inputs: &Inputs,
    buffers: &mut Buffers,
    seconds: f64,
    work: Work,
) -> io::Result<(f64, u64)> {
    let start = procfs::thread_cpu_seconds()?;
    let mut frames = 0u64;
    let mut round = 0u64;
    loop {
        for _ in 0..CHECK_EVERY {
            let i = (frames % calls.len() as u64) as usize;
            // Calls are at different points of the prompt, as real calls would be.
            work(&mut calls[i], inputs, buffers, round + 37 * i as u64)?;
            frames += 1;
            if i + 1 == calls.len() {
                round += 1;
            }
        }
        let cpu = procfs::thread_cpu_seconds()? - start;
        if cpu >= seconds {
            return Ok((cpu, frames));
        }
    }
}

fn codec_err(e: switchboard::media::codec::CodecError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Decode and encode both ways; each encoder takes what the chain would have given it.
fn codecs_only(call: &mut Call, inputs: &Inputs, b: &mut Buffers, round: u64) -> io::Result<()> {
    let frame = (round % inputs.pcmu.frames.len() as u64) as usize;
    let wide_len = inputs.callee.kind.pcm_rate() as usize / 50;
    let n = call
        .pcmu_decoder
        .decode(inputs.pcmu.frame(round), &mut b.pcm)
        .map_err(codec_err)?;
    black_box(&b.pcm[..n]);
    let wide = &inputs.to_callee[frame * wide_len..(frame + 1) * wide_len];
    black_box(
        call.encoder
            .encode(wide, &mut b.payload)
            .map_err(codec_err)?,
    );
    let n = call
        .decoder
        .decode(inputs.callee.frame(round), &mut b.pcm)
        .map_err(codec_err)?;
    black_box(&b.pcm[..n]);
    let narrow = &inputs.to_caller[frame * 160..(frame + 1) * 160];
    black_box(
        call.pcmu_encoder
            .encode(narrow, &mut b.payload)
            .map_err(codec_err)?,
    );
    Ok(())
}

/// The transcoder's chain both ways: decode, resample, encode.
fn chain(call: &mut Call, inputs: &Inputs, b: &mut Buffers, round: u64) -> io::Result<()> {
    let n = call
        .pcmu_decoder
        .decode(inputs.pcmu.frame(round), &mut b.pcm)
        .map_err(codec_err)?;
    let m = call.up.process(&b.pcm[..n], &mut b.resampled);
    black_box(
        call.encoder
            .encode(&b.resampled[..m], &mut b.payload)
            .map_err(codec_err)?,
    );
    let n = call
        .decoder
        .decode(inputs.callee.frame(round), &mut b.pcm)
        .map_err(codec_err)?;
    let m = call.down.process(&b.pcm[..n], &mut b.resampled);
    black_box(
        call.pcmu_encoder
            .encode(&b.resampled[..m], &mut b.payload)
            .map_err(codec_err)?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_measurement_gives_positive_costs() {
        let cost = measure(CodecKind::G722, 0.05).unwrap();
        assert_eq!(cost.callee_codec, "G722");
        assert!(cost.codecs_us_per_call_second > 0.0);
        assert!(cost.chain_us_per_call_second > 0.0);
        assert!(cost.cpu_s >= 0.1);
    }
}
