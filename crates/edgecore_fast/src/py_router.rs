//! Python binding of [`crate::router`]: converts arguments and errors, nothing else.
//!
//! Every argument is taken as `PyAny` and checked here, so that type errors, lone
//! surrogates and out-of-range targets raise exactly the pure twin's exceptions and
//! messages (`edgenode._pure.router`), not PyO3's generic extraction errors.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyInt, PyList, PyString, PyTuple};

use crate::py_errors::edgenode_error;
use crate::router::{self, TopicError, TopicKind, TARGET_LIMIT};

fn topic_error(py: Python<'_>, err: TopicError) -> PyErr {
    edgenode_error(py, "TopicError", err.message())
}

/// `type(obj).__name__`, as the twin's messages show it.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map_or_else(|_| "object".to_owned(), |name| name.to_string())
}

/// Borrow the UTF-8 form of a `str` argument (no copy); a non-str raises TypeError and a
/// str holding a lone surrogate raises TopicError, both with the twin's messages.
fn borrow_str<'a>(obj: &'a Bound<'_, PyAny>, what: &str, kind: TopicKind) -> PyResult<&'a str> {
    let Ok(text) = obj.downcast::<PyString>() else {
        return Err(PyTypeError::new_err(format!(
            "{what} must be a str, not {}",
            type_name(obj)
        )));
    };
    match text.to_str() {
        Ok(text) => Ok(text),
        // Only a lone surrogate makes a Python str unencodable as UTF-8.
        Err(_) => Err(unencodable(text, kind)),
    }
}

/// The twin's TopicError for a str with a lone surrogate: its code points are read through
/// UTF-32 with `surrogatepass`, which keeps the surrogates that UTF-8 cannot carry.
fn unencodable(text: &Bound<'_, PyString>, kind: TopicKind) -> PyErr {
    let py = text.py();
    let encoded = match text.call_method1("encode", ("utf-32-le", "surrogatepass")) {
        Ok(encoded) => encoded,
        Err(err) => return err,
    };
    let bytes = match encoded.downcast::<PyBytes>() {
        Ok(bytes) => bytes.as_bytes(),
        Err(err) => return err.into(),
    };
    let code_points: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    topic_error(py, router::unencodable_error(kind, &code_points))
}

/// A target: an `int` (not `bool`) in `0 <= target < 2**63`.
fn extract_target(obj: &Bound<'_, PyAny>) -> PyResult<u64> {
    if obj.is_instance_of::<PyBool>() || !obj.is_instance_of::<PyInt>() {
        return Err(PyTypeError::new_err(format!(
            "target must be an int, not {}",
            type_name(obj)
        )));
    }
    match obj.extract::<u64>() {
        Ok(value) if value < TARGET_LIMIT => Ok(value),
        _ => {
            // Huge ints are described by size: printing them could be slow or refused.
            let shown = match obj.extract::<i128>() {
                Ok(value) => value.to_string(),
                Err(_) => {
                    let bits: u64 = obj.call_method0("bit_length")?.extract()?;
                    format!("an int of {bits} bits")
                }
            };
            Err(PyValueError::new_err(format!(
                "target must be an int in 0 <= target < 2**63, got {shown}"
            )))
        }
    }
}

/// MQTT topic filters -> integer targets, matched through a trie.
#[pyclass(name = "TopicRouter", module = "edgenode._edgecore_fast")]
#[derive(Default)]
pub struct PyTopicRouter {
    pub(crate) inner: router::TopicRouter,
}

impl PyTopicRouter {
    /// The checked filter and target of `add` / `remove`, in the twin's order.
    fn pair<'a>(
        filter: &'a Bound<'_, PyAny>,
        target: &Bound<'_, PyAny>,
    ) -> PyResult<(&'a str, u64)> {
        let text = borrow_str(filter, "filter", TopicKind::Filter)?;
        router::validate_filter(text).map_err(|err| topic_error(filter.py(), err))?;
        Ok((text, extract_target(target)?))
    }

    fn match_one<'py>(&mut self, topic: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        let py = topic.py();
        let text = borrow_str(topic, "topic", TopicKind::Name)?;
        let found = self
            .inner
            .match_topic(text)
            .map_err(|err| topic_error(py, err))?;
        PyList::new(py, found)
    }
}

#[pymethods]
impl PyTopicRouter {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Add the pair; False if it was already there. TopicError on a bad filter.
    fn add(&mut self, filter: &Bound<'_, PyAny>, target: &Bound<'_, PyAny>) -> PyResult<bool> {
        let (text, target) = Self::pair(filter, target)?;
        self.inner
            .add(text, target)
            .map_err(|err| topic_error(filter.py(), err))
    }

    /// Remove the pair; False if it was not there. TopicError on a bad filter.
    fn remove(&mut self, filter: &Bound<'_, PyAny>, target: &Bound<'_, PyAny>) -> PyResult<bool> {
        let (text, target) = Self::pair(filter, target)?;
        self.inner
            .remove(text, target)
            .map_err(|err| topic_error(filter.py(), err))
    }

