//! `handle_batch`: a batch of received device messages in ONE call (route, apply the twin
//! reports, build replies, deltas and uplink records, commit), as specified by
//! `edgenode._pure.devbatch`. Only what must be published and acknowledged comes back.
//!
//! The fast paths run here without calling Python: a report of a device in `twins`, on a
//! topic no route matches, accepted by its twin; and, given `routing`, a message that
//! only goes upstream (telemetry, or a topic outside `$`, matched by upstream routes),
//! which becomes its `telemetry` record. Every other message goes to the caller's
//! `fallback(index)`, in order, and its publishes, records and twin writes join the batch
//! where the message stands.

use std::collections::HashMap;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::jsontext;
use crate::py_devtwin::{check_now, PyDeviceTwin};
use crate::py_router::PyTopicRouter;
use crate::py_store::PyStore;
use crate::store::{BatchRecord, NewRecord};

/// `edgenode.uplink.MAX_UPLINK_PAYLOAD`: a larger record is not appended (`oversize`).
const MAX_RECORD_BYTES: usize = 256 * 1024;
/// `edgenode.devices.twins.MAX_TELEMETRY_BYTES`: a larger payload goes to the fallback.
const MAX_TELEMETRY_BYTES: usize = 192 * 1024;
/// `edgenode.uplink.MAX_BODY_BYTES`: a larger telemetry body goes to the fallback.
const MAX_BODY_BYTES: usize = MAX_RECORD_BYTES - (64 + 32 + 4 * 253);

const ROUTING_SHAPE: &str = "routing must be a (rules: sequence of (republish: bool, \
    enabled: bool, priority: 0-9, ttl: number or None), known devices, telemetry head: \
    bytes, default priority: 0-9) tuple";

/// One route's decision, by the route's index in the router.
struct Rule {
    republish: bool,
    enabled: bool,
    priority: i64,
    ttl: Option<f64>,
}

/// What the fast path of upstream messages needs (see `edgenode._pure.devbatch.Routing`).
struct Routing<'py> {
    rules: Vec<Rule>,
    known: Bound<'py, PyAny>,
    head: Vec<u8>,
    default_priority: i64,
}

fn routing_shape() -> PyErr {
    PyTypeError::new_err(ROUTING_SHAPE)
}

/// An exact int (not bool) in 0..=9.
fn small_priority(value: &Bound<'_, PyAny>) -> Option<i64> {
    if !value.is_exact_instance_of::<PyInt>() {
        return None;
    }
    match value.extract::<i64>() {
        Ok(value @ 0..=9) => Some(value),
        _ => None,
    }
}

fn check_routing<'py>(routing: &Bound<'py, PyAny>) -> PyResult<Routing<'py>> {
    let tuple = routing
        .downcast_exact::<PyTuple>()
        .map_err(|_| routing_shape())?;
    if tuple.len() != 4 {
        return Err(routing_shape());
    }
    let rules = tuple.get_item(0)?;
    let known = tuple.get_item(1)?;
    let head = tuple.get_item(2)?;
    let default_priority = tuple.get_item(3)?;
    if !rules.is_exact_instance_of::<PyList>() && !rules.is_exact_instance_of::<PyTuple>() {
        return Err(routing_shape());
    }
    let head = head
        .downcast_exact::<PyBytes>()
        .map_err(|_| routing_shape())?;
    let default_priority = small_priority(&default_priority).ok_or_else(routing_shape)?;
    let mut checked = Vec::new();
    for rule in rules.try_iter()? {
        let rule = rule?;
        let rule = rule
            .downcast_exact::<PyTuple>()
            .map_err(|_| routing_shape())?;
        if rule.len() != 4 {
            return Err(routing_shape());
        }
        let republish = rule.get_item(0)?;
        let enabled = rule.get_item(1)?;
        let (Ok(republish), Ok(enabled)) = (
            republish.downcast_exact::<PyBool>(),
            enabled.downcast_exact::<PyBool>(),
        ) else {
            return Err(routing_shape());
        };
        let priority = small_priority(&rule.get_item(2)?).ok_or_else(routing_shape)?;
        let ttl = rule.get_item(3)?;
        let ttl = if ttl.is_none() {
            None
        } else if ttl.is_exact_instance_of::<PyFloat>() || ttl.is_exact_instance_of::<PyInt>() {
            Some(ttl.extract::<f64>()?)
        } else {
            return Err(routing_shape());
        };
        checked.push(Rule {
            republish: republish.is_true(),
            enabled: enabled.is_true(),
            priority,
            ttl,
        });
    }
    Ok(Routing {
        rules: checked,
        known,
        head: head.as_bytes().to_vec(),
        default_priority,
    })
}

