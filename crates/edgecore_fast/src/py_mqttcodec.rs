//! Python binding of [`crate::mqttcodec`]: converts arguments, results and errors.
//!
//! Arguments are taken as `PyAny` and checked here as strictly as the pure twin
//! (`edgenode._pure.mqttcodec`, `type(x) is not T`), with its exception classes and
//! messages. The decoder's results are built straight into Python lists: `str` and
//! `bytes` objects are made from the input's slices (no intermediate copy), and a topic
//! seen before is, most often, the `str` object made for it then (a small cache).

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyList, PyString, PyTuple};

use crate::mqttcodec::{self, Decoder, EncodeError, Packet, Sink, MAX_REMAINING_LENGTH};
use crate::py_errors::edgenode_error;

/// `type(obj).__name__`, as the twin's messages show it.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "object".to_owned(), |name| name.to_string())
}

/// `f"{obj!r:.80}"`: the repr, at most 80 code points (a failing `__repr__` raises).
fn short_repr(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let repr = obj.repr()?;
    Ok(repr.to_string_lossy().chars().take(80).collect())
}

/// An exact `int` (not `bool`): its value if it fits an i64, else `i64::MAX` (out of
/// every range checked here); None for any other type.
fn exact_int(obj: &Bound<'_, PyAny>) -> Option<i64> {
    if !obj.is_exact_instance_of::<PyInt>() {
        return None;
    }
    Some(obj.extract::<i64>().unwrap_or(i64::MAX))
}

/// A ValueError about an int: `prefix` then `str(value)` (which itself raises, as in
/// Python, for an int too large to print).
fn int_error(prefix: &str, value: &Bound<'_, PyAny>) -> PyErr {
    match value.str() {
        Ok(text) => PyValueError::new_err(format!("{prefix}{}", text.to_string_lossy())),
        Err(err) => err,
    }
}

/// The `max_packet` argument, checked in `__new__` (a default when not given).
struct MaxPacket(Option<usize>);

impl<'py> FromPyObject<'py> for MaxPacket {
    fn extract_bound(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        Ok(Self(match exact_int(obj) {
            Some(value) if (0..=MAX_REMAINING_LENGTH as i64).contains(&value) => {
                Some(value as usize)
            }
            _ => None,
        }))
    }
}

/// Slots of a decoder's topic cache (a power of two).
const TOPIC_SLOTS: usize = 256;
/// Longer topics are not cached (the cache holds at most 32 KiB of topics).
const TOPIC_CACHED_BYTES: usize = 128;

/// A decoder's cache of topic `str`s, by a hash of their bytes (one per slot).
type TopicCache = Vec<(Vec<u8>, Option<Py<PyString>>)>;

/// The cache slot of a topic: a multiplicative hash of its length and bytes.
fn topic_slot(topic: &[u8]) -> usize {
    let mut hash = topic.len() as u64;
    let mut chunks = topic.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
        hash = (hash.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    for &byte in chunks.remainder() {
        hash = (hash.rotate_left(5) ^ u64::from(byte)).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    (hash >> 56) as usize & (TOPIC_SLOTS - 1)
}

/// The five result lists of one `feed`, filled as packets come.
struct ListSink<'py, 'c> {
    py: Python<'py>,
    messages: Bound<'py, PyList>,
    count: usize,
    retained: Bound<'py, PyList>,
    acks: Bound<'py, PyList>,
    controls: Bound<'py, PyList>,
    dropped: Bound<'py, PyList>,
    topics: &'c mut TopicCache,
    error: Option<PyErr>,
}

impl<'py, 'c> ListSink<'py, 'c> {
    fn new(py: Python<'py>, topics: &'c mut TopicCache) -> Self {
        Self {
            py,
            messages: PyList::empty(py),
            count: 0,
            retained: PyList::empty(py),
            acks: PyList::empty(py),
            controls: PyList::empty(py),
            dropped: PyList::empty(py),
            topics,
            error: None,
        }
    }

    /// The `str` of a topic: device topics repeat, so the decoder keeps the last `str`
    /// of each (short) topic in a small direct-mapped cache and hands out that object.
    fn topic(&mut self, topic: &str) -> Bound<'py, PyString> {
        let py = self.py;
        if topic.len() > TOPIC_CACHED_BYTES {
            return PyString::new(py, topic);
        }
        if self.topics.is_empty() {
            self.topics.resize_with(TOPIC_SLOTS, || (Vec::new(), None));
        }
        let (bytes, text) = &mut self.topics[topic_slot(topic.as_bytes())];
        if let Some(text) = text {
            if bytes.as_slice() == topic.as_bytes() {
                return text.bind(py).clone();
            }
        }
        let made = PyString::new(py, topic);
        bytes.clear();
        bytes.extend_from_slice(topic.as_bytes());
        *text = Some(made.clone().unbind());
        made
    }

    fn push(&mut self, packet: Packet<'_>) -> PyResult<()> {
        let py = self.py;
        match packet {
            Packet::Publish {
                topic,
                payload,
                qos,
                packet_id,
                retain,
            } => {
                if retain {
                    self.retained.append(self.count)?;
                }
                let topic = self.topic(topic);
                let message = (topic, PyBytes::new(py, payload), qos, packet_id);
                self.messages.append(message.into_pyobject(py)?)?;
                self.count += 1;
            }
            Packet::PubAck(packet_id) => self.acks.append(packet_id)?,
            Packet::Control { kind, body } => {
                let control = (kind, PyBytes::new(py, body)).into_pyobject(py)?;
                self.controls.append(control)?;
            }
            Packet::Dropped {
                topic,
                qos,
                packet_id,
                size,
            } => {
                let topic = self.topic(topic);
                let dropped = (topic, qos, packet_id, size).into_pyobject(py)?;
                self.dropped.append(dropped)?;
            }
        }
        Ok(())
    }
}

impl Sink for ListSink<'_, '_> {
    fn packet(&mut self, packet: Packet<'_>) {
        if self.error.is_none() {
            if let Err(err) = self.push(packet) {
                self.error = Some(err);
            }
        }
    }
}

type Decoded<'py> = (
    Bound<'py, PyList>,
    Bound<'py, PyList>,
    Bound<'py, PyList>,
    Bound<'py, PyList>,
    Bound<'py, PyList>,
);

