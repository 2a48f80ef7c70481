//! Python binding of [`crate::twin`]: limits, merge patch, delta and stamp over Python
//! objects.
//!
//! The documents arrive as Python dicts and leave as Python dicts, so the walks below
//! read `PyDict`/`PyList` directly instead of converting to serde values (a conversion
//! would cost more than the work). Types are recognised by *exact* type checks, scalars
//! are compared without Python calls where the type allows it, and the limit check is a
//! single pass that also measures the compact JSON size. `edgenode._pure.twin` is the
//! specification: every result, exception class and message must match it.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString};

use crate::py_errors::edgenode_error;
use crate::twin::{
    self, float_repr_len, int_len, json_string_len, non_finite_repr, Fault, Problem, Segment,
};

/// Why a walk stopped: a problem with the document, or Python itself failed.
enum Fail {
    Twin(Fault),
    Py(PyErr),
}

impl From<PyErr> for Fail {
    fn from(err: PyErr) -> Self {
        Fail::Py(err)
    }
}

impl From<Problem> for Fail {
    fn from(problem: Problem) -> Self {
        Fail::Twin(Fault::new(problem))
    }
}

type Walk<T> = Result<T, Fail>;

impl Fail {
    /// Add the segment leading to the value where the walk stopped.
    fn at(self, segment: impl FnOnce() -> Segment) -> Self {
        match self {
            Fail::Twin(mut fault) => {
                fault.path.push(segment());
                Fail::Twin(fault)
            }
            other => other,
        }
    }

    fn into_pyerr(self, py: Python<'_>) -> PyErr {
        match self {
            Fail::Py(err) => err,
            Fail::Twin(fault) => {
                let class = if fault.is_limit() {
                    "TwinLimitError"
                } else {
                    "TwinError"
                };
                edgenode_error(py, class, fault.message())
            }
        }
    }
}

/// The JSON type of a Python object, by exact type (subclasses are not JSON).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Int,
    Float,
    Dict,
    List,
    Bool,
    Null,
    Other,
}