/// Python's order of TTLs among routes of one priority: the longest wins, None is forever.
fn ttl_rank(ttl: Option<f64>) -> f64 {
    ttl.unwrap_or(f64::INFINITY)
}

/// A message that goes upstream and nowhere else (see `edgenode._pure.devbatch._upstream`).
struct Upstream<'a> {
    device: Option<&'a str>,
    priority: i64,
    ttl: Option<f64>,
    known_device: bool,
}

fn upstream<'a>(
    name: &'a str,
    router: Option<&Bound<'_, PyTopicRouter>>,
    routing: &Routing<'_>,
) -> PyResult<Option<Upstream<'a>>> {
    let mut device = None;
    let mut known_device = false;
    if name.starts_with('$') {
        let mut levels = name.splitn(5, '/');
        let (Some("$edge"), Some("devices"), Some(named), Some("telemetry")) =
            (levels.next(), levels.next(), levels.next(), levels.next())
        else {
            return Ok(None);
        };
        if named.is_empty() {
            return Ok(None);
        }
        device = Some(named);
        known_device = routing.known.contains(named)?;
    }
    let mut best: Option<(i64, Option<f64>)> = None;
    let mut any_upstream_route = false;
    if let Some(router) = router {
        let mut router = router.borrow_mut();
        let Ok(matched) = router.inner.match_topic(name) else {
            return Ok(None);
        };
        for &index in matched {
            let Some(rule) = usize::try_from(index)
                .ok()
                .and_then(|i| routing.rules.get(i))
            else {
                return Err(PyValueError::new_err(format!(
                    "routing has no rule for route {index}"
                )));
            };
            if rule.republish {
                if rule.enabled {
                    return Ok(None);
                }
                continue;
            }
            any_upstream_route = true;
            if rule.enabled
                && best.is_none_or(|(priority, ttl)| {
                    rule.priority < priority
                        || (rule.priority == priority && ttl_rank(rule.ttl) > ttl_rank(ttl))
                })
            {
                best = Some((rule.priority, rule.ttl));
            }
        }
    }
    if !any_upstream_route && known_device {
        best = Some((routing.default_priority, None));
    }
    Ok(best.map(|(priority, ttl)| Upstream {
        device,
        priority,
        ttl,
        known_device,
    }))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding, as `base64.b64encode`.
fn write_base64(out: &mut Vec<u8>, data: &[u8]) {
    let mut chunks = data.chunks_exact(3);
    for chunk in &mut chunks {
        let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            out.push(BASE64[(n >> shift & 63) as usize]);
        }
    }
    match *chunks.remainder() {
        [a] => {
            let n = u32::from(a) << 16;
            out.extend_from_slice(&[BASE64[(n >> 18) as usize], BASE64[(n >> 12 & 63) as usize]]);
            out.extend_from_slice(b"==");
        }
        [a, b] => {
            let n = u32::from(a) << 16 | u32::from(b) << 8;
            for shift in [18, 12, 6] {
                out.push(BASE64[(n >> shift & 63) as usize]);
            }
            out.push(b'=');
        }
        _ => {}
    }
}