/// Bytes from a broker in, packets out (see edgenode._pure.mqttcodec).
#[pyclass(name = "MqttDecoder", module = "edgenode._edgecore_fast")]
pub struct PyMqttDecoder {
    inner: Decoder,
    topics: TopicCache,
}

#[pymethods]
impl PyMqttDecoder {
    #[new]
    #[pyo3(signature = (max_packet = MaxPacket(Some(mqttcodec::DEFAULT_MAX_PACKET))))]
    fn new(max_packet: MaxPacket) -> PyResult<Self> {
        let Some(max_packet) = max_packet.0 else {
            return Err(PyValueError::new_err(format!(
                "max_packet must be an int in [0, {MAX_REMAINING_LENGTH}]"
            )));
        };
        Ok(Self {
            inner: Decoder::new(max_packet),
            topics: Vec::new(),
        })
    }

    /// Bytes held for a packet not yet complete.
    #[getter]
    fn buffered(&self) -> usize {
        self.inner.buffered()
    }

    /// (messages, retained, acks, controls, dropped) of what ``data`` completes.
    fn feed<'py>(&mut self, data: &Bound<'py, PyAny>) -> PyResult<Decoded<'py>> {
        let py = data.py();
        let Ok(bytes) = data.downcast_exact::<PyBytes>() else {
            return Err(PyTypeError::new_err(format!(
                "data must be bytes, not {}",
                type_name(data)
            )));
        };
        let mut sink = ListSink::new(py, &mut self.topics);
        if let Err(err) = self.inner.feed(bytes.as_bytes(), &mut sink) {
            return Err(edgenode_error(py, "MqttPacketError", err.0));
        }
        if let Some(err) = sink.error {
            return Err(err);
        }
        Ok((
            sink.messages,
            sink.retained,
            sink.acks,
            sink.controls,
            sink.dropped,
        ))
    }
}

fn bad_publish(publish: &Bound<'_, PyAny>) -> PyErr {
    match short_repr(publish) {
        Ok(shown) => PyTypeError::new_err(format!(
            "a publish must be a (topic: str, payload: bytes, retain: bool, qos: int, \
             packet id: int) tuple, not {shown}"
        )),
        Err(err) => err,
    }
}

