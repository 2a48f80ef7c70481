//! `handle_batch`: a batch of received device messages in ONE call (route, apply the twin
//! reports, build replies, deltas and uplink records, commit), as specified by
//! `edgenode._pure.devbatch`. Only what must be published and acknowledged comes back.
//!
//! The fast path (a report of a device in `twins`, on a topic no route matches, accepted
//! by its twin) runs here without calling Python; every other message goes to the
//! caller's `fallback(index)`, in order, and its publishes, records and twin writes join
//! the batch where the message stands.

use std::collections::HashMap;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyInt, PyList, PyString, PyTuple};

use crate::py_devtwin::{check_now, PyDeviceTwin};
use crate::py_router::PyTopicRouter;
use crate::py_store::PyStore;
use crate::store::{BatchRecord, NewRecord};

/// `edgenode.uplink.MAX_UPLINK_PAYLOAD`: a larger record is not appended (`oversize`).
const MAX_RECORD_BYTES: usize = 256 * 1024;

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
const COUNTER_NAMES: [&str; 8] = [
    "messages",
    "updates_accepted",
    "reports_changed",
    "reports_unchanged",
    "delta_published",
    "delta_cleared",
    "uplink_twin",
    "uplink_device-state",
];
const MESSAGES: usize = 0;
const UPDATES_ACCEPTED: usize = 1;
const REPORTS_CHANGED: usize = 2;
const REPORTS_UNCHANGED: usize = 3;
const DELTA_PUBLISHED: usize = 4;
const DELTA_CLEARED: usize = 5;
const UPLINK_TWIN: usize = 6;
const UPLINK_STATE: usize = 7;

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
#[pyo3(signature = (store, twins, router, messages, now, heads, priority, ttl, fallback))]
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
) -> PyResult<BatchResult> {
    let now = check_now(now)?;
    let (twin_head, state_head) = check_heads(heads)?;
    let priority = check_priority(priority)?;
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
    let mut counts = [0usize; 8];
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