/// The record TwinService makes of a message that goes upstream:
/// head + `{"device":…,"topic":…,"payload":…,"encoding":…,"timestamp":…}` + `}`;
/// None when the fallback would count it too large instead.
fn telemetry_record(
    head: &[u8],
    device: Option<&str>,
    name: &str,
    payload: &[u8],
    now: f64,
) -> Option<Vec<u8>> {
    let mut data = Vec::with_capacity(head.len() + payload.len() + name.len() + 96);
    data.extend_from_slice(head);
    data.extend_from_slice(b"{\"device\":");
    match device {
        Some(device) => jsontext::write_str(&mut data, device),
        None => data.extend_from_slice(b"null"),
    }
    data.extend_from_slice(b",\"topic\":");
    jsontext::write_str(&mut data, name);
    data.extend_from_slice(b",\"payload\":");
    let encoding: &[u8] = match std::str::from_utf8(payload) {
        Ok(text) => {
            jsontext::write_str(&mut data, text);
            b"utf-8"
        }
        Err(_) => {
            data.push(b'"');
            write_base64(&mut data, payload);
            data.push(b'"');
            b"base64"
        }
    };
    data.extend_from_slice(b",\"encoding\":\"");
    data.extend_from_slice(encoding);
    data.extend_from_slice(b"\",\"timestamp\":");
    jsontext::write_float(&mut data, now);
    data.push(b'}');
    if data.len() - head.len() > MAX_BODY_BYTES || data.len() + 1 > MAX_RECORD_BYTES {
        return None;
    }
    data.push(b'}');
    Some(data)
}

/// What a batch left to do, and what it did (see `edgenode._pure.devbatch.BatchResult`).
#[pyclass(module = "edgenode._edgecore_fast", frozen, get_all)]
pub struct BatchResult {
    publishes: Py<PyList>,
    acks: Py<PyList>,
    counters: Py<PyDict>,
    appended: usize,
    urgent: Option<i64>,
    refused: Py<PyList>,
    oversize: Py<PyList>,
    fast: usize,
}

#[pymethods]
impl BatchResult {
    fn __repr__(&self) -> String {
        format!(
            "BatchResult(appended={}, urgent={:?}, fast={})",
            self.appended, self.urgent, self.fast
        )
    }
}

/// The fast path's counters, in a fixed order (indices below).
const COUNTER_NAMES: [&str; 10] = [
    "messages",
    "updates_accepted",
    "reports_changed",
    "reports_unchanged",
    "delta_published",
    "delta_cleared",
    "uplink_twin",
    "uplink_device-state",
    "telemetry",
    "uplink_telemetry",
];
const MESSAGES: usize = 0;
const UPDATES_ACCEPTED: usize = 1;
const REPORTS_CHANGED: usize = 2;
const REPORTS_UNCHANGED: usize = 3;
const DELTA_PUBLISHED: usize = 4;
const DELTA_CLEARED: usize = 5;
const UPLINK_TWIN: usize = 6;
const UPLINK_STATE: usize = 7;
const TELEMETRY: usize = 8;
const UPLINK_TELEMETRY: usize = 9;

struct Record {
    kind: String,
    data: Vec<u8>,
    priority: i64,
    ttl: Option<f64>,
    key: Option<String>,
}

/// Twin documents to store: the newest per device, in the order devices were first written.
#[derive(Default)]
struct Written {
    docs: Vec<(String, Vec<u8>)>,
    at: HashMap<String, usize>,
}

impl Written {
    fn put(&mut self, device: &str, doc: Vec<u8>) {
        if let Some(&index) = self.at.get(device) {
            self.docs[index].1 = doc;
        } else {
            self.at.insert(device.to_owned(), self.docs.len());
            self.docs.push((device.to_owned(), doc));
        }
    }
}

/// The device of a `$edge/devices/{device}/twin/update` topic.
fn report_device(topic: &str) -> Option<&str> {
    let rest = topic.strip_prefix("$edge/devices/")?;
    let device = rest.strip_suffix("/twin/update")?;
    if device.is_empty() || device.contains('/') {
        return None;
    }
    Some(device)
}

fn bad_message(message: &Bound<'_, PyAny>) -> PyErr {
    let shown: String = message
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_default()
        .chars()
        .take(80)
        .collect();
    PyTypeError::new_err(format!(
        "a message must be a (topic: str, payload: bytes, qos: 0-2, packet id: int) tuple, not {shown}"
    ))
}

