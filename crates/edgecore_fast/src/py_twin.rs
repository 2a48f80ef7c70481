//! Python binding of [`crate::twin`] (placeholder until the twin work lands).

use pyo3::prelude::*;

pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
