//! Per-frame cost of the media engine's signal work: each codec's decode and encode of
//! one 20 ms frame, the 8/16 kHz resampler, and the whole transcoder (jitter buffer,
//! decode, resample, encode, RTP) per frame of one direction. The input is a voice-like
//! signal (a vowel's harmonics with a syllable envelope), since Opus spends far less on
//! silence or a pure tone. Run: `cargo bench --bench codec`.
//!
//! bench/media.sh measures the same work per call inside its transcoding run (the
//! codec library alone beside switchboard, in the same conditions); this bench splits
//! it by codec and stage. The last group prices libopus's complexity setting, which
//! switchboard leaves at the library's default (10): an encoder set up as switchboard's
//! is (16 kHz mono, VoIP, 24 kbit/s, in-band FEC for 10% loss) at other settings.

use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{Duration, Instant};
use switchboard::media::codec::{CodecKind, Decoder, Encoder};
use switchboard::media::plan::{AudioFormat, LegFormats};
use switchboard::media::resample::Resampler;
use switchboard::media::rtp::{self, Header};
use switchboard::media::transcode::{FRAME, Transcoder};

/// Frames in the input loop (2 s).
const FRAMES: usize = 100;

/// `FRAMES` 20 ms frames at `rate`: a 140 Hz voice with formant-weighted harmonics,
/// its level rising and falling four times a second.
fn voice(rate: u32) -> Vec<Vec<i16>> {
    let frame = rate as usize / 50;
    let samples: Vec<i16> = (0..FRAMES * frame)
        .map(|n| {
            let t = n as f64 / f64::from(rate);
            let envelope = 0.55 - 0.45 * (2.0 * std::f64::consts::PI * 4.0 * t).cos();
            let voice: f64 = (1..=25)
                .map(|h| {
                    let f = 140.0 * f64::from(h);
                    // Weights peaking near 700 Hz and 1200 Hz, a rough /a/.
                    let w = 1.0 / (1.0 + ((f - 700.0) / 300.0).powi(2))
                        + 0.5 / (1.0 + ((f - 1200.0) / 300.0).powi(2));
                    w * (2.0 * std::f64::consts::PI * f * t).sin()
                })
                .sum();
            (3000.0 * envelope * voice).clamp(-32768.0, 32767.0) as i16
        })
        .collect();
    samples.chunks_exact(frame).map(<[i16]>::to_vec).collect()
}

fn encoded(kind: CodecKind, pcm: &[Vec<i16>]) -> Vec<Vec<u8>> {
    let mut encoder = Encoder::new(kind).unwrap();
    let mut out = [0u8; 1500];
    pcm.iter()
        .map(|frame| {
            let len = encoder.encode(frame, &mut out).unwrap();
            out[..len].to_vec()
        })
        .collect()
}

fn codecs(c: &mut Criterion) {
    let narrow = voice(8000);
    let wide = voice(16_000);
    let mut group = c.benchmark_group("20 ms frame");
    for kind in [CodecKind::Pcmu, CodecKind::G722, CodecKind::Opus] {
        let pcm = if kind.pcm_rate() == 8000 {
            &narrow
        } else {
            &wide
        };
        let payloads = encoded(kind, pcm);
        let mut encoder = Encoder::new(kind).unwrap();
        let mut out = [0u8; 1500];
        let mut i = 0;
        group.bench_function(format!("{kind} encode"), |b| {
            b.iter(|| {
                i = (i + 1) % FRAMES;
                black_box(encoder.encode(&pcm[i], &mut out).unwrap())
            })
        });
        let mut decoder = Decoder::new(kind).unwrap();
        let mut pcm_out = [0i16; 960];
        group.bench_function(format!("{kind} decode"), |b| {
            b.iter(|| {
                i = (i + 1) % FRAMES;
                black_box(decoder.decode(&payloads[i], &mut pcm_out).unwrap())
            })
        });
    }
    let mut up = Resampler::new(8000, 16_000).unwrap();
    let mut down = Resampler::new(16_000, 8000).unwrap();
    let mut out = [0i16; 640];
    let mut i = 0;
    group.bench_function("resample 8 -> 16 kHz", |b| {
        b.iter(|| {
            i = (i + 1) % FRAMES;
            black_box(up.process(&narrow[i], &mut out))
        })
    });
    group.bench_function("resample 16 -> 8 kHz", |b| {
        b.iter(|| {
            i = (i + 1) % FRAMES;
            black_box(down.process(&wide[i], &mut out))
        })
    });
    group.finish();
}

