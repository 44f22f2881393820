//! The SDP parser: strict where the B2BUA depends on a line (v=, o=, c=, m=), lenient
//! elsewhere (LF line ends, blank lines, trailing blanks, unknown lines and
//! attributes, known attributes with odd values kept as text).

use super::SdpError;
use super::model::{
    AddrType, Address, Attribute, Connection, Direction, Line, Media, Origin, Rtpmap, Sdp,
};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

impl Sdp {
    /// Parses a description from a message body. Text that isn't UTF-8 is replaced,
    /// not rejected: only free-text lines (s=, i=) may carry another charset.
    pub fn parse(bytes: &[u8]) -> Result<Sdp, SdpError> {
        let text = String::from_utf8_lossy(bytes);
        let mut seen_version = false;
        let mut origin = None;
        let mut session_name = None;
        let mut session = Section::default();
        let mut media: Vec<(Media, Section)> = Vec::new();

        for (index, raw) in text.split('\n').enumerate() {
            let line_no = index + 1;
            let err = |reason| SdpError {
                line: line_no,
                reason,
            };
            let line = raw.trim_end();
            if line.is_empty() {
                continue;
            }
            let (kind, value) = split_line(line).ok_or(err("not a <type>=<value> line"))?;
            if !seen_version {
                if kind != 'v' {
                    return Err(err("description does not start with v="));
                }
                if value.trim() != "0" {
                    return Err(err("unsupported SDP version"));
                }
                seen_version = true;
                continue;
            }
            let in_media = !media.is_empty();
            let section = match media.last_mut() {
                Some((_, s)) => s,
                None => &mut session,
            };
            match kind {
                'v' => return Err(err("repeated v=")),
                'o' if !in_media && origin.is_none() => {
                    origin = Some(parse_origin(value).map_err(err)?)
                }
                's' if !in_media && session_name.is_none() => {
                    session_name = Some(value.to_string())
                }
                'o' | 's' => return Err(err("misplaced or repeated o= or s=")),
                'm' => media.push((parse_media(value).map_err(err)?, Section::default())),
                'c' => {
                    if section.connection.is_some() {
                        return Err(err("repeated c="));
                    }
                    section.connection = Some(parse_connection(value).map_err(err)?);
                }
                'a' => section
                    .attributes
                    .push(parse_attribute(value).map_err(err)?),
                kind => section.lines.push(Line {
                    kind,
                    value: value.to_string(),
                }),
            }
        }
        if !seen_version {
            return Err(SdpError {
                line: 0,
                reason: "empty description",
            });
        }
        let origin = origin.ok_or(SdpError {
            line: 0,
            reason: "missing o=",
        })?;
        Ok(Sdp {
            origin,
            session_name: session_name.unwrap_or_else(|| "-".to_string()),
            lines: session.lines,
            connection: session.connection,
            attributes: session.attributes,
            media: media
                .into_iter()
                .map(|(m, s)| Media {
                    lines: s.lines,
                    connection: s.connection,
                    attributes: s.attributes,
                    ..m
                })
                .collect(),
        })
    }
}

/// The lines collected under the session or one media section.
#[derive(Default)]
struct Section {
    lines: Vec<Line>,
    connection: Option<Connection>,
    attributes: Vec<Attribute>,
}

/// Splits `x=value`, where x is one lowercase letter (RFC 8866 §5).
fn split_line(line: &str) -> Option<(char, &str)> {
    let mut chars = line.chars();
    let kind = chars.next().filter(char::is_ascii_lowercase)?;
    let value = chars.as_str().strip_prefix('=')?;
    Some((kind, value))
}

fn parse_origin(value: &str) -> Result<Origin, &'static str> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [
        username,
        session_id,
        session_version,
        net_type,
        addr_type,
        address,
    ] = fields[..]
    else {
        return Err("o= needs six fields");
    };
    Ok(Origin {
        username: username.to_string(),
        session_id: session_id.to_string(),
        session_version: session_version.to_string(),
        address: parse_address(net_type, addr_type, address)?,
    })
}

