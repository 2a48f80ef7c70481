//! Python binding of [`crate::store`]: argument checks with the exact messages of
//! `edgenode._pure.store`, error mapping, and the GIL released around SQLite work.
//!
//! The store lives in a `Mutex<Option<Store>>` (`None` once closed): the mutex
//! makes the class `Sync` for PyO3 and lets other Python threads run while one
//! thread waits on the disk.

use std::sync::{Mutex, MutexGuard};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::py_errors::edgenode_error;
use crate::store::{self, BatchRecord, NewRecord, Store, Synchronous};

fn to_py(py: Python<'_>, err: store::Error) -> PyErr {
    match err {
        store::Error::Config(m) => edgenode_error(py, "ConfigError", m),
        store::Error::Value(m) => PyValueError::new_err(m),
        store::Error::Store(m) => edgenode_error(py, "StoreError", m),
        store::Error::Corrupt(m) => edgenode_error(py, "StoreCorruptError", m),
        store::Error::Full(m) => edgenode_error(py, "OutboxFullError", m),
    }
}

fn closed(py: Python<'_>) -> PyErr {
    edgenode_error(py, "StoreError", "store is closed")
}

fn type_name(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(obj.get_type().name()?.to_string())
}

fn check_int(obj: &Bound<'_, PyAny>, what: &str, lo: i64, hi: i64) -> PyResult<i64> {
    if !obj.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be int, not {}",
            type_name(obj)?
        )));
    }
    match obj.extract::<i64>() {
        Ok(v) if (lo..=hi).contains(&v) => Ok(v),
        _ => Err(PyValueError::new_err(format!(
            "{what} must be in {lo}..{hi}, got {}",
            obj.str()?
        ))),
    }
}

fn check_str(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<String> {
    if !obj.is_instance_of::<PyString>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be str, not {}",
            type_name(obj)?
        )));
    }
    obj.extract::<String>()
}

fn check_bytes<'a, 'py>(obj: &'a Bound<'py, PyAny>, what: &str) -> PyResult<&'a [u8]> {
    match obj.downcast::<PyBytes>() {
        Ok(b) => Ok(b.as_bytes()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "{what} must be bytes, not {}",
            type_name(obj)?
        ))),
    }
}

fn check_float(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<f64> {
    if !obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyFloat>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a number, not {}",
            type_name(obj)?
        )));
    }
    let value: f64 = obj.extract()?;
    if !value.is_finite() {
        return Err(PyValueError::new_err(format!(
            "{what} must be a finite number, got {}",
            obj.repr()?
        )));
    }
    Ok(value)
}

fn check_ttl(obj: &Bound<'_, PyAny>) -> PyResult<Option<f64>> {
    if obj.is_none() {
        return Ok(None);
    }
    let ttl = check_float(obj, "ttl")?;
    if ttl <= 0.0 {
        return Err(PyValueError::new_err(format!(
            "ttl must be > 0 seconds, got {}",
            obj.repr()?
        )));
    }
    Ok(Some(ttl))
}

fn check_now(obj: Option<&Bound<'_, PyAny>>) -> PyResult<Option<f64>> {
    match obj {
        Some(o) if !o.is_none() => Ok(Some(check_float(o, "now")?)),
        _ => Ok(None),
    }
}

fn check_tuple<'py>(
    obj: &Bound<'py, PyAny>,
    size: usize,
    shape: &str,
) -> PyResult<Bound<'py, PyTuple>> {
    match obj.downcast::<PyTuple>() {
        Ok(t) if t.len() == size => Ok(t.clone()),
        _ => Err(PyTypeError::new_err(format!(
            "each item must be a {shape} tuple, not {}",
            type_name(obj)?
        ))),
    }
}

/// A default argument as a Python object, so an explicit `None` is not taken
/// for "omitted" (the pure twin rejects `None` where the default is not `None`).
fn default_int(value: i64) -> Py<PyAny> {
    Python::with_gil(|py| PyInt::new(py, value).into_any().unbind())
}

fn default_str(value: &str) -> Py<PyAny> {
    Python::with_gil(|py| PyString::new(py, value).into_any().unbind())
}

/// The checked `(payload, priority, ttl, ...)` fields of an outbox record tuple.
type RecordFields<'py> = (Bound<'py, PyBytes>, i64, Option<f64>);

