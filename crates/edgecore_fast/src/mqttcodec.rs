//! MQTT 3.1.1 packets on a client's side of the wire, sans I/O.
//!
//! The executable specification is the pure-Python twin `edgenode._pure.mqttcodec`
//! (every check, its order and its message); `py_mqttcodec` is the thin Python binding.
//!
//! - [`Decoder`] turns the bytes a broker sends into [`Packet`]s handed to a [`Sink`],
//!   whatever the chunks. Whole packets are parsed in place from the input slice; only a
//!   trailing partial packet is copied into the decoder's buffer, and a buffered packet
//!   is completed with exactly the bytes it lacks before parsing goes on in place. A
//!   PUBLISH whose remaining length is over `max_packet` is never buffered: once its
//!   topic (and packet id) are here it is reported as [`Packet::Dropped`] and the rest
//!   of it is skipped as it streams in. A malformed packet or one a broker must not
//!   send fails the decoder for good (the connection must be closed).
//! - [`encode_publish`] and [`encode_ack`] append PUBLISH and PUBACK packets to a buffer.
//!
//! This module has no PyO3 dependency.

use std::fmt;

pub const CONNACK: u8 = 2;
pub const PUBLISH: u8 = 3;
pub const PUBACK: u8 = 4;
pub const SUBACK: u8 = 9;
pub const UNSUBACK: u8 = 11;
pub const PINGRESP: u8 = 13;

/// The largest remaining length a 4-byte variable-length integer encodes.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;
/// The largest control packet accepted (a SUBACK of 65,534 filters is 65,536 bytes).
pub const MAX_CONTROL_BYTES: usize = 65_536;
/// The default bound on a received PUBLISH's remaining length.
pub const DEFAULT_MAX_PACKET: usize = 16 * 1024 * 1024;
/// The MQTT limit on a topic's UTF-8 length.
pub const MAX_TOPIC_LENGTH: usize = 65_535;

/// A packet a broker must not send, or a malformed one (`MqttPacketError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketError(pub String);

impl PacketError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PacketError {}

/// One decoded packet, borrowing the decoder's input or buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// An application message; `packet_id` is 0 at QoS 0.
    Publish {
        topic: &'a str,
        payload: &'a [u8],
        qos: u8,
        packet_id: u16,
        retain: bool,
    },
    /// A PUBACK's packet id.
    PubAck(u16),
    /// CONNACK, SUBACK, UNSUBACK or PINGRESP: its type and the bytes after its fixed header.
    Control { kind: u8, body: &'a [u8] },
    /// A PUBLISH over `max_packet`, skipped: its payload size in bytes.
    Dropped {
        topic: &'a str,
        qos: u8,
        packet_id: u16,
        size: usize,
    },
}

/// Where [`Decoder::feed`] puts the packets it decodes, in stream order.
pub trait Sink {
    fn packet(&mut self, packet: Packet<'_>);
}

/// What one parse step at the start of a slice found.
enum Parsed<'a> {
    /// Not all here: at least this many bytes (from the slice's start) are needed.
    Incomplete(usize),
    /// A packet, and the bytes it takes from the slice's start: for a dropped PUBLISH
    /// this may go past the slice's end (the rest is to be skipped).
    Done(Packet<'a>, usize),
}

fn packet_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        0 => "reserved type 0",
        1 => "CONNECT",
        5 => "PUBREC (QoS 2)",
        6 => "PUBREL (QoS 2)",
        7 => "PUBCOMP (QoS 2)",
        8 => "SUBSCRIBE",
        10 => "UNSUBSCRIBE",
        12 => "PINGREQ",
        14 => "DISCONNECT",
        15 => "reserved type 15",
        _ => return None,
    })
}

fn control_size(kind: u8) -> Option<usize> {
    match kind {
        CONNACK | PUBACK | UNSUBACK => Some(2),
        PINGRESP => Some(0),
        _ => None,
    }
}

