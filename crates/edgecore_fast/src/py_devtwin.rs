//! Python binding of [`crate::devtwin`]: `DeviceTwin` and `ReportOutcome`.
//!
//! Bytes in, bytes out: no Python object is built for the documents. Payloads the Rust
//! parser refuses (rare: not JSON, too deep, lone surrogates, not UTF-8, too large) are
//! worded by the specification itself (`edgenode._pure.devtwin.payload_rejection`), so
//! both backends quote `json`'s own error messages and find the clientToken the same way.

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString};

use crate::devtwin::{self, DesiredError, DeviceTwin as Twin, Outcome, Refusal, BAD_REQUEST};
use crate::py_errors::edgenode_error;

const SPEC: &str = "edgenode._pure.devtwin";

/// What a mutator decided (see `edgenode._pure.devtwin.ReportOutcome`).
#[pyclass(module = "edgenode._edgecore_fast", frozen, get_all)]
pub struct ReportOutcome {
    code: u16,
    message: String,
    token: Option<String>,
    reply: Py<PyBytes>,
    changed: bool,
    ack_changed: bool,
    delta: Option<Py<PyBytes>>,
    twin_uplink: Option<Py<PyBytes>>,
    ack_uplink: Option<Py<PyBytes>>,
    document: Option<Py<PyBytes>>,
}

#[pymethods]
impl ReportOutcome {
    fn __repr__(&self) -> String {
        format!(
            "ReportOutcome(code={}, message={:?}, changed={}, ack_changed={})",
            self.code, self.message, self.changed, self.ack_changed
        )
    }
}

fn bytes(py: Python<'_>, data: Option<Vec<u8>>) -> Option<Py<PyBytes>> {
    data.map(|data| PyBytes::new(py, &data).unbind())
}

fn accepted(py: Python<'_>, outcome: Outcome) -> ReportOutcome {
    ReportOutcome {
        code: 0,
        message: String::new(),
        token: outcome.token,
        reply: PyBytes::new(py, &outcome.reply).unbind(),
        changed: outcome.changed,
        ack_changed: outcome.ack_changed,
        delta: bytes(py, outcome.delta),
        twin_uplink: bytes(py, outcome.twin_uplink),
        ack_uplink: bytes(py, outcome.ack_uplink),
        document: bytes(py, outcome.document),
    }
}

fn rejected(py: Python<'_>, code: u16, message: String, token: Option<String>) -> ReportOutcome {
    ReportOutcome {
        code,
        message,
        token,
        reply: PyBytes::new(py, b"").unbind(),
        changed: false,
        ack_changed: false,
        delta: None,
        twin_uplink: None,
        ack_uplink: None,
        document: None,
    }
}

/// `now` as the specification's `_check_now` takes it: a finite int or float, not bool.
pub(crate) fn check_now(now: &Bound<'_, PyAny>) -> PyResult<f64> {
    let is_number = now.is_exact_instance_of::<PyFloat>()
        || (now.is_exact_instance_of::<PyInt>() && !now.is_instance_of::<PyBool>());
    if !is_number {
        let name = now.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "now must be a number, not {name}"
        )));
    }
    let value: f64 = now.extract()?;
    if !value.is_finite() {
        let shown = PyFloat::new(now.py(), value).repr()?;
        return Err(PyValueError::new_err(format!(
            "now must be a finite number, not {shown}"
        )));
    }
    Ok(value)
}

/// A desired version: an exact int in [1, 2**63 - 1] (TypeError / ValueError otherwise).
fn check_version(value: &Bound<'_, PyAny>) -> PyResult<i64> {
    if !value.is_exact_instance_of::<PyInt>() {
        let name = value.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "version must be an int, not {name}"
        )));
    }
    match value.extract::<i64>() {
        Ok(version) if version >= 1 => Ok(version),
        _ => Err(PyValueError::new_err(format!(
            "version must be in [1, 2**63 - 1], not {}",
            value.repr()?
        ))),
    }
}

#[pyclass(module = "edgenode._edgecore_fast", name = "DeviceTwin")]
pub struct PyDeviceTwin {
    pub(crate) inner: Twin,
}