/// `IN <addrtype> <address>`; an address that isn't an IP literal is a host name.
fn parse_address(net_type: &str, addr_type: &str, address: &str) -> Result<Address, &'static str> {
    if net_type != "IN" {
        return Err("network type is not IN");
    }
    let mismatch = Err("address does not match its address type");
    match addr_type {
        "IP4" => match (address.parse::<Ipv4Addr>(), address.parse::<Ipv6Addr>()) {
            (Ok(ip), _) => Ok(Address::Ip(IpAddr::V4(ip))),
            (_, Ok(_)) => mismatch,
            _ => Ok(Address::Name {
                addr_type: AddrType::Ip4,
                name: address.to_string(),
            }),
        },
        "IP6" => match (address.parse::<Ipv6Addr>(), address.parse::<Ipv4Addr>()) {
            (Ok(ip), _) => Ok(Address::Ip(IpAddr::V6(ip))),
            (_, Ok(_)) => mismatch,
            _ => Ok(Address::Name {
                addr_type: AddrType::Ip6,
                name: address.to_string(),
            }),
        },
        _ => Err("unknown address type"),
    }
}

fn parse_connection(value: &str) -> Result<Connection, &'static str> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let [net_type, addr_type, address] = fields[..] else {
        return Err("c= needs three fields");
    };
    let (address, multicast) = match address.split_once('/') {
        Some((a, suffix)) => (a, Some(suffix.to_string())),
        None => (address, None),
    };
    Ok(Connection {
        address: parse_address(net_type, addr_type, address)?,
        multicast,
    })
}

fn parse_media(value: &str) -> Result<Media, &'static str> {
    let mut fields = value.split_ascii_whitespace();
    let kind = fields.next().ok_or("empty m=")?;
    let port = fields.next().ok_or("m= without a port")?;
    let proto = fields.next().ok_or("m= without a transport")?;
    let (port, port_count) = match port.split_once('/') {
        Some((p, n)) => (p, Some(n.parse().map_err(|_| "bad port count in m=")?)),
        None => (port, None),
    };
    Ok(Media {
        kind: kind.to_string(),
        port: port.parse().map_err(|_| "bad port in m=")?,
        port_count,
        proto: proto.to_string(),
        formats: fields.map(str::to_string).collect(),
        lines: Vec::new(),
        connection: None,
        attributes: Vec::new(),
    })
}

fn parse_attribute(value: &str) -> Result<Attribute, &'static str> {
    let (name, arg) = match value.split_once(':') {
        Some((n, v)) => (n, Some(v)),
        None => (value, None),
    };
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err("malformed attribute name");
    }
    let typed = match (name, arg) {
        ("rtpmap", Some(v)) => parse_rtpmap(v).map(Attribute::Rtpmap),
        ("fmtp", Some(v)) => v.split_once(' ').and_then(|(pt, params)| {
            Some(Attribute::Fmtp {
                payload_type: parse_payload_type(pt)?,
                params: params.trim_start().to_string(),
            })
        }),
        ("ptime", Some(v)) => v.trim().parse().ok().map(Attribute::Ptime),
        ("rtcp", Some(v)) => parse_rtcp(v),
        (name, None) => Direction::from_name(name).map(Attribute::Direction),
        _ => None,
    };
    Ok(typed.unwrap_or_else(|| Attribute::Other {
        name: name.to_string(),
        value: arg.map(str::to_string),
    }))
}

/// RTP payload types are 7 bits (RFC 3550 §5.1).
fn parse_payload_type(text: &str) -> Option<u8> {
    text.trim().parse().ok().filter(|pt| *pt < 128)
}

fn parse_rtpmap(value: &str) -> Option<Rtpmap> {
    let (pt, encoding) = value.split_once(' ')?;
    let mut parts = encoding.trim().split('/');
    let name = parts.next().filter(|n| !n.is_empty())?;
    let clock_rate = parts.next()?.parse().ok()?;
    let params = match parts.next() {
        Some(p) => Some(p.parse().ok()?),
        None => None,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Rtpmap {
        payload_type: parse_payload_type(pt)?,
        encoding: name.to_string(),
        clock_rate,
        params,
    })
}

