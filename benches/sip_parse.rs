//! Parse and serialize a typical INVITE with SDP and a REGISTER, as received from a
//! desk phone. Run: `cargo bench --bench sip_parse`; figures in docs/performance.md.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use switchboard::sip::parse_datagram;

const INVITE: &[u8] = b"INVITE sip:1001@pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:1001@pbx.example.com>\r\n\
From: \"Alice\" <sip:1000@pbx.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@192.168.1.20\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:1000@192.168.1.20:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\n\
Supported: replaces, timer\r\n\
User-Agent: Yealink SIP-T46S 66.86.0.15\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 248\r\n\
\r\n\
v=0\r\n\
o=- 20518 0 IN IP4 192.168.1.20\r\n\
s=-\r\n\
c=IN IP4 192.168.1.20\r\n\
t=0 0\r\n\
m=audio 11780 RTP/AVP 0 8 9 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

const REGISTER: &[u8] = b"REGISTER sip:pbx.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bKnashds7;rport\r\n\
Max-Forwards: 70\r\n\
To: <sip:1000@pbx.example.com>\r\n\
From: <sip:1000@pbx.example.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:1000@192.168.1.20:5060>;expires=3600\r\n\
Authorization: Digest username=\"1000\", realm=\"pbx.example.com\", nonce=\"6d0e1b1c0a3f\", uri=\"sip:pbx.example.com\", response=\"a1b2c3d4e5f60718293a4b5c6d7e8f90\", algorithm=MD5, cnonce=\"0a4f113b\", qop=auth, nc=00000001\r\n\
User-Agent: Yealink SIP-T46S 66.86.0.15\r\n\
Content-Length: 0\r\n\
\r\n";

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    for (name, bytes) in [("invite", INVITE), ("register", REGISTER)] {
        let buf = Bytes::from_static(bytes);
        let msg = parse_datagram(buf.clone()).expect("fixture parses");
        g.bench_function(format!("parse_{name}"), |b| {
            b.iter(|| parse_datagram(black_box(buf.clone())))
        });
        g.bench_function(format!("serialize_{name}"), |b| {
            b.iter(|| black_box(&msg).to_bytes())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