/// (first byte, remaining length, offset of the body), or how many bytes are needed.
fn fixed_header(src: &[u8]) -> Result<Result<(u8, usize, usize), usize>, PacketError> {
    if src.len() < 2 {
        return Ok(Err(2));
    }
    let first = src[0];
    let mut length = 0usize;
    let mut shift = 0u32;
    let mut index = 1;
    loop {
        let Some(&byte) = src.get(index) else {
            return Ok(Err(index + 1));
        };
        length |= usize::from(byte & 0x7F) << shift;
        index += 1;
        if byte & 0x80 == 0 {
            return Ok(Ok((first, length, index)));
        }
        shift += 7;
        if shift == 28 {
            return Err(PacketError::new("a remaining length longer than 4 bytes"));
        }
    }
}

fn publish_qos(first: u8) -> Result<u8, PacketError> {
    let qos = (first >> 1) & 3;
    if qos == 3 {
        return Err(PacketError::new("PUBLISH with QoS 3"));
    }
    if qos == 2 {
        return Err(PacketError::new(
            "PUBLISH with QoS 2 (the node subscribes at QoS 1 at most)",
        ));
    }
    if qos == 0 && first & 0x08 != 0 {
        return Err(PacketError::new("PUBLISH with DUP set at QoS 0"));
    }
    Ok(qos)
}

fn topic(bytes: &[u8]) -> Result<&str, PacketError> {
    if bytes.is_empty() {
        return Err(PacketError::new("PUBLISH: an empty topic"));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Err(PacketError::new("PUBLISH: the topic is not valid UTF-8"));
    };
    if bytes.iter().any(|&b| b == b'+' || b == b'#' || b == 0) {
        return Err(PacketError::new(
            "PUBLISH: the topic holds a wildcard or U+0000",
        ));
    }
    Ok(text)
}

fn packet_id(src: &[u8], at: usize) -> Result<u16, PacketError> {
    let id = u16::from_be_bytes([src[at], src[at + 1]]);
    if id == 0 {
        return Err(PacketError::new("PUBLISH: packet id 0 at QoS 1"));
    }
    Ok(id)
}

/// A control packet's type, flags and size, before its body is waited for.
fn check_control(first: u8, length: usize) -> Result<(), PacketError> {
    let kind = first >> 4;
    if let Some(name) = packet_name(kind) {
        return Err(PacketError(format!("a broker must not send {name}")));
    }
    if first & 0x0F != 0 {
        return Err(PacketError(format!(
            "packet type {kind} with flags {:#x}",
            first & 0x0F
        )));
    }
    if let Some(size) = control_size(kind) {
        if length != size {
            return Err(PacketError(format!(
                "packet type {kind} of {length} bytes (must be {size})"
            )));
        }
    }
    if kind == SUBACK && !(3..=MAX_CONTROL_BYTES).contains(&length) {
        return Err(PacketError(format!("SUBACK of {length} bytes")));
    }
    Ok(())
}

/// A whole PUBLISH (`body` is what follows its fixed header).
fn publish(first: u8, body: &[u8]) -> Result<Packet<'_>, PacketError> {
    let qos = publish_qos(first)?;
    if body.len() < 2 {
        return Err(PacketError::new("PUBLISH: no topic length"));
    }
    let topic_end = 2 + usize::from(u16::from_be_bytes([body[0], body[1]]));
    let payload_at = topic_end + if qos != 0 { 2 } else { 0 };
    if payload_at > body.len() {
        return Err(PacketError::new(
            "PUBLISH: the topic is longer than the packet",
        ));
    }
    let topic = topic(&body[2..topic_end])?;
    let packet_id = if qos != 0 {
        packet_id(body, topic_end)?
    } else {
        0
    };
    Ok(Packet::Publish {
        topic,
        payload: &body[payload_at..],
        qos,
        packet_id,
        retain: first & 0x01 != 0,
    })
}

