//! edgecore_fast: the hot paths of edgenode, in Rust.
//!
//! Pure Rust modules (`router`, `twin`, `store`, `devtwin` on `jsontext`, `mqttcodec`) do the work and are tested with
//! `cargo test`; the `py_*` modules are a thin PyO3 binding layer, compiled only
//! with the `python` feature, that converts types and errors. The pure-Python twin
//! in `python/edgenode/_pure/` is the executable specification of every item here.

pub mod devtwin;
pub mod jsontext;
pub mod mqttcodec;
pub mod router;
pub mod store;
pub mod twin;

#[cfg(feature = "python")]
mod py_devbatch;
#[cfg(feature = "python")]
mod py_devtwin;
#[cfg(feature = "python")]
mod py_errors;
#[cfg(feature = "python")]
mod py_mqttcodec;
#[cfg(feature = "python")]
mod py_router;
#[cfg(feature = "python")]
mod py_store;
#[cfg(feature = "python")]
mod py_twin;

#[cfg(feature = "python")]
use pyo3::prelude::*;

/// The extension module, imported as `edgenode._edgecore_fast`.
#[cfg(feature = "python")]
#[pymodule]
fn _edgecore_fast(m: &Bound<'_, PyModule>) -> PyResult<()> {
    py_router::register(m)?;
    py_twin::register(m)?;
    py_store::register(m)?;
    py_devtwin::register(m)?;
    py_devbatch::register(m)?;
    py_mqttcodec::register(m)?;
    Ok(())
}