#[pymethods]
impl PyDeviceTwin {
    #[new]
    #[pyo3(signature = (device, stored = None))]
    fn new(device: &Bound<'_, PyAny>, stored: Option<&[u8]>) -> PyResult<Self> {
        let Ok(device) = device.downcast_exact::<PyString>() else {
            let name = device.get_type().name()?;
            return Err(PyTypeError::new_err(format!(
                "device must be a str, not {name}"
            )));
        };
        let device = device.to_str()?;
        Twin::new(device, stored)
            .map(|inner| PyDeviceTwin { inner })
            .map_err(|bad| PyValueError::new_err(bad.0))
    }

    #[getter]
    fn device(&self) -> &str {
        self.inner.device()
    }

    #[getter]
    fn desired_version(&self) -> i64 {
        self.inner.desired_version()
    }

    #[getter]
    fn reported_version(&self) -> i64 {
        self.inner.reported_version()
    }

    fn document<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.document())
    }

    fn commit(&mut self) {
        self.inner.commit();
    }

    fn delta_message<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner
            .delta_message()
            .map(|message| PyBytes::new(py, &message))
    }

    #[pyo3(signature = (now, token = None))]
    fn view<'py>(
        &self,
        py: Python<'py>,
        now: &Bound<'py, PyAny>,
        token: Option<&str>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let now = check_now(now)?;
        Ok(PyBytes::new(py, &self.inner.view(now, token)))
    }

    fn set_state<'py>(
        &mut self,
        py: Python<'py>,
        value: &str,
        now: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let now = check_now(now)?;
        Ok(self
            .inner
            .set_state(value, now)
            .map(|document| PyBytes::new(py, &document)))
    }

    #[pyo3(signature = (desired, now, merge = false, version = None))]
    fn set_desired(
        &mut self,
        py: Python<'_>,
        desired: &[u8],
        now: &Bound<'_, PyAny>,
        merge: bool,
        version: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<ReportOutcome> {
        let now = check_now(now)?;
        let version = match version {
            None => None,
            Some(value) if value.is_none() => None,
            Some(value) => Some(check_version(value)?),
        };
        match self.inner.set_desired(desired, now, merge, version) {
            Ok(outcome) => Ok(accepted(py, outcome)),
            Err(DesiredError::Fault(fault)) => {
                let class = if fault.is_limit() {
                    "TwinLimitError"
                } else {
                    "TwinError"
                };
                Err(edgenode_error(py, class, fault.message()))
            }
            Err(DesiredError::Unreadable) => {
                let read = py
                    .import(SPEC)?
                    .getattr("read_payload")?
                    .call1((PyBytes::new(py, desired),))?;
                let message: String = read.get_item(2)?.extract()?;
                Err(edgenode_error(
                    py,
                    "TwinError",
                    format!("desired {message}"),
                ))
            }
        }
    }

    fn apply_report(
        &mut self,
        py: Python<'_>,
        payload: &Bound<'_, PyBytes>,
        now: &Bound<'_, PyAny>,
    ) -> PyResult<ReportOutcome> {
        let now = check_now(now)?;
        match self.inner.apply_report(payload.as_bytes(), now) {
            Ok(outcome) => Ok(accepted(py, outcome)),
            Err(Refusal::Coded {
                code,
                message,
                token,
            }) => Ok(rejected(py, code, message, token)),
            Err(Refusal::UnknownField { key, ack, token }) => {
                let shown = PyString::new(py, &key).repr()?;
                let what = if ack {
                    "unknown ack field"
                } else {
                    "unknown field"
                };
                Ok(rejected(py, BAD_REQUEST, format!("{what} {shown}"), token))
            }
            Err(Refusal::Unreadable(_)) => {
                let (code, message, token): (u16, String, Option<String>) = py
                    .import(SPEC)?
                    .getattr("payload_rejection")?
                    .call1((payload,))?
                    .extract()?;
                if code == 0 {
                    return Err(PyRuntimeError::new_err(
                        "the Rust and Python JSON parsers disagree on this payload",
                    ));
                }
                Ok(rejected(py, code, message, token))
            }
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("PARSE_MAX_DEPTH", devtwin::PARSE_MAX_DEPTH)?;
    m.add("MAX_PAYLOAD_BYTES", devtwin::MAX_PAYLOAD_BYTES)?;
    m.add_class::<PyDeviceTwin>()?;
    m.add_class::<ReportOutcome>()?;
    Ok(())
}