/// The head of a PUBLISH over `max_packet`: `src` starts at its body, `length` is its
/// remaining length.
fn dropped(first: u8, length: usize, src: &[u8]) -> Result<Result<Packet<'_>, usize>, PacketError> {
    let qos = publish_qos(first)?;
    if length < 2 {
        // Not waited for: the bytes after this packet are not its topic length.
        return Err(PacketError::new("PUBLISH: no topic length"));
    }
    if src.len() < 2 {
        return Ok(Err(2));
    }
    let topic_length = usize::from(u16::from_be_bytes([src[0], src[1]]));
    let head = 2 + topic_length + if qos != 0 { 2 } else { 0 };
    if head > length {
        return Err(PacketError::new(
            "PUBLISH: the topic is longer than the packet",
        ));
    }
    if src.len() < head {
        return Ok(Err(head));
    }
    let topic = topic(&src[2..2 + topic_length])?;
    let packet_id = if qos != 0 {
        packet_id(src, 2 + topic_length)?
    } else {
        0
    };
    Ok(Ok(Packet::Dropped {
        topic,
        qos,
        packet_id,
        size: length - head,
    }))
}

fn control(kind: u8, body: &[u8]) -> Result<Packet<'_>, PacketError> {
    if kind == CONNACK && body[0] & 0xFE != 0 {
        return Err(PacketError::new("CONNACK: reserved flags set"));
    }
    if kind == SUBACK && body[2..].iter().any(|&c| !matches!(c, 0 | 1 | 2 | 0x80)) {
        return Err(PacketError::new(
            "SUBACK: a return code other than 0, 1, 2 or 0x80",
        ));
    }
    Ok(Packet::Control { kind, body })
}

/// One packet at the start of `src`.
fn parse(src: &[u8], max_packet: usize) -> Result<Parsed<'_>, PacketError> {
    let (first, length, body) = match fixed_header(src)? {
        Ok(header) => header,
        Err(need) => return Ok(Parsed::Incomplete(need)),
    };
    let kind = first >> 4;
    if kind == PUBLISH && length > max_packet {
        return Ok(match dropped(first, length, &src[body..])? {
            Ok(packet) => Parsed::Done(packet, body + length),
            Err(need) => Parsed::Incomplete(body + need),
        });
    }
    if kind != PUBLISH {
        check_control(first, length)?;
    }
    let end = body + length;
    if end > src.len() {
        return Ok(Parsed::Incomplete(end));
    }
    let packet = match kind {
        PUBLISH => publish(first, &src[body..end])?,
        PUBACK => Packet::PubAck(u16::from_be_bytes([src[body], src[body + 1]])),
        _ => control(kind, &src[body..end])?,
    };
    Ok(Parsed::Done(packet, end))
}

/// Bytes from a broker in, packets out (see the module documentation).
#[derive(Debug, Clone)]
pub struct Decoder {
    max_packet: usize,
    buffer: Vec<u8>,
    skip: usize,
    failed: Option<PacketError>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_PACKET)
    }
}

impl Decoder {
    /// `max_packet` must be at most [`MAX_REMAINING_LENGTH`] (the binding checks it).
    pub fn new(max_packet: usize) -> Self {
        Self {
            max_packet,
            buffer: Vec::new(),
            skip: 0,
            failed: None,
        }
    }

    /// Bytes held for a packet not yet complete.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Whether a previous call failed (every later call fails with the same error).
    pub fn failed(&self) -> Option<&PacketError> {
        self.failed.as_ref()
    }