/// One received message: (topic, payload, QoS, packet id).
type Message<'py> = (
    Bound<'py, PyString>,
    Bound<'py, PyBytes>,
    i64,
    Bound<'py, PyAny>,
);

/// (topic, payload, qos, packet id), checked as the specification checks it.
fn check_message<'py>(message: &Bound<'py, PyAny>) -> PyResult<Message<'py>> {
    let Ok(tuple) = message.downcast_exact::<PyTuple>() else {
        return Err(bad_message(message));
    };
    if tuple.len() != 4 {
        return Err(bad_message(message));
    }
    let topic = tuple.get_item(0)?;
    let payload = tuple.get_item(1)?;
    let qos = tuple.get_item(2)?;
    let mid = tuple.get_item(3)?;
    let (Ok(topic), Ok(payload)) = (
        topic.downcast_exact::<PyString>(),
        payload.downcast_exact::<PyBytes>(),
    ) else {
        return Err(bad_message(message));
    };
    if !qos.is_exact_instance_of::<PyInt>() || !mid.is_exact_instance_of::<PyInt>() {
        return Err(bad_message(message));
    }
    let qos: i64 = match qos.extract() {
        Ok(value @ 0..=2) => value,
        _ => return Err(bad_message(message)),
    };
    Ok((topic.clone(), payload.clone(), qos, mid))
}

fn check_heads(heads: &Bound<'_, PyAny>) -> PyResult<(Vec<u8>, Vec<u8>)> {
    let problem = || PyTypeError::new_err("heads must be a (twin, device-state) tuple of bytes");
    let tuple = heads.downcast_exact::<PyTuple>().map_err(|_| problem())?;
    if tuple.len() != 2 {
        return Err(problem());
    }
    let twin = tuple.get_item(0)?;
    let state = tuple.get_item(1)?;
    let twin = twin.downcast_exact::<PyBytes>().map_err(|_| problem())?;
    let state = state.downcast_exact::<PyBytes>().map_err(|_| problem())?;
    Ok((twin.as_bytes().to_vec(), state.as_bytes().to_vec()))
}

fn check_priority(priority: &Bound<'_, PyAny>) -> PyResult<i64> {
    if priority.is_exact_instance_of::<PyInt>() && !priority.is_instance_of::<PyBool>() {
        if let Ok(value @ 0..=9) = priority.extract::<i64>() {
            return Ok(value);
        }
    }
    Err(PyValueError::new_err(format!(
        "priority must be an int in [0, 9], not {}",
        priority.repr()?
    )))
}

fn optional_f64(value: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    if value.is_none() {
        Ok(None)
    } else {
        Ok(Some(value.extract()?))
    }
}

fn optional_string(value: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if value.is_none() {
        Ok(None)
    } else {
        Ok(Some(value.extract()?))
    }
}

fn publish<'py>(
    py: Python<'py>,
    topic: &str,
    payload: &[u8],
    retain: bool,
) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            PyString::new(py, topic).into_any(),
            PyBytes::new(py, payload).into_any(),
            PyBool::new(py, retain).to_owned().into_any(),
            1i64.into_pyobject(py)?.into_any(),
        ],
    )
}