fn record_fields<'py>(t: &Bound<'py, PyTuple>) -> PyResult<RecordFields<'py>> {
    let payload = t.get_item(0)?;
    check_bytes(&payload, "payload")?;
    let priority = check_int(
        &t.get_item(1)?,
        "priority",
        store::MIN_PRIORITY,
        store::MAX_PRIORITY,
    )?;
    let ttl = check_ttl(&t.get_item(2)?)?;
    Ok((payload.downcast_into::<PyBytes>()?, priority, ttl))
}

/// A sequence of sequence numbers (`ack`, `ack_deferred`, `set_in_flight`).
fn check_seqs(seqs: &Bound<'_, PyAny>) -> PyResult<Vec<i64>> {
    items(seqs)?
        .iter()
        .map(|s| check_int(s, "seq", i64::MIN, i64::MAX))
        .collect()
}

fn items<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    obj.try_iter()?.collect()
}

/// The node's SQLite database (WAL): desired cache, twins, outbox.
#[pyclass(name = "Store", module = "edgenode._edgecore_fast")]
pub struct PyStore {
    inner: Mutex<Option<Store>>,
    path: String,
}

impl PyStore {
    fn lock(&self) -> MutexGuard<'_, Option<Store>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        if self.lock().is_none() {
            return Err(closed(py));
        }
        Ok(())
    }

    /// Run `f` on the open store with the GIL released.
    pub(crate) fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut Store) -> store::Result<T> + Send,
    ) -> PyResult<T> {
        let outcome = py.allow_threads(|| {
            let mut guard = self.lock();
            guard.as_mut().map(f)
        });
        match outcome {
            None => Err(closed(py)),
            Some(result) => result.map_err(|e| to_py(py, e)),
        }
    }
}