    /// Decode what `data` completes into `sink`; keep the rest for the next call. After
    /// an error the packets already given to `sink` in this call are to be discarded.
    pub fn feed(&mut self, data: &[u8], sink: &mut impl Sink) -> Result<(), PacketError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let result = self.feed_inner(data, sink);
        if let Err(err) = &result {
            self.failed = Some(err.clone());
            self.buffer = Vec::new();
        }
        result
    }

    fn take_skip<'d>(&mut self, data: &'d [u8]) -> &'d [u8] {
        let skipped = self.skip.min(data.len());
        self.skip -= skipped;
        &data[skipped..]
    }

    fn feed_inner(&mut self, data: &[u8], sink: &mut impl Sink) -> Result<(), PacketError> {
        let mut data = self.take_skip(data);
        // A buffered partial packet: complete it with exactly the bytes it lacks.
        while !self.buffer.is_empty() {
            match parse(&self.buffer, self.max_packet)? {
                Parsed::Incomplete(need) => {
                    if data.is_empty() {
                        return Ok(());
                    }
                    let take = (need - self.buffer.len()).min(data.len());
                    self.buffer.extend_from_slice(&data[..take]);
                    data = &data[take..];
                }
                Parsed::Done(packet, taken) => {
                    sink.packet(packet);
                    let held = self.buffer.len();
                    if taken >= held {
                        self.skip = taken - held;
                        self.buffer.clear();
                    } else {
                        self.buffer.drain(..taken);
                    }
                    data = self.take_skip(data);
                }
            }
        }
        // Whole packets in place; only a trailing partial packet is copied.
        let end = data.len();
        let mut at = 0;
        while at < end {
            match parse(&data[at..], self.max_packet)? {
                Parsed::Incomplete(_) => break,
                Parsed::Done(packet, taken) => {
                    sink.packet(packet);
                    at += taken;
                    if at > end {
                        self.skip = at - end;
                        at = end;
                    }
                }
            }
        }
        self.buffer.extend_from_slice(&data[at..]);
        Ok(())
    }
}

/// Why a PUBLISH or PUBACK cannot be encoded (a `ValueError`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// Empty or over [`MAX_TOPIC_LENGTH`] bytes: its length.
    TopicLength(usize),
    /// Holds `+`, `#` or U+0000.
    TopicWildcard,
    /// A PUBLISH's QoS other than 0 or 1.
    Qos(i64),
    /// A packet id outside 1..=65535.
    PacketId(i64),
    /// A PUBLISH over MQTT's size limit: its remaining length.
    TooLarge(usize),
    /// An ack at a QoS other than 0 or 1.
    AckQos(i64),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TopicLength(n) => {
                write!(f, "a topic must be 1 to {MAX_TOPIC_LENGTH} bytes, not {n}")
            }
            Self::TopicWildcard => {
                f.write_str("a topic to publish must not hold '+', '#' or U+0000")
            }
            Self::Qos(qos) => write!(f, "PUBLISH QoS must be 0 or 1, not {qos}"),
            Self::PacketId(id) => write!(f, "a packet id must be in [1, 65535], not {id}"),
            Self::TooLarge(n) => write!(f, "a PUBLISH of {n} bytes is over MQTT's limit"),
            Self::AckQos(qos) => write!(f, "only QoS 1 messages are acknowledged, not QoS {qos}"),
        }
    }
}

/// Check a topic to publish (in the twin's order: length, then wildcards).
pub fn check_topic(topic: &[u8]) -> Result<(), EncodeError> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LENGTH {
        return Err(EncodeError::TopicLength(topic.len()));
    }
    if topic.iter().any(|&b| b == b'+' || b == b'#' || b == 0) {
        return Err(EncodeError::TopicWildcard);
    }
    Ok(())
}

/// Check the QoS, packet id and size of a PUBLISH whose topic passed [`check_topic`];
/// its remaining length.
pub fn check_publish(
    topic_len: usize,
    payload_len: usize,
    qos: i64,
    packet_id: i64,
) -> Result<usize, EncodeError> {
    if qos != 0 && qos != 1 {
        return Err(EncodeError::Qos(qos));
    }
    if qos == 1 && !(1..=0xFFFF).contains(&packet_id) {
        return Err(EncodeError::PacketId(packet_id));
    }
    let length = (2 + topic_len + if qos == 1 { 2 } else { 0 }).saturating_add(payload_len);
    if length > MAX_REMAINING_LENGTH {
        return Err(EncodeError::TooLarge(length));
    }
    Ok(length)
}