fn parse_rtcp(value: &str) -> Option<Attribute> {
    let fields: Vec<&str> = value.split_ascii_whitespace().collect();
    let (port, connection) = match fields[..] {
        [port] => (port, None),
        [port, net_type, addr_type, address] => (
            port,
            Some(Connection {
                address: parse_address(net_type, addr_type, address).ok()?,
                multicast: None,
            }),
        ),
        _ => return None,
    };
    Some(Attribute::Rtcp {
        port: port.parse().ok()?,
        connection,
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    #[test]
    fn crlf_fixtures_round_trip_byte_exact() {
        for bytes in [
            SIPP_UAC,
            BARESIP_OFFER,
            HOLD_SENDONLY,
            RESUME,
            HOLD_OLD_STYLE,
        ] {
            assert_eq!(
                sdp(bytes).to_bytes(),
                bytes,
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        for message in [RFC5118_IPV6_IN_SDP, RFC5118_MULT_IP_IN_SDP] {
            let body = body(message);
            assert_eq!(sdp(body).to_bytes(), body);
        }
    }

    #[test]
    fn lf_line_ends_are_read_and_written_back_as_crlf() {
        let parsed = sdp(TWO_STREAMS_LF);
        let expected = String::from_utf8_lossy(TWO_STREAMS_LF).replace('\n', "\r\n");
        assert_eq!(parsed.to_string(), expected);
        assert_eq!(parsed.session_name, "call");
        assert_eq!(
            parsed.lines.iter().map(|l| l.kind).collect::<String>(),
            "ibt"
        );
        assert_eq!(
            parsed.attributes,
            [Attribute::Direction(Direction::Inactive)]
        );
        assert_eq!(parsed.media.len(), 2);
        assert_eq!(parsed.media[1].port, 0);
    }

    #[test]
    fn baresip_offer_is_typed() {
        let s = sdp(BARESIP_OFFER);
        assert_eq!(s.origin.username, "-");
        assert_eq!(s.origin.session_id, "1830931302");
        assert_eq!(s.origin.session_version, "2006716154");
        assert_eq!(
            s.connection,
            Some(Connection::ip("10.0.0.2".parse().unwrap()))
        );
        assert_eq!(
            s.attributes,
            [Attribute::Other {
                name: "tool".into(),
                value: Some("baresip 3.10.1".into())
            }]
        );
        let m = &s.media[0];
        assert_eq!(
            (m.kind.as_str(), m.port, m.proto.as_str()),
            ("audio", 10078, "RTP/AVP")
        );
        assert_eq!(m.formats, ["96", "9", "0", "8", "101"]);
        assert_eq!(
            m.lines,
            [Line {
                kind: 'b',
                value: "AS:64".into()
            }]
        );
        assert_eq!(
            m.rtpmap(96),
            Some(&Rtpmap {
                payload_type: 96,
                encoding: "opus".into(),
                clock_rate: 48000,
                params: Some(2)
            })
        );
        assert_eq!(m.fmtp(101), Some("0-15"));
        assert_eq!(m.fmtp(96), Some("stereo=1;sprop-stereo=1"));
        assert!(m.attributes.contains(&Attribute::Ptime(20)));
        assert!(
            m.attributes
                .contains(&Attribute::Direction(Direction::SendRecv))
        );
        assert!(m.has_attribute("rtcp-rsize"));
        assert!(m.has_attribute("ssrc"));
    }

    #[test]
    fn ipv6_sdp_from_rfc5118() {
        let s = sdp(body(RFC5118_IPV6_IN_SDP));
        let ip6: IpAddr = "2001:db8::20".parse().unwrap();
        assert_eq!(s.origin.address, Address::Ip(ip6));
        assert_eq!(s.origin.session_id, "971731711378798081");
        assert_eq!(s.session_name, "Live video feed for today's meeting");
        assert_eq!(s.connection, Some(Connection::ip(ip6)));
        assert_eq!(s.rtp_addr(0), Some("[2001:db8::20]:6000".parse().unwrap()));
        assert_eq!(s.rtp_addr(1), Some("[2001:db8::20]:6024".parse().unwrap()));
        assert_eq!(
            s.media[1].rtpmap(107).map(|m| m.encoding.as_str()),
            Some("H263-1998")
        );
    }

    #[test]
    fn per_media_connections_and_host_name_origin() {
        let s = sdp(body(RFC5118_MULT_IP_IN_SDP));
        assert_eq!(
            s.origin.address,
            Address::Name {
                addr_type: AddrType::Ip4,
                name: "host.example.com".into()
            }
        );
        assert_eq!(s.session_name, "");
        assert_eq!(s.connection, None);
        assert_eq!(s.rtp_addr(0), Some("192.0.2.1:22334".parse().unwrap()));
        assert_eq!(s.rtp_addr(1), Some("[2001:db8::1]:6024".parse().unwrap()));
    }

    #[test]
    fn attributes_with_odd_values_are_kept_as_text() {
        let s = sdp(b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000/2 RTP/AVP 0 96\r\n\
            a=rtpmap:96 opus\r\na=ptime:20.5\r\na=fmtp:96\r\na=sendrecv:x\r\na=rtcp:4001 IN IP4 192.0.2.9\r\n\
            a=x-custom:  spaced  \r\n");
        let m = &s.media[0];
        assert_eq!(m.port_count, Some(2));
        let other = |n: &str, v: &str| Attribute::Other {
            name: n.into(),
            value: Some(v.into()),
        };
        assert_eq!(
            m.attributes,
            [
                other("rtpmap", "96 opus"),
                other("ptime", "20.5"),
                other("fmtp", "96"),
                other("sendrecv", "x"),
                Attribute::Rtcp {
                    port: 4001,
                    connection: Some(Connection::ip("192.0.2.9".parse().unwrap()))
                },
                other("x-custom", "  spaced"),
            ]
        );
        assert_eq!(s.rtcp_addr(0), Some("192.0.2.9:4001".parse().unwrap()));
    }

    #[test]
    fn malformed_descriptions_are_errors() {
        let cases: &[(&[u8], usize, &str)] = &[
            (b"", 0, "empty description"),
            (b"\r\n\r\n", 0, "empty description"),
            (
                b"o=- 1 1 IN IP4 192.0.2.1\r\n",
                1,
                "description does not start with v=",
            ),
            (b"v=1\r\n", 1, "unsupported SDP version"),
            (b"v=0\r\ns=-\r\n", 0, "missing o="),
            (b"v=0\r\nv=0\r\n", 2, "repeated v="),
            (b"v=0\r\no=- 1 1 IN IP4\r\n", 2, "o= needs six fields"),
            (
                b"v=0\r\no=- 1 1 ATM NSAP x\r\n",
                2,
                "network type is not IN",
            ),
            (b"v=0\r\no=- 1 1 IN IP5 x\r\n", 2, "unknown address type"),
            (
                b"v=0\r\no=- 1 1 IN IP4 2001:db8::1\r\n",
                2,
                "address does not match its address type",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP6 192.0.2.1\r\n",
                2,
                "address does not match its address type",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4\r\n",
                4,
                "c= needs three fields",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\nc=IN IP4 a\r\nc=IN IP4 b\r\n",
                4,
                "repeated c=",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio x RTP/AVP 0\r\n",
                3,
                "bad port in m=",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 70000 RTP/AVP 0\r\n",
                3,
                "bad port in m=",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 4000/x RTP/AVP 0\r\n",
                3,
                "bad port count in m=",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 4000\r\n",
                3,
                "m= without a transport",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\nm=audio 4000 RTP/AVP 0\r\ns=-\r\n",
                4,
                "misplaced or repeated o= or s=",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\na=:x\r\n",
                3,
                "malformed attribute name",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\nX=1\r\n",
                3,
                "not a <type>=<value> line",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\nm audio\r\n",
                3,
                "not a <type>=<value> line",
            ),
            (
                b"v=0\r\no=- 1 1 IN IP4 h\r\n\xff\xfe=\r\n",
                3,
                "not a <type>=<value> line",
            ),
            (b"\x00\x01\x02", 1, "not a <type>=<value> line"),
        ];
        for (bytes, line, reason) in cases {
            let err = Sdp::parse(bytes).unwrap_err();
            assert_eq!(
                (err.line, err.reason),
                (*line, *reason),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn missing_session_name_and_blank_lines_are_tolerated() {
        let s = sdp(b"v=0\n\no=- 1 1 IN IP4 192.0.2.1\nt=0 0\nm=audio 4000 RTP/AVP 0\n\n");
        assert_eq!(s.session_name, "-");
        assert_eq!(s.media.len(), 1);
    }
}