/// Append one checked PUBLISH to `out`.
fn put_publish(out: &mut Vec<u8>, publish: &Bound<'_, PyAny>) -> PyResult<()> {
    let Ok(tuple) = publish.downcast_exact::<PyTuple>() else {
        return Err(bad_publish(publish));
    };
    if tuple.len() != 5 {
        return Err(bad_publish(publish));
    }
    let topic = tuple.get_borrowed_item(0)?;
    let payload = tuple.get_borrowed_item(1)?;
    let retain = tuple.get_borrowed_item(2)?;
    let qos_obj = tuple.get_borrowed_item(3)?;
    let id_obj = tuple.get_borrowed_item(4)?;
    let (Ok(topic), Ok(payload), Ok(retain), Some(qos), Some(packet_id)) = (
        topic.downcast_exact::<PyString>(),
        payload.downcast_exact::<PyBytes>(),
        retain.downcast_exact::<PyBool>(),
        exact_int(&qos_obj),
        exact_int(&id_obj),
    ) else {
        return Err(bad_publish(publish));
    };
    let Ok(name) = topic.to_str() else {
        return Err(PyValueError::new_err(
            "a topic must be valid UTF-8 (no lone surrogates)",
        ));
    };
    let name = name.as_bytes();
    let payload = payload.as_bytes();
    let checked = mqttcodec::check_topic(name)
        .and_then(|()| mqttcodec::check_publish(name.len(), payload.len(), qos, packet_id));
    match checked {
        Ok(_) => {}
        Err(EncodeError::TopicWildcard) => {
            return Err(PyValueError::new_err(format!(
                "a topic to publish must not hold '+', '#' or U+0000: {}",
                short_repr(topic)?
            )))
        }
        Err(EncodeError::Qos(_)) => {
            return Err(int_error("PUBLISH QoS must be 0 or 1, not ", &qos_obj))
        }
        Err(EncodeError::PacketId(_)) => {
            return Err(int_error(
                "a packet id must be in [1, 65535], not ",
                &id_obj,
            ))
        }
        Err(err) => return Err(PyValueError::new_err(err.to_string())),
    }
    // Checked: QoS 0 or 1, and at QoS 1 a packet id in 1..=65535 (ignored at QoS 0).
    let qos = qos as u8;
    let packet_id = if qos == 1 { packet_id as u16 } else { 0 };
    mqttcodec::encode_publish(out, name, payload, retain.is_true(), qos, packet_id);
    Ok(())
}

/// The PUBLISH packets of (topic, payload, retain, QoS 0 or 1, packet id), in one bytes.
#[pyfunction]
fn encode_publishes<'py>(publishes: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let Ok(list) = publishes.downcast_exact::<PyList>() else {
        return Err(PyTypeError::new_err(
            "publishes must be a list of (topic, payload, retain, qos, packet id)",
        ));
    };
    let mut out = Vec::new();
    for publish in list.iter() {
        put_publish(&mut out, &publish)?;
    }
    Ok(PyBytes::new(publishes.py(), &out))
}

fn bad_ack(ack: &Bound<'_, PyAny>) -> PyErr {
    match short_repr(ack) {
        Ok(shown) => PyTypeError::new_err(format!(
            "an ack must be a (packet id: int, qos: int) tuple, not {shown}"
        )),
        Err(err) => err,
    }
}

/// The PUBACK packets of (packet id, QoS), in one bytes; QoS 0 entries are skipped.
#[pyfunction]
fn encode_acks<'py>(acks: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    let Ok(list) = acks.downcast_exact::<PyList>() else {
        return Err(PyTypeError::new_err(
            "acks must be a list of (packet id, qos)",
        ));
    };
    let mut out = Vec::with_capacity(4 * list.len());
    for ack in list.iter() {
        let Ok(tuple) = ack.downcast_exact::<PyTuple>() else {
            return Err(bad_ack(&ack));
        };
        if tuple.len() != 2 {
            return Err(bad_ack(&ack));
        }
        let id_obj = tuple.get_borrowed_item(0)?;
        let qos_obj = tuple.get_borrowed_item(1)?;
        let (Some(packet_id), Some(qos)) = (exact_int(&id_obj), exact_int(&qos_obj)) else {
            return Err(bad_ack(&ack));
        };
        match mqttcodec::encode_ack(&mut out, packet_id, qos) {
            Ok(()) => {}
            Err(EncodeError::AckQos(_)) => {
                return Err(int_error(
                    "only QoS 1 messages are acknowledged, not QoS ",
                    &qos_obj,
                ))
            }
            Err(_) => {
                return Err(int_error(
                    "a packet id must be in [1, 65535], not ",
                    &id_obj,
                ))
            }
        }
    }
    Ok(PyBytes::new(acks.py(), &out))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DEFAULT_MAX_PACKET", mqttcodec::DEFAULT_MAX_PACKET)?;
    m.add_class::<PyMqttDecoder>()?;
    m.add_function(wrap_pyfunction!(encode_publishes, m)?)?;
    m.add_function(wrap_pyfunction!(encode_acks, m)?)?;
    Ok(())
}