fn put_length(out: &mut Vec<u8>, mut length: usize) {
    loop {
        let byte = (length & 0x7F) as u8;
        length >>= 7;
        if length == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Append a PUBLISH (checked with [`check_topic`] and [`check_publish`] first).
pub fn encode_publish(
    out: &mut Vec<u8>,
    topic: &[u8],
    payload: &[u8],
    retain: bool,
    qos: u8,
    packet_id: u16,
) {
    let length = 2 + topic.len() + if qos != 0 { 2 } else { 0 } + payload.len();
    out.reserve(length + 5);
    out.push(0x30 | (qos << 1) | u8::from(retain));
    put_length(out, length);
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic);
    if qos != 0 {
        out.extend_from_slice(&packet_id.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Append the PUBACK of (packet id, QoS): nothing at QoS 0; an error at other QoS than
/// 0 and 1 and for a packet id outside 1..=65535.
pub fn encode_ack(out: &mut Vec<u8>, packet_id: i64, qos: i64) -> Result<(), EncodeError> {
    if qos == 0 {
        return Ok(());
    }
    if qos != 1 {
        return Err(EncodeError::AckQos(qos));
    }
    let Ok(id @ 1..=0xFFFF) = u16::try_from(packet_id) else {
        return Err(EncodeError::PacketId(packet_id));
    };
    out.extend_from_slice(&[0x40, 0x02]);
    out.extend_from_slice(&id.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owned [`Packet`], for comparisons.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Publish(String, Vec<u8>, u8, u16, bool),
        PubAck(u16),
        Control(u8, Vec<u8>),
        Dropped(String, u8, u16, usize),
    }

    impl Sink for Vec<Owned> {
        fn packet(&mut self, packet: Packet<'_>) {
            self.push(match packet {
                Packet::Publish {
                    topic,
                    payload,
                    qos,
                    packet_id,
                    retain,
                } => Owned::Publish(topic.into(), payload.into(), qos, packet_id, retain),
                Packet::PubAck(id) => Owned::PubAck(id),
                Packet::Control { kind, body } => Owned::Control(kind, body.into()),
                Packet::Dropped {
                    topic,
                    qos,
                    packet_id,
                    size,
                } => Owned::Dropped(topic.into(), qos, packet_id, size),
            });
        }
    }

    fn feed(decoder: &mut Decoder, data: &[u8]) -> Result<Vec<Owned>, PacketError> {
        let mut out = Vec::new();
        decoder.feed(data, &mut out).map(|()| out)
    }

    fn decode(data: &[u8]) -> Result<Vec<Owned>, PacketError> {
        feed(&mut Decoder::default(), data)
    }

    fn publish_bytes(topic: &str, payload: &[u8], retain: bool, qos: u8, id: u16) -> Vec<u8> {
        let mut out = Vec::new();
        check_topic(topic.as_bytes()).unwrap();
        check_publish(topic.len(), payload.len(), qos.into(), id.into()).unwrap();
        encode_publish(&mut out, topic.as_bytes(), payload, retain, qos, id);
        out
    }

    fn error(data: &[u8]) -> String {
        decode(data).unwrap_err().0
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            decode(b"\x30\x05\x00\x01ahi").unwrap(),
            [Owned::Publish("a".into(), b"hi".to_vec(), 0, 0, false)]
        );
        assert_eq!(
            decode(b"\x3b\x07\x00\x01a\x12\x34hi").unwrap(),
            [Owned::Publish("a".into(), b"hi".to_vec(), 1, 0x1234, true)]
        );
        assert_eq!(decode(b"\x40\x02\x00\x07").unwrap(), [Owned::PubAck(7)]);
        assert_eq!(
            decode(b"\x20\x02\x01\x00\x90\x05\x00\x01\x00\x80\x01\xb0\x02\x00\x02\xd0\x00")
                .unwrap(),
            [
                Owned::Control(2, vec![1, 0]),
                Owned::Control(9, vec![0, 1, 0, 0x80, 1]),
                Owned::Control(11, vec![0, 2]),
                Owned::Control(13, vec![]),
            ]
        );
    }

    #[test]
    fn remaining_lengths_round_trip() {
        for size in [
            0usize, 1, 123, 124, 125, 16379, 16380, 16381, 2_097_147, 2_097_148,
        ] {
            let payload = vec![7u8; size];
            let packet = publish_bytes("t", &payload, false, 0, 0);
            let length = size + 3;
            let header = match length {
                0..=127 => 2,
                128..=16383 => 3,
                16384..=2_097_151 => 4,
                _ => 5,
            };
            assert_eq!(packet.len(), header + length);
            assert_eq!(
                decode(&packet).unwrap(),
                [Owned::Publish("t".into(), payload, 0, 0, false)]
            );
        }
    }

    #[test]
    fn every_split_gives_the_same_packets() {
        let mut stream = publish_bytes("a/b", b"payload", true, 1, 9);
        stream.extend_from_slice(b"\x40\x02\x00\x09\xd0\x00");
        stream.extend(publish_bytes("c", &[1; 200], false, 0, 0));
        stream.extend_from_slice(b"\x90\x03\x00\x01\x01");
        let whole = decode(&stream).unwrap();
        assert_eq!(whole.len(), 5);
        for cut in 0..=stream.len() {
            let mut decoder = Decoder::default();
            let mut got = feed(&mut decoder, &stream[..cut]).unwrap();
            got.extend(feed(&mut decoder, &stream[cut..]).unwrap());
            assert_eq!(got, whole, "cut at {cut}");
            assert_eq!(decoder.buffered(), 0);
        }
        let mut decoder = Decoder::default();
        let mut got = Vec::new();
        for byte in &stream {
            got.extend(feed(&mut decoder, std::slice::from_ref(byte)).unwrap());
        }
        assert_eq!(got, whole);
    }

    #[test]
    fn an_oversized_publish_is_skipped_as_it_streams() {
        let big = publish_bytes("big", &[5; 10_000], false, 1, 42);
        let mut stream = big.clone();
        stream.extend(publish_bytes("small", b"x", false, 0, 0));
        let mut decoder = Decoder::new(100);
        let mut got = Vec::new();
        for chunk in stream.chunks(7) {
            got.extend(feed(&mut decoder, chunk).unwrap());
            assert!(decoder.buffered() < 16);
        }
        assert_eq!(
            got,
            [
                Owned::Dropped("big".into(), 1, 42, 10_000),
                Owned::Publish("small".into(), b"x".to_vec(), 0, 0, false),
            ]
        );
        assert_eq!(decode(&stream).unwrap().len(), 2);
        // A remaining length of 1 over max_packet 0 is not waited for.
        assert_eq!(
            feed(&mut Decoder::new(0), b"\x30\x01").unwrap_err().0,
            "PUBLISH: no topic length"
        );
    }

    #[test]
    fn malformed_packets_fail_the_decoder() {
        assert_eq!(error(b"\x10\x00"), "a broker must not send CONNECT");
        assert_eq!(error(b"\x00\x00"), "a broker must not send reserved type 0");
        assert_eq!(
            error(b"\xf0\x00"),
            "a broker must not send reserved type 15"
        );
        assert_eq!(error(b"\x36\x00"), "PUBLISH with QoS 3");
        assert!(error(b"\x34\x00").starts_with("PUBLISH with QoS 2"));
        assert_eq!(
            error(b"\x38\x04\x00\x01ax"),
            "PUBLISH with DUP set at QoS 0"
        );
        assert_eq!(
            error(b"\x30\x80\x80\x80\x80"),
            "a remaining length longer than 4 bytes"
        );
        assert_eq!(error(b"\x30\x02\x00\x00"), "PUBLISH: an empty topic");
        assert_eq!(
            error(b"\x30\x03\x00\x01\xff"),
            "PUBLISH: the topic is not valid UTF-8"
        );
        assert_eq!(
            error(b"\x30\x03\x00\x01+"),
            "PUBLISH: the topic holds a wildcard or U+0000"
        );
        assert_eq!(
            error(b"\x32\x05\x00\x01a\x00\x00"),
            "PUBLISH: packet id 0 at QoS 1"
        );
        assert_eq!(
            error(b"\x30\x03\x00\x05a"),
            "PUBLISH: the topic is longer than the packet"
        );
        assert_eq!(error(b"\x30\x01\x00"), "PUBLISH: no topic length");
        assert_eq!(error(b"\x40\x03"), "packet type 4 of 3 bytes (must be 2)");
        assert_eq!(error(b"\xd1\x00"), "packet type 13 with flags 0x1");
        assert_eq!(error(b"\x90\x02"), "SUBACK of 2 bytes");
        assert_eq!(error(b"\x90\x81\x80\x04"), "SUBACK of 65537 bytes");
        assert_eq!(
            error(b"\x90\x03\x00\x01\x03"),
            "SUBACK: a return code other than 0, 1, 2 or 0x80"
        );
        assert_eq!(error(b"\x20\x02\x02\x00"), "CONNACK: reserved flags set");
        let mut decoder = Decoder::default();
        assert!(feed(&mut decoder, b"\x40\x02\x00\x01\xe0").is_ok());
        let first = feed(&mut decoder, b"\x00").unwrap_err();
        assert_eq!(first.0, "a broker must not send DISCONNECT");
        assert_eq!(decoder.buffered(), 0);
        assert_eq!(feed(&mut decoder, b"\x40\x02\x00\x01").unwrap_err(), first);
        assert_eq!(decoder.failed(), Some(&first));
    }

    #[test]
    fn encoders() {
        let mut out = Vec::new();
        encode_ack(&mut out, 5, 1).unwrap();
        encode_ack(&mut out, 99_999, 0).unwrap();
        assert_eq!(out, b"\x40\x02\x00\x05");
        assert_eq!(encode_ack(&mut out, 0, 1), Err(EncodeError::PacketId(0)));
        assert_eq!(
            encode_ack(&mut out, 65_536, 1),
            Err(EncodeError::PacketId(65_536))
        );
        assert_eq!(encode_ack(&mut out, 1, 2), Err(EncodeError::AckQos(2)));
        assert_eq!(check_topic(b""), Err(EncodeError::TopicLength(0)));
        assert_eq!(
            check_topic(&[b'a'; 65_536]),
            Err(EncodeError::TopicLength(65_536))
        );
        assert_eq!(check_topic(b"a/#"), Err(EncodeError::TopicWildcard));
        assert_eq!(check_publish(1, 0, 2, 1), Err(EncodeError::Qos(2)));
        assert_eq!(check_publish(1, 0, 1, 0), Err(EncodeError::PacketId(0)));
        assert_eq!(check_publish(1, 0, 0, -5), Ok(3));
        assert_eq!(
            check_publish(1, MAX_REMAINING_LENGTH, 0, 0),
            Err(EncodeError::TooLarge(MAX_REMAINING_LENGTH + 3))
        );
        assert_eq!(
            publish_bytes("a", b"hi", true, 1, 0x1234),
            b"\x33\x07\x00\x01a\x12\x34hi"
        );
        assert_eq!(
            EncodeError::Qos(3).to_string(),
            "PUBLISH QoS must be 0 or 1, not 3"
        );
    }
}
