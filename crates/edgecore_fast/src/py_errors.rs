//! Raising the exception classes defined once, in Python, in `edgenode.errors`.
//!
//! Rust never defines its own exception types: it looks the class up by name so
//! that `except edgenode.errors.StoreError` catches errors from both backends.

use pyo3::prelude::*;
use pyo3::types::PyType;

/// Build an instance of `edgenode.errors.<name>` carrying `message`.
pub fn edgenode_error(py: Python<'_>, name: &str, message: impl Into<String>) -> PyErr {
    let message = message.into();
    match lookup(py, name) {
        Ok(class) => PyErr::from_type(class, message),
        Err(err) => err,
    }
}

fn lookup<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyType>> {
    let module = py.import("edgenode.errors")?;
    Ok(module.getattr(name)?.downcast_into::<PyType>()?)
}