fn kind(value: &Bound<'_, PyAny>) -> Kind {
    if value.is_exact_instance_of::<PyString>() {
        Kind::Str
    } else if value.is_exact_instance_of::<PyInt>() {
        Kind::Int
    } else if value.is_exact_instance_of::<PyFloat>() {
        Kind::Float
    } else if value.is_exact_instance_of::<PyDict>() {
        Kind::Dict
    } else if value.is_exact_instance_of::<PyList>() {
        Kind::List
    } else if value.is_exact_instance_of::<PyBool>() {
        Kind::Bool
    } else if value.is_none() {
        Kind::Null
    } else {
        Kind::Other
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(value.get_type().name()?.to_string_lossy().into_owned())
}

/// A key for a path in a message (lone surrogates become U+FFFD, as in the pure twin).
fn key_segment(key: &Bound<'_, PyAny>) -> Segment {
    match key.downcast::<PyString>() {
        Ok(key) => Segment::Key(key.to_string_lossy().into_owned()),
        Err(_) => Segment::Key(String::new()),
    }
}

// ---------------------------------------------------------------- checking ----

/// One pre-order pass: structure (types, keys, depth) and, when `measure` is set, the
/// compact JSON size and whether some string or integer cannot be encoded at all.
struct Checker {
    measure: bool,
    check_keys: bool,
    size: usize,
    encoding_fault: bool,
}

impl Checker {
    fn new(measure: bool, check_keys: bool) -> Self {
        Checker {
            measure,
            check_keys,
            size: 0,
            encoding_fault: false,
        }
    }

    fn dict(&mut self, dict: &Bound<'_, PyDict>, depth: usize) -> Walk<()> {
        if depth > twin::MAX_DEPTH {
            return Err(Problem::TooDeep.into());
        }
        if self.measure {
            // braces and the commas between members
            self.size += 2 + dict.len().saturating_sub(1);
        }
        for (key, value) in dict.iter() {
            let Ok(text) = key.downcast_exact::<PyString>() else {
                return Err(Problem::KeyNotString {
                    type_name: type_name(&key)?,
                }
                .into());
            };
            if self.measure || self.check_keys {
                match text.to_str() {
                    Ok(text) => {
                        if self.check_keys && text.len() > twin::MAX_KEY_BYTES {
                            return Err(Problem::KeyTooLong {
                                key: text.to_owned(),
                            }
                            .into());
                        }
                        if self.measure {
                            self.size += json_string_len(text) + 1; // and the colon
                        }
                    }
                    // A lone surrogate: reported after the structural walk.
                    Err(_) => self.encoding_fault = true,
                }
            }
            self.value(&value, depth)
                .map_err(|fail| fail.at(|| key_segment(&key)))?;
        }
        Ok(())
    }

    fn list(&mut self, list: &Bound<'_, PyList>, depth: usize) -> Walk<()> {
        if depth > twin::MAX_DEPTH {
            return Err(Problem::TooDeep.into());
        }
        if self.measure {
            self.size += 2 + list.len().saturating_sub(1);
        }
        for (index, value) in list.iter().enumerate() {
            self.value(&value, depth)
                .map_err(|fail| fail.at(|| Segment::Index(index)))?;
        }
        Ok(())
    }

    /// A member of a container at `depth`.
    fn value(&mut self, value: &Bound<'_, PyAny>, depth: usize) -> Walk<()> {
        match kind(value) {
            Kind::Str => {
                if self.measure {
                    match value.downcast_exact::<PyString>().map(|text| text.to_str()) {
                        Ok(Ok(text)) => self.size += json_string_len(text),
                        _ => self.encoding_fault = true,
                    }
                }
            }
            Kind::Int => {
                if self.measure {
                    match value.extract::<i64>() {
                        Ok(number) => self.size += int_len(number),
                        // Beyond i64: Python's own decimal conversion, which refuses
                        // integers past sys.get_int_max_str_digits() as json does.
                        Err(_) => match value.str() {
                            Ok(text) => self.size += text.to_str()?.len(),
                            Err(_) => self.encoding_fault = true,
                        },
                    }
                }
            }
            Kind::Float => {
                let number = value
                    .downcast_exact::<PyFloat>()
                    .map_err(PyErr::from)?
                    .value();
                if !number.is_finite() {
                    return Err(Problem::NotFinite {
                        repr: non_finite_repr(number),
                    }
                    .into());
                }
                if self.measure {
                    self.size += float_repr_len(number);
                }
            }
            Kind::Dict => {
                self.dict(
                    value.downcast_exact::<PyDict>().map_err(PyErr::from)?,
                    depth + 1,
                )?;
            }
            Kind::List => {
                self.list(
                    value.downcast_exact::<PyList>().map_err(PyErr::from)?,
                    depth + 1,
                )?;
            }
            Kind::Bool => {
                if self.measure {
                    self.size += if value.is_truthy()? { 4 } else { 5 };
                }
            }
            Kind::Null => {
                if self.measure {
                    self.size += 4;
                }
            }
            Kind::Other => {
                return Err(Problem::NotJson {
                    type_name: type_name(value)?,
                }
                .into())
            }
        }
        Ok(())
    }
}

/// The first string or integer (pre-order) that cannot be encoded: a slow second pass
/// that only runs when [`Checker`] saw one.
fn find_encoding_fault(value: &Bound<'_, PyAny>) -> Walk<()> {
    match kind(value) {
        Kind::Str => {
            let text = value.downcast_exact::<PyString>().map_err(PyErr::from)?;
            if text.to_str().is_err() {
                return Err(Problem::StringNotUtf8.into());
            }
        }
        Kind::Int if value.extract::<i64>().is_err() && value.str().is_err() => {
            return Err(Problem::IntTooLarge.into());
        }
        Kind::Dict => {
            let dict = value.downcast_exact::<PyDict>().map_err(PyErr::from)?;
            for (key, item) in dict.iter() {
                let text = key.downcast_exact::<PyString>().map_err(PyErr::from)?;
                if text.to_str().is_err() {
                    return Err(Fail::from(Problem::KeyNotUtf8).at(|| key_segment(&key)));
                }
                find_encoding_fault(&item).map_err(|fail| fail.at(|| key_segment(&key)))?;
            }
        }
        Kind::List => {
            let list = value.downcast_exact::<PyList>().map_err(PyErr::from)?;
            for (index, item) in list.iter().enumerate() {
                find_encoding_fault(&item).map_err(|fail| fail.at(|| Segment::Index(index)))?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn top_level<'a, 'py>(
    value: &'a Bound<'py, PyAny>,
    what: &'static str,
) -> Walk<&'a Bound<'py, PyDict>> {
    match value.downcast_exact::<PyDict>() {
        Ok(dict) => Ok(dict),
        Err(_) => Err(Problem::NotObject {
            what,
            type_name: type_name(value)?,
        }
        .into()),
    }
}

/// Every check of a document (see `edgenode._pure.twin`), in the specified order.
fn check<'a, 'py>(
    value: &'a Bound<'py, PyAny>,
    what: &'static str,
) -> Walk<&'a Bound<'py, PyDict>> {
    let dict = top_level(value, what)?;
    let mut checker = Checker::new(true, true);
    checker.dict(dict, 1)?;
    if checker.encoding_fault {
        find_encoding_fault(dict.as_any())?;
    }
    if checker.size > twin::MAX_DOCUMENT_BYTES {
        return Err(Problem::TooLarge { size: checker.size }.into());
    }
    Ok(dict)
}

fn check_now(now: &Bound<'_, PyAny>) -> Walk<f64> {
    let value = match kind(now) {
        Kind::Float => now
            .downcast_exact::<PyFloat>()
            .map_err(PyErr::from)?
            .value(),
        // float(int), which refuses ints beyond the float range
        Kind::Int => now
            .extract::<f64>()
            .map_err(|_| Fail::from(Problem::NowOutOfRange))?,
        _ => {
            return Err(Problem::NowNotNumber {
                type_name: type_name(now)?,
            }
            .into())
        }
    };
    if !value.is_finite() {
        return Err(Problem::NowNotFinite {
            repr: non_finite_repr(value),
        }
        .into());
    }
    Ok(value)
}

// ---------------------------------------------------------------- copying ----

/// A deep copy of a checked JSON value; scalars are immutable and shared.
fn copy<'py>(value: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(dict) = value.downcast_exact::<PyDict>() {
        let out = PyDict::new(value.py());
        for (key, item) in dict.iter() {
            out.set_item(key, copy(&item)?)?;
        }
        Ok(out.into_any())
    } else if let Ok(list) = value.downcast_exact::<PyList>() {
        let items = list
            .iter()
            .map(|item| copy(&item))
            .collect::<PyResult<Vec<_>>>()?;
        Ok(PyList::new(value.py(), items)?.into_any())
    } else {
        Ok(value.clone())
    }
}

// ------------------------------------------------------------ merge patch ----

/// `MergePatch({}, patch)`: a copy of `patch` without its null members, recursively.
fn without_nulls<'py>(patch: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(patch.py());
    for (key, value) in patch.iter() {
        if value.is_none() {
            continue;
        }
        if let Ok(nested) = value.downcast_exact::<PyDict>() {
            out.set_item(key, without_nulls(nested)?)?;
        } else {
            out.set_item(key, copy(&value)?)?;
        }
    }
    Ok(out)
}

fn merge<'py>(
    doc: &Bound<'py, PyDict>,
    patch: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(doc.py());
    for (key, value) in doc.iter() {
        match patch.get_item(&key)? {
            None => out.set_item(key, copy(&value)?)?,
            Some(change) if change.is_none() => {}
            Some(change) => {
                if let Ok(change) = change.downcast_exact::<PyDict>() {
                    let merged = match value.downcast_exact::<PyDict>() {
                        Ok(value) => merge(value, change)?,
                        Err(_) => without_nulls(change)?,
                    };
                    out.set_item(key, merged)?;
                } else {
                    out.set_item(key, copy(&change)?)?;
                }
            }
        }
    }
    for (key, change) in patch.iter() {
        if change.is_none() || doc.contains(&key)? {
            continue;
        }
        if let Ok(change) = change.downcast_exact::<PyDict>() {
            out.set_item(key, without_nulls(change)?)?;
        } else {
            out.set_item(key, copy(&change)?)?;
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------ delta ----

/// JSON equality: same JSON type (`true` is not `1`), except ints and floats by value.
fn same(a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<bool> {
    if a.is(b) {
        return Ok(true);
    }
    Ok(match (kind(a), kind(b)) {
        (Kind::Str, Kind::Str) => a.eq(b)?,
        (Kind::Float, Kind::Float) => {
            a.downcast_exact::<PyFloat>()?.value() == b.downcast_exact::<PyFloat>()?.value()
        }
        (Kind::Int, Kind::Int) => match (a.extract::<i64>(), b.extract::<i64>()) {
            (Ok(x), Ok(y)) => x == y,
            _ => a.eq(b)?,
        },
        // Python compares int and float exactly (2**53 + 1 != 2.0**53).
        (Kind::Int, Kind::Float) | (Kind::Float, Kind::Int) => a.eq(b)?,
        // True and False are singletons: `is` above already matched equal ones.
        (Kind::Bool, Kind::Bool) => false,
        (Kind::Null, Kind::Null) => true,
        (Kind::List, Kind::List) => {
            let a = a.downcast_exact::<PyList>()?;
            let b = b.downcast_exact::<PyList>()?;
            if a.len() != b.len() {
                return Ok(false);
            }
            for (x, y) in a.iter().zip(b.iter()) {
                if !same(&x, &y)? {
                    return Ok(false);
                }
            }
            true
        }
        (Kind::Dict, Kind::Dict) => {
            let a = a.downcast_exact::<PyDict>()?;
            let b = b.downcast_exact::<PyDict>()?;
            if a.len() != b.len() {
                return Ok(false);
            }
            for (key, x) in a.iter() {
                match b.get_item(&key)? {
                    Some(y) if same(&x, &y)? => {}
                    _ => return Ok(false),
                }
            }
            true
        }
        _ => false,
    })
}

fn delta_of<'py>(
    desired: &Bound<'py, PyDict>,
    reported: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(desired.py());
    for (key, want) in desired.iter() {
        let Some(have) = reported.get_item(&key)? else {
            out.set_item(key, copy(&want)?)?;
            continue;
        };
        if let Ok(want_dict) = want.downcast_exact::<PyDict>() {
            if let Ok(have_dict) = have.downcast_exact::<PyDict>() {
                let nested = delta_of(want_dict, have_dict)?;
                if !nested.is_empty() {
                    out.set_item(key, nested)?;
                }
            } else {
                out.set_item(key, copy(&want)?)?;
            }
        } else if !same(&want, &have)? {
            out.set_item(key, copy(&want)?)?;
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------ stamp ----

fn stamp_of<'py>(
    meta: &Bound<'py, PyDict>,
    patch: &Bound<'py, PyDict>,
    now: &Bound<'py, PyFloat>,
) -> PyResult<Bound<'py, PyDict>> {
    let py = meta.py();
    let out = PyDict::new(py);
    for (key, value) in meta.iter() {
        match patch.get_item(&key)? {
            None => out.set_item(key, copy(&value)?)?,
            Some(change) if change.is_none() => {}
            Some(change) => {
                if let Ok(change) = change.downcast_exact::<PyDict>() {
                    let nested = match value.downcast_exact::<PyDict>() {
                        Ok(value) => stamp_of(value, change, now)?,
                        Err(_) => stamp_of(&PyDict::new(py), change, now)?,
                    };
                    out.set_item(key, nested)?;
                } else {
                    out.set_item(key, now)?;
                }
            }
        }
    }
    for (key, change) in patch.iter() {
        if change.is_none() || meta.contains(&key)? {
            continue;
        }
        if let Ok(change) = change.downcast_exact::<PyDict>() {
            out.set_item(key, stamp_of(&PyDict::new(py), change, now)?)?;
        } else {
            out.set_item(key, now)?;
        }
    }
    Ok(out)
}

// -------------------------------------------------------------- functions ----

/// TwinLimitError naming the limit, TwinError for non-JSON values.
#[pyfunction]
fn check_limits(doc: &Bound<'_, PyAny>) -> PyResult<()> {
    check(doc, "twin document").map_err(|fail| fail.into_pyerr(doc.py()))?;
    Ok(())
}

/// RFC 7386 merge patch; returns a new dict, never mutates its arguments.
#[pyfunction]
fn merge_patch<'py>(
    doc: &Bound<'py, PyAny>,
    patch: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let py = doc.py();
    let run = || -> Walk<Bound<'py, PyDict>> {
        let doc = check(doc, "twin document")?;
        let patch = check(patch, "merge patch")?;
        let merged = merge(doc, patch)?;
        let mut measure = Checker::new(true, false);
        measure.dict(&merged, 1)?;
        if measure.size > twin::MAX_DOCUMENT_BYTES {
            return Err(Problem::ResultTooLarge { size: measure.size }.into());
        }
        Ok(merged)
    };
    run().map_err(|fail| fail.into_pyerr(py))
}

/// What `reported` still lacks of `desired` (see `edgenode._pure.twin.delta`).
#[pyfunction]
fn delta<'py>(
    desired: &Bound<'py, PyAny>,
    reported: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let py = desired.py();
    let run = || -> Walk<Bound<'py, PyDict>> {
        let desired = check(desired, "desired document")?;
        let reported = check(reported, "reported document")?;
        Ok(delta_of(desired, reported)?)
    };
    run().map_err(|fail| fail.into_pyerr(py))
}

/// Per-key timestamp metadata after `patch` (see `edgenode._pure.twin.stamp`).
#[pyfunction]
fn stamp<'py>(
    meta: &Bound<'py, PyAny>,
    patch: &Bound<'py, PyAny>,
    now: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let py = meta.py();
    let run = || -> Walk<Bound<'py, PyDict>> {
        let meta = top_level(meta, "meta")?;
        Checker::new(false, false).dict(meta, 1)?;
        let patch = check(patch, "merge patch")?;
        let now = PyFloat::new(py, check_now(now)?);
        Ok(stamp_of(meta, patch, &now)?)
    };
    run().map_err(|fail| fail.into_pyerr(py))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MAX_DEPTH", twin::MAX_DEPTH)?;
    m.add("MAX_DOCUMENT_BYTES", twin::MAX_DOCUMENT_BYTES)?;
    m.add("MAX_KEY_BYTES", twin::MAX_KEY_BYTES)?;
    m.add_function(wrap_pyfunction!(check_limits, m)?)?;
    m.add_function(wrap_pyfunction!(merge_patch, m)?)?;
    m.add_function(wrap_pyfunction!(delta, m)?)?;
    m.add_function(wrap_pyfunction!(stamp, m)?)?;
    Ok(())
}