/// Handle, route and commit a batch of received messages (see `edgenode._pure.devbatch`).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (store, twins, router, messages, now, heads, priority, ttl, fallback, routing=None))]
fn handle_batch<'py>(
    py: Python<'py>,
    store: &Bound<'py, PyAny>,
    twins: &Bound<'py, PyAny>,
    router: &Bound<'py, PyAny>,
    messages: &Bound<'py, PyAny>,
    now: &Bound<'py, PyAny>,
    heads: &Bound<'py, PyAny>,
    priority: &Bound<'py, PyAny>,
    ttl: &Bound<'py, PyAny>,
    fallback: &Bound<'py, PyAny>,
    routing: Option<&Bound<'py, PyAny>>,
) -> PyResult<BatchResult> {
    let now = check_now(now)?;
    let (twin_head, state_head) = check_heads(heads)?;
    let priority = check_priority(priority)?;
    let routing = match routing {
        Some(routing) if !routing.is_none() => Some(check_routing(routing)?),
        _ => None,
    };
    let store = store.downcast::<PyStore>().map_err(|_| {
        PyTypeError::new_err("store must be the extension's Store (both parts of one backend)")
    })?;
    let router = if router.is_none() {
        None
    } else {
        Some(router.downcast::<PyTopicRouter>().map_err(|_| {
            PyTypeError::new_err("router must be the extension's TopicRouter or None")
        })?)
    };
    let ttl = optional_f64(ttl)?;
    let twin_dict = twins.downcast_exact::<PyDict>().ok();

    let publishes = PyList::empty(py);
    let acks = PyList::empty(py);
    let mut records: Vec<Record> = Vec::new();
    let mut written = Written::default();
    let mut counts = [0usize; COUNTER_NAMES.len()];
    let mut fast = 0usize;

    for (index, message) in messages.try_iter()?.enumerate() {
        let message = message?;
        let (topic, payload, qos, mid) = check_message(&message)?;
        if qos > 0 {
            acks.append(PyTuple::new(
                py,
                [mid.clone(), qos.into_pyobject(py)?.into_any()],
            )?)?;
        }
        let mut outcome = None;
        let mut device_name: Option<&str> = None;
        if let Ok(text) = topic.to_str() {
            if let Some(device) = report_device(text) {
                let twin = match twin_dict {
                    Some(dict) => dict.get_item(device)?,
                    None => {
                        let found = twins.call_method1("get", (device,))?;
                        (!found.is_none()).then_some(found)
                    }
                };
                if let Some(twin) = twin {
                    let twin = twin.downcast::<PyDeviceTwin>().map_err(|_| {
                        PyTypeError::new_err("twins must hold the extension's DeviceTwin")
                    })?;
                    let routed = match router {
                        None => false,
                        Some(router) => match router.borrow_mut().inner.match_topic(text) {
                            Ok(found) => !found.is_empty(),
                            Err(_) => true,
                        },
                    };
                    if !routed {
                        let mut twin = twin.borrow_mut();
                        if let Ok(mut accepted) = twin.inner.apply_report(payload.as_bytes(), now) {
                            if let Some(document) = accepted.document.take() {
                                written.put(device, document);
                                twin.inner.commit();
                            }
                            outcome = Some(accepted);
                            device_name = Some(device);
                        }
                    }
                }
            }
        }
        if outcome.is_none() {
            if let (Some(routing), Ok(text)) = (&routing, topic.to_str()) {
                let payload = payload.as_bytes();
                let found = if payload.len() > MAX_TELEMETRY_BYTES {
                    None
                } else {
                    upstream(text, router, routing)?
                };
                let record = found.and_then(|found| {
                    telemetry_record(&routing.head, found.device, text, payload, now)
                        .map(|data| (data, found))
                });
                if let Some((data, found)) = record {
                    fast += 1;
                    counts[MESSAGES] += 1;
                    if found.known_device {
                        counts[TELEMETRY] += 1;
                    }
                    counts[UPLINK_TELEMETRY] += 1;
                    records.push(Record {
                        kind: "telemetry".to_owned(),
                        data,
                        priority: found.priority,
                        ttl: found.ttl.or(ttl),
                        key: None,
                    });
                    continue;
                }
            }
        }
        let (Some(outcome), Some(device)) = (outcome, device_name) else {
            let more = fallback.call1((index,))?;
            let more = more.downcast::<PyTuple>().map_err(|_| {
                PyTypeError::new_err("fallback must return (publishes, records, twins)")
            })?;
            if more.len() != 3 {
                return Err(PyTypeError::new_err(
                    "fallback must return (publishes, records, twins)",
                ));
            }
            for item in more.get_item(0)?.try_iter()? {
                publishes.append(item?)?;
            }
            for item in more.get_item(1)?.try_iter()? {
                let item = item?;
                let (kind, data, priority, ttl, key): (
                    String,
                    Bound<'_, PyBytes>,
                    Bound<'_, PyAny>,
                    Bound<'_, PyAny>,
                    Bound<'_, PyAny>,
                ) = item.extract()?;
                records.push(Record {
                    kind,
                    data: data.as_bytes().to_vec(),
                    priority: priority.extract()?,
                    ttl: optional_f64(&ttl)?,
                    key: optional_string(&key)?,
                });
            }
            for item in more.get_item(2)?.try_iter()? {
                let (device, doc): (String, Bound<'_, PyBytes>) = item?.extract()?;
                written.put(&device, doc.as_bytes().to_vec());
            }
            continue;
        };
        fast += 1;
        counts[MESSAGES] += 1;
        counts[UPDATES_ACCEPTED] += 1;
        counts[if outcome.changed {
            REPORTS_CHANGED
        } else {
            REPORTS_UNCHANGED
        }] += 1;
        let root = format!("$edge/devices/{device}");
        publishes.append(publish(
            py,
            &format!("{root}/twin/update/accepted"),
            &outcome.reply,
            false,
        )?)?;
        if let Some(body) = &outcome.twin_uplink {
            if let Some(delta) = &outcome.delta {
                counts[if delta.is_empty() {
                    DELTA_CLEARED
                } else {
                    DELTA_PUBLISHED
                }] += 1;
                publishes.append(publish(py, &format!("{root}/twin/delta"), delta, true)?)?;
            }
            counts[UPLINK_TWIN] += 1;
            let mut data = Vec::with_capacity(twin_head.len() + body.len() + 1);
            data.extend_from_slice(&twin_head);
            data.extend_from_slice(body);
            data.push(b'}');
            records.push(Record {
                kind: "twin".to_owned(),
                data,
                priority,
                ttl,
                key: Some(format!("twin/{device}")),
            });
        }
        if let Some(body) = &outcome.ack_uplink {
            counts[UPLINK_STATE] += 1;
            let mut data = Vec::with_capacity(state_head.len() + body.len() + 1);
            data.extend_from_slice(&state_head);
            data.extend_from_slice(body);
            data.push(b'}');
            records.push(Record {
                kind: "device-state".to_owned(),
                data,
                priority,
                ttl,
                key: Some(format!("device-ack/{device}")),
            });
        }
    }

    let oversize = PyList::empty(py);
    let mut kept: Vec<Record> = Vec::with_capacity(records.len());
    for record in records {
        if record.data.len() > MAX_RECORD_BYTES {
            oversize.append(&record.kind)?;
        } else {
            kept.push(record);
        }
    }
    let seqs: Vec<Option<i64>> = if kept.is_empty() && written.docs.is_empty() {
        Vec::new()
    } else {
        let twins: Vec<(&str, &[u8])> = written
            .docs
            .iter()
            .map(|(device, doc)| (device.as_str(), doc.as_slice()))
            .collect();
        let batch: Vec<BatchRecord<'_>> = kept
            .iter()
            .map(|record| BatchRecord {
                record: NewRecord {
                    payload: &record.data,
                    priority: record.priority,
                    ttl: record.ttl,
                },
                coalesce_key: record.key.as_deref(),
            })
            .collect();
        store
            .borrow()
            .with(py, |s| s.commit_batch(&twins, &batch, None))?
    };
    let refused = PyList::empty(py);
    let mut appended = 0usize;
    let mut urgent: Option<i64> = None;
    for (record, seq) in kept.iter().zip(&seqs) {
        if seq.is_some() {
            appended += 1;
            urgent = Some(urgent.map_or(record.priority, |u| u.min(record.priority)));
        } else {
            refused.append(&record.kind)?;
        }
    }
    let counters = PyDict::new(py);
    for (name, count) in COUNTER_NAMES.iter().zip(counts) {
        if count > 0 {
            counters.set_item(name, count)?;
        }
    }
    Ok(BatchResult {
        publishes: publishes.unbind(),
        acks: acks.unbind(),
        counters: counters.unbind(),
        appended,
        urgent,
        refused: refused.unbind(),
        oversize: oversize.unbind(),
        fast,
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<BatchResult>()?;
    m.add_function(wrap_pyfunction!(handle_batch, m)?)?;
    Ok(())
}