/// One direction of a transcoded call, per frame: a packet in and a clock tick.
fn transcoder(c: &mut Criterion) {
    let narrow = voice(8000);
    let wide = voice(16_000);
    let mut group = c.benchmark_group("transcoder, one direction, per 20 ms frame");
    let pairs = [
        (CodecKind::Pcmu, 0, CodecKind::G722, 9),
        (CodecKind::G722, 9, CodecKind::Pcmu, 0),
        (CodecKind::Pcmu, 0, CodecKind::Opus, 111),
        (CodecKind::Opus, 111, CodecKind::Pcmu, 0),
    ];
    for (from, from_pt, to, to_pt) in pairs {
        let pcm = if from.pcm_rate() == 8000 {
            &narrow
        } else {
            &wide
        };
        let format = AudioFormat {
            payload_type: from_pt,
            kind: from,
        };
        let leg = LegFormats {
            accepts: vec![format],
            receives: vec![format],
            events: None,
        };
        let out_format = AudioFormat {
            payload_type: to_pt,
            kind: to,
        };
        let packets: Vec<Vec<u8>> = encoded(from, pcm)
            .iter()
            .enumerate()
            .map(|(i, payload)| {
                let mut p = vec![0u8; 12 + payload.len()];
                rtp::write_header(
                    &Header {
                        payload_type: from_pt,
                        marker: i == 0,
                        seq: 0,
                        timestamp: 0,
                        ssrc: 1,
                    },
                    &mut p,
                );
                p[12..].copy_from_slice(payload);
                p
            })
            .collect();
        let mut t = Transcoder::new(&leg, out_format, None, 7).unwrap();
        let start = Instant::now();
        let step = from.rtp_ticks(from.pcm_rate() / 50);
        let mut frame: u32 = 0;
        let mut packet = [0u8; 1500];
        group.bench_function(format!("{from} -> {to}"), |b| {
            b.iter(|| {
                // The loop's packets renumbered as one endless stream.
                let source = &packets[frame as usize % FRAMES];
                let p = &mut packet[..source.len()];
                p.copy_from_slice(source);
                p[2..4].copy_from_slice(&(frame as u16).to_be_bytes());
                p[4..8].copy_from_slice(&frame.wrapping_mul(step).to_be_bytes());
                let now = start + FRAME * frame;
                let mut sent = 0usize;
                t.on_packet(now, p, &mut |out| sent += out.len());
                t.on_tick(now, &mut |out| sent += out.len());
                frame += 1;
                black_box(sent)
            })
        });
    }
    group.finish();
}

fn opus_complexity(c: &mut Criterion) {
    let wide = voice(16_000);
    let mut group = c.benchmark_group("Opus encode, 20 ms frame, by complexity");
    for complexity in [10, 8, 5, 3, 1] {
        let mut encoder =
            opus::Encoder::new(16_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        encoder.set_bitrate(opus::Bitrate::Bits(24_000)).unwrap();
        encoder.set_inband_fec(true).unwrap();
        encoder.set_packet_loss_perc(10).unwrap();
        encoder.set_complexity(complexity).unwrap();
        let mut out = [0u8; 1500];
        let mut i = 0;
        group.bench_function(format!("complexity {complexity}"), |b| {
            b.iter(|| {
                i = (i + 1) % FRAMES;
                black_box(encoder.encode(&wide[i], &mut out).unwrap())
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = codecs, transcoder, opus_complexity
}
criterion_main!(benches);