    /// Targets whose filter matches ``topic``, each once, ascending.
    #[pyo3(name = "match")]
    fn match_topic<'py>(&mut self, topic: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyList>> {
        self.match_one(topic)
    }

    /// ``[match(t) for t in topics]`` in one call.
    fn match_many<'py>(
        slf: &Bound<'py, Self>,
        topics: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = topics.py();
        let not_a_sequence = || {
            PyTypeError::new_err(format!(
                "topics must be a sequence of str, not {}",
                type_name(topics)
            ))
        };
        // A str is iterable, but a batch of one-character topics is surely a mistake.
        if topics.is_instance_of::<PyString>() {
            return Err(not_a_sequence());
        }
        let mut results: Vec<Bound<'py, PyList>> = Vec::new();
        if let Ok(list) = topics.downcast::<PyList>() {
            // No Python code runs while a list or tuple is read: borrow the router once.
            let mut router = slf.borrow_mut();
            results.reserve(list.len());
            for topic in list.iter() {
                results.push(router.match_one(&topic)?);
            }
        } else if let Ok(tuple) = topics.downcast::<PyTuple>() {
            let mut router = slf.borrow_mut();
            results.reserve(tuple.len());
            for topic in tuple.iter() {
                results.push(router.match_one(&topic)?);
            }
        } else {
            // Any other iterable runs Python code between items (a generator may even
            // add filters): borrow the router per item, as the pure twin sees it.
            let iterator = topics.try_iter().map_err(|_| not_a_sequence())?;
            for topic in iterator {
                let topic = topic?;
                results.push(slf.borrow_mut().match_one(&topic)?);
            }
        }
        PyList::new(py, results)
    }

    /// ``match_many`` flat: ``(ids, offsets)``, two ``array('q')``.
    fn match_flat<'py>(
        slf: &Bound<'py, Self>,
        topics: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let py = topics.py();
        let not_a_sequence = || {
            PyTypeError::new_err(format!(
                "topics must be a sequence of str, not {}",
                type_name(topics)
            ))
        };
        if topics.is_instance_of::<PyString>() {
            return Err(not_a_sequence());
        }
        let mut ids: Vec<i64> = Vec::new();
        let mut offsets: Vec<i64> = Vec::with_capacity(topics.len().unwrap_or(0) + 1);
        offsets.push(0);
        let mut one = |router: &mut PyTopicRouter, topic: &Bound<'py, PyAny>| -> PyResult<()> {
            let text = borrow_str(topic, "topic", TopicKind::Name)?;
            let found = router
                .inner
                .match_topic(text)
                .map_err(|err| topic_error(py, err))?;
            // Targets are below 2**63 (checked by `add`).
            ids.extend(found.iter().map(|&target| target as i64));
            offsets.push(ids.len() as i64);
            Ok(())
        };
        if let Ok(list) = topics.downcast::<PyList>() {
            let mut router = slf.borrow_mut();
            for topic in list.iter() {
                one(&mut router, &topic)?;
            }
        } else if let Ok(tuple) = topics.downcast::<PyTuple>() {
            let mut router = slf.borrow_mut();
            for topic in tuple.iter() {
                one(&mut router, &topic)?;
            }
        } else {
            let iterator = topics.try_iter().map_err(|_| not_a_sequence())?;
            for topic in iterator {
                let topic = topic?;
                one(&mut slf.borrow_mut(), &topic)?;
            }
        }
        Ok((int64_array(py, &ids)?, int64_array(py, &offsets)?))
    }

    /// Number of (filter, target) pairs.
    fn __len__(&self) -> usize {
        self.inner.len()
    }
}

/// An `array('q')` holding `values` (one copy of their bytes, no object per value).
fn int64_array<'py>(py: Python<'py>, values: &[i64]) -> PyResult<Bound<'py, PyAny>> {
    let mut bytes: Vec<u8> = Vec::with_capacity(values.len() * 8);
    for value in values {
        bytes.extend_from_slice(&value.to_ne_bytes());
    }
    py.import("array")?
        .getattr("array")?
        .call1(("q", PyBytes::new(py, &bytes)))
}

/// Raise TopicError naming the problem if ``filter`` is not a valid MQTT filter.
#[pyfunction]
fn validate_filter(filter: &Bound<'_, PyAny>) -> PyResult<()> {
    let text = borrow_str(filter, "filter", TopicKind::Filter)?;
    router::validate_filter(text).map_err(|err| topic_error(filter.py(), err))
}

/// Raise TopicError naming the problem if ``topic`` is not a valid topic name.
#[pyfunction]
fn validate_topic(topic: &Bound<'_, PyAny>) -> PyResult<()> {
    let text = borrow_str(topic, "topic", TopicKind::Name)?;
    router::validate_topic(text).map_err(|err| topic_error(topic.py(), err))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("MAX_TOPIC_BYTES", router::MAX_TOPIC_BYTES)?;
    m.add_class::<PyTopicRouter>()?;
    m.add_function(wrap_pyfunction!(validate_filter, m)?)?;
    m.add_function(wrap_pyfunction!(validate_topic, m)?)?;
    Ok(())
}
