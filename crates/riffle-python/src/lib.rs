//! `riffle._internal`: the native half of Riffle's Python package.
//!
//! This crate only converts: Python values to Rust ones, calls into the `riffle` crate, and
//! the results (Arrow data through the C data and stream interfaces, errors as Python
//! exceptions) back. Logic belongs in the Rust crates, where SQL and the CLI reach it too; the
//! Python package (`python/riffle`) adds docstrings, argument checks and display.

mod dataframe;
mod errors;
mod expr;
mod runtime;
mod session;

use pyo3::prelude::*;

#[pymodule]
fn _internal(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_class::<session::PySession>()?;
    module.add_class::<dataframe::PyDataFrame>()?;
    module.add_class::<dataframe::PyJob>()?;
    module.add_class::<expr::PyExpr>()?;
    module.add_function(wrap_pyfunction!(expr::col, module)?)?;
    module.add_function(wrap_pyfunction!(expr::lit, module)?)?;
    module.add_function(wrap_pyfunction!(expr::lit_arrow, module)?)?;
    module.add_function(wrap_pyfunction!(expr::case_when, module)?)?;
    module.add_function(wrap_pyfunction!(expr::function_parameters, module)?)?;
    module.add_function(wrap_pyfunction!(expr::model_option_keys, module)?)?;
    errors::register(module)?;
    Ok(())
}