#[pymethods]
impl PyStore {
    #[new]
    #[pyo3(signature = (
        path,
        *,
        synchronous = default_str("normal"),
        outbox_max_bytes = default_int(store::DEFAULT_OUTBOX_MAX_BYTES),
    ))]
    fn new(
        py: Python<'_>,
        path: &Bound<'_, PyAny>,
        synchronous: Py<PyAny>,
        outbox_max_bytes: Py<PyAny>,
    ) -> PyResult<Self> {
        let path = check_str(path, "path")?;
        let synchronous = synchronous.bind(py);
        let sync = match synchronous.extract::<String>().ok().as_deref() {
            Some("normal") => Synchronous::Normal,
            Some("full") => Synchronous::Full,
            _ => {
                return Err(edgenode_error(
                    py,
                    "ConfigError",
                    format!(
                        "synchronous must be 'normal' or 'full', got {}",
                        synchronous.repr()?
                    ),
                ))
            }
        };
        let limit = outbox_max_bytes.bind(py);
        let max_bytes = if limit.is_instance_of::<PyInt>() && !limit.is_instance_of::<PyBool>() {
            limit.extract::<i64>().ok().filter(|v| *v >= 1)
        } else {
            None
        };
        let Some(max_bytes) = max_bytes else {
            return Err(edgenode_error(
                py,
                "ConfigError",
                format!(
                    "outbox_max_bytes must be a positive int, got {}",
                    limit.repr()?
                ),
            ));
        };
        let opened = py.allow_threads(|| Store::open(&path, sync, max_bytes));
        let store = opened.map_err(|e| to_py(py, e))?;
        Ok(PyStore {
            inner: Mutex::new(Some(store)),
            path,
        })
    }

    #[getter]
    fn path(&self) -> &str {
        &self.path
    }

    /// Persist the store clock and close; idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let taken = self.lock().take();
        match taken {
            None => Ok(()),
            Some(store) => py.allow_threads(|| store.close()).map_err(|e| to_py(py, e)),
        }
    }

    /// Store time in seconds: monotonic within a run, carried across restarts.
    fn clock(&self, py: Python<'_>) -> PyResult<f64> {
        self.with(py, |s| Ok(s.clock()))
    }

    fn checkpoint(&self, py: Python<'_>) -> PyResult<()> {
        self.with(py, |s| s.checkpoint())
    }

    fn applied_revision(&self, py: Python<'_>) -> PyResult<i64> {
        self.with(py, |s| Ok(s.applied_revision()))
    }

    fn next_seq(&self, py: Python<'_>) -> PyResult<i64> {
        self.with(py, |s| Ok(s.next_seq()))
    }

    fn reserve_seq(&self, py: Python<'_>) -> PyResult<i64> {
        self.with(py, |s| Ok(s.reserve_seq()))
    }

    fn drop_counts(&self, py: Python<'_>) -> PyResult<Vec<(i64, i64, i64)>> {
        self.with(py, |s| s.drop_counts())
    }

    fn apply_changes(
        &self,
        py: Python<'_>,
        changes: &Bound<'_, PyAny>,
        revision: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.check_open(py)?;
        let mut rows = Vec::new();
        for change in items(changes)? {
            let t = check_tuple(&change, 3, "(key, revision, data)")?;
            let key = check_str(&t.get_item(0)?, "key")?;
            let rev = check_int(&t.get_item(1)?, "revision", 0, i64::MAX)?;
            let data = t.get_item(2)?;
            let data = if data.is_none() {
                None
            } else {
                check_bytes(&data, "data")?;
                Some(data.downcast_into::<PyBytes>()?)
            };
            rows.push((key, rev, data));
        }
        let revision = check_int(revision, "revision", 0, i64::MAX)?;
        let borrowed: Vec<(&str, i64, Option<&[u8]>)> = rows
            .iter()
            .map(|(k, r, d)| (k.as_str(), *r, d.as_ref().map(|b| b.as_bytes())))
            .collect();
        self.with(py, |s| s.apply_changes(&borrowed, revision))
    }

    fn replace_all(
        &self,
        py: Python<'_>,
        resources: &Bound<'_, PyAny>,
        revision: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.check_open(py)?;
        let mut rows = Vec::new();
        for resource in items(resources)? {
            let t = check_tuple(&resource, 3, "(key, revision, data)")?;
            let key = check_str(&t.get_item(0)?, "key")?;
            let rev = check_int(&t.get_item(1)?, "revision", 0, i64::MAX)?;
            let data = t.get_item(2)?;
            check_bytes(&data, "data")?;
            rows.push((key, rev, data.downcast_into::<PyBytes>()?));
        }
        let revision = check_int(revision, "revision", 0, i64::MAX)?;
        let borrowed: Vec<(&str, i64, &[u8])> = rows
            .iter()
            .map(|(k, r, d)| (k.as_str(), *r, d.as_bytes()))
            .collect();
        self.with(py, |s| s.replace_all(&borrowed, revision))
    }

    fn get_resource<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
    ) -> PyResult<Option<(i64, Option<Bound<'py, PyBytes>>)>> {
        self.check_open(py)?;
        let key = check_str(key, "key")?;
        let found = self.with(py, |s| s.get_resource(&key))?;
        Ok(found.map(|(rev, data)| (rev, data.map(|d| PyBytes::new(py, &d)))))
    }

    #[pyo3(signature = (*, include_tombstones = None))]
    fn list_resources<'py>(
        &self,
        py: Python<'py>,
        include_tombstones: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        self.check_open(py)?;
        let include = match include_tombstones {
            Some(obj) => obj.is_truthy()?,
            None => false,
        };
        let rows = self.with(py, |s| s.list_resources(include))?;
        let out = PyList::empty(py);
        for (key, rev, data) in rows {
            out.append((key, rev, data.map(|d| PyBytes::new(py, &d))))?;
        }
        Ok(out)
    }

    fn put_twin(
        &self,
        py: Python<'_>,
        device: &Bound<'_, PyAny>,
        doc: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        self.check_open(py)?;
        let device = check_str(device, "device")?;
        let doc = check_bytes(doc, "doc")?;
        self.with(py, |s| s.put_twin(&device, doc))
    }

    fn get_twin<'py>(
        &self,
        py: Python<'py>,
        device: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        self.check_open(py)?;
        let device = check_str(device, "device")?;
        let doc = self.with(py, |s| s.get_twin(&device))?;
        Ok(doc.map(|d| PyBytes::new(py, &d)))
    }

    fn list_twins(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.with(py, |s| s.list_twins())
    }

    fn delete_twin(&self, py: Python<'_>, device: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.check_open(py)?;
        let device = check_str(device, "device")?;
        self.with(py, |s| s.delete_twin(&device))
    }

    #[pyo3(signature = (payload, priority = default_int(5), ttl = None, *, coalesce_key = None, now = None))]
    fn append(
        &self,
        py: Python<'_>,
        payload: &Bound<'_, PyAny>,
        priority: Py<PyAny>,
        ttl: Option<&Bound<'_, PyAny>>,
        coalesce_key: Option<&Bound<'_, PyAny>>,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<i64> {
        self.check_open(py)?;
        let payload = check_bytes(payload, "payload")?;
        let priority = check_int(
            priority.bind(py),
            "priority",
            store::MIN_PRIORITY,
            store::MAX_PRIORITY,
        )?;
        let ttl = match ttl {
            Some(t) => check_ttl(t)?,
            None => None,
        };
        let key = match coalesce_key {
            Some(k) if !k.is_none() => Some(check_str(k, "coalesce_key")?),
            _ => None,
        };
        let now = check_now(now)?;
        self.with(py, |s| {
            s.append(payload, priority, ttl, key.as_deref(), now)
        })
    }

    #[pyo3(signature = (records, *, now = None))]
    fn append_many(
        &self,
        py: Python<'_>,
        records: &Bound<'_, PyAny>,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<i64>> {
        self.check_open(py)?;
        let mut held = Vec::new();
        let mut meta = Vec::new();
        for record in items(records)? {
            let t = check_tuple(&record, 3, "(payload, priority, ttl)")?;
            let (payload, priority, ttl) = record_fields(&t)?;
            held.push(payload);
            meta.push((priority, ttl));
        }
        let now = check_now(now)?;
        let batch: Vec<NewRecord<'_>> = held
            .iter()
            .zip(meta)
            .map(|(payload, (priority, ttl))| NewRecord {
                payload: payload.as_bytes(),
                priority,
                ttl,
            })
            .collect();
        self.with(py, |s| s.append_many(&batch, now))
    }

    #[pyo3(signature = (twins, records, *, now = None))]
    fn commit_batch(
        &self,
        py: Python<'_>,
        twins: &Bound<'_, PyAny>,
        records: &Bound<'_, PyAny>,
        now: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Option<i64>>> {
        self.check_open(py)?;
        let mut docs = Vec::new();
        for twin in items(twins)? {
            let t = check_tuple(&twin, 2, "(device, doc)")?;
            let device = check_str(&t.get_item(0)?, "device")?;
            let doc = t.get_item(1)?;
            check_bytes(&doc, "doc")?;
            docs.push((device, doc.downcast_into::<PyBytes>()?));
        }
        let mut held = Vec::new();
        let mut meta = Vec::new();
        for record in items(records)? {
            let t = check_tuple(&record, 4, "(payload, priority, ttl, coalesce_key)")?;
            let (payload, priority, ttl) = record_fields(&t)?;
            let key = t.get_item(3)?;
            let key = if key.is_none() {
                None
            } else {
                Some(check_str(&key, "coalesce_key")?)
            };
            held.push(payload);
            meta.push((priority, ttl, key));
        }
        let now = check_now(now)?;
        let twins: Vec<(&str, &[u8])> = docs
            .iter()
            .map(|(device, doc)| (device.as_str(), doc.as_bytes()))
            .collect();
        let batch: Vec<BatchRecord<'_>> = held
            .iter()
            .zip(&meta)
            .map(|(payload, (priority, ttl, key))| BatchRecord {
                record: NewRecord {
                    payload: payload.as_bytes(),
                    priority: *priority,
                    ttl: *ttl,
                },
                coalesce_key: key.as_deref(),
            })
            .collect();
        self.with(py, |s| s.commit_batch(&twins, &batch, now))
    }

    #[pyo3(signature = (limit = default_int(100), *, after = None, now = None))]
    fn peek<'py>(
        &self,
        py: Python<'py>,
        limit: Py<PyAny>,
        after: Option<&Bound<'py, PyAny>>,
        now: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        self.check_open(py)?;
        let limit = check_int(limit.bind(py), "limit", 0, i64::MAX)?;
        let after = match after {
            Some(a) if !a.is_none() => {
                let t = check_tuple(a, 2, "(priority, seq)")?;
                Some((
                    check_int(&t.get_item(0)?, "priority", i64::MIN, i64::MAX)?,
                    check_int(&t.get_item(1)?, "seq", i64::MIN, i64::MAX)?,
                ))
            }
            _ => None,
        };
        let now = check_now(now)?;
        let rows = self.with(py, |s| s.peek(limit, after, now))?;
        let out = PyList::empty(py);
        for (seq, priority, payload) in rows {
            out.append((seq, priority, PyBytes::new(py, &payload)))?;
        }
        Ok(out)
    }

    fn ack(&self, py: Python<'_>, seqs: &Bound<'_, PyAny>) -> PyResult<i64> {
        self.check_open(py)?;
        let wanted = check_seqs(seqs)?;
        self.with(py, |s| s.ack(&wanted))
    }

    fn ack_deferred(&self, py: Python<'_>, seqs: &Bound<'_, PyAny>) -> PyResult<i64> {
        self.check_open(py)?;
        let wanted = check_seqs(seqs)?;
        self.with(py, |s| s.ack_deferred(&wanted))
    }

    fn flush_acks(&self, py: Python<'_>) -> PyResult<i64> {
        self.with(py, |s| s.flush_acks())
    }

    fn set_in_flight(&self, py: Python<'_>, seqs: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_open(py)?;
        let wanted = check_seqs(seqs)?;
        self.with(py, |s| {
            s.set_in_flight(&wanted);
            Ok(())
        })
    }

    fn ack_ranges(&self, py: Python<'_>, ranges: &Bound<'_, PyAny>) -> PyResult<i64> {
        self.check_open(py)?;
        let mut wanted = Vec::new();
        for pair in items(ranges)? {
            let t = check_tuple(&pair, 2, "(lo, hi)")?;
            wanted.push((
                check_int(&t.get_item(0)?, "seq", i64::MIN, i64::MAX)?,
                check_int(&t.get_item(1)?, "seq", i64::MIN, i64::MAX)?,
            ));
        }
        self.with(py, |s| s.ack_ranges(&wanted))
    }

    #[pyo3(signature = (*, now = None))]
    fn expire(&self, py: Python<'_>, now: Option<&Bound<'_, PyAny>>) -> PyResult<i64> {
        self.check_open(py)?;
        let now = check_now(now)?;
        self.with(py, |s| s.expire(now))
    }

    #[pyo3(signature = (*, now = None))]
    fn outbox_stats<'py>(
        &self,
        py: Python<'py>,
        now: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        self.check_open(py)?;
        let now = check_now(now)?;
        let st = self.with(py, |s| s.outbox_stats(now))?;
        let d = PyDict::new(py);
        d.set_item("messages", st.messages)?;
        d.set_item("bytes", st.bytes)?;
        d.set_item("oldest_age", st.oldest_age)?;
        d.set_item("next_seq", st.next_seq)?;
        d.set_item("max_bytes", st.max_bytes)?;
        d.set_item("dropped_expired", st.dropped_expired)?;
        d.set_item("dropped_quota", st.dropped_quota)?;
        d.set_item("rejected", st.rejected)?;
        d.set_item("coalesced", st.coalesced)?;
        Ok(d)
    }

    /// Copy every readable row of the store at `path` into a new store at `dest`.
    #[staticmethod]
    fn salvage<'py>(
        py: Python<'py>,
        path: &Bound<'py, PyAny>,
        dest: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let path = check_str(path, "path")?;
        let dest = check_str(dest, "dest")?;
        let counts = py
            .allow_threads(|| Store::salvage(&path, &dest))
            .map_err(|e| to_py(py, e))?;
        let d = PyDict::new(py);
        d.set_item("resources", counts.resources)?;
        d.set_item("twins", counts.twins)?;
        d.set_item("outbox", counts.outbox)?;
        d.set_item("errors", counts.errors)?;
        Ok(d)
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("SCHEMA_VERSION", store::SCHEMA_VERSION)?;
    m.add("DEFAULT_OUTBOX_MAX_BYTES", store::DEFAULT_OUTBOX_MAX_BYTES)?;
    m.add_class::<PyStore>()?;
    Ok(())
}
