//! `Session`: the catalog, options and the readers.

use std::collections::BTreeMap;

use pyo3::prelude::*;
use pyo3_arrow::input::AnyRecordBatch;
use riffle::{JobConfig, Session};

use crate::dataframe::PyDataFrame;
use crate::errors::IntoPy;
use crate::expr::PyExpr;
use crate::runtime::wait_for;

/// A Riffle session: tables, models and options, and the jobs started from them.
#[pyclass(name = "Session", module = "riffle._internal", frozen)]
pub struct PySession {
    pub(crate) session: Session,
}

#[pymethods]
impl PySession {
    /// A session running jobs at `parallelism` (default: the machine's cores), with the job
    /// options `options` set (`SET 'key' = 'value'` in SQL).
    #[new]
    #[pyo3(signature = (parallelism=None, options=BTreeMap::new()))]
    fn new(parallelism: Option<usize>, options: BTreeMap<String, String>) -> PyResult<Self> {
        let mut config = JobConfig::default();
        if let Some(parallelism) = parallelism {
            config.parallelism = parallelism;
        }
        let session = {
            let _guard = crate::runtime::runtime().enter();
            Session::with_config(config).py()?
        };
        for (key, value) in &options {
            session.set_option(key, value).py()?;
        }
        Ok(Self { session })
    }

    fn set_option(&self, key: &str, value: &str) -> PyResult<()> {
        self.session.set_option(key, value).py()
    }

    fn options(&self) -> BTreeMap<String, String> {
        self.session
            .options()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parallelism(&self) -> usize {
        self.session.config().parallelism
    }

    fn restore_from(&self, path: String) -> PyResult<()> {
        self.session.restore_from(path).py()
    }

    /// Runs one SQL statement; queries come back lazy, DDL runs at once.
    fn sql(&self, py: Python<'_>, query: &str) -> PyResult<PyDataFrame> {
        let session = self.session.clone();
        let query = query.to_string();
        let frame = wait_for(py, async move { session.sql(&query).await })?;
        Ok(frame.into())
    }

    /// Declares `frame` as the view `name` for the SQL that follows; `None` removes it.
    fn register_view(&self, name: &str, frame: Option<&PyDataFrame>) -> PyResult<()> {
        match frame {
            Some(frame) => self.session.register_view(name, &frame.frame).py(),
            None => self.session.deregister_view(name).py(),
        }
    }

    fn table(&self, py: Python<'_>, name: &str) -> PyResult<PyDataFrame> {
        let session = self.session.clone();
        let name = name.to_string();
        Ok(wait_for(py, async move { session.table(&name).await })?.into())
    }

    /// A DataFrame over any Arrow data (`__arrow_c_stream__` or `__arrow_c_array__`), read
    /// without copies.
    fn read_arrow(&self, data: AnyRecordBatch) -> PyResult<PyDataFrame> {
        let reader = data.into_reader()?;
        let schema = reader.schema();
        let batches = reader.collect::<Result<Vec<_>, _>>().py()?;
        Ok(self.session.read_batches(schema, batches).py()?.into())
    }

    fn read_files(
        &self,
        py: Python<'_>,
        location: &str,
        format: &str,
        options: BTreeMap<String, String>,
    ) -> PyResult<PyDataFrame> {
        let session = self.session.clone();
        let (location, format) = (location.to_string(), format.to_string());
        let frame = wait_for(py, async move {
            session.read_files(&location, &format, options).await
        })?;
        Ok(frame.into())
    }

    fn files(&self, location: &str) -> PyResult<PyDataFrame> {
        Ok(self.session.files(location).py()?.into())
    }

    #[pyo3(signature = (location, ignore_corrupt, size=None))]
    fn read_images(
        &self,
        location: &str,
        ignore_corrupt: bool,
        size: Option<(u32, u32)>,
    ) -> PyResult<PyDataFrame> {
        Ok(self
            .session
            .read_images_sized(location, ignore_corrupt, size)
            .py()?
            .into())
    }

    /// `expr` cast to the SQL type `type_name` (`TRY_CAST` when `try_`).
    fn cast(&self, py: Python<'_>, expr: &PyExpr, type_name: &str, try_: bool) -> PyResult<PyExpr> {
        let session = self.session.clone();
        let type_name = type_name.to_string();
        let field = wait_for(py, async move { session.sql_type(&type_name).await })?;
        Ok(expr.cast_to_field(field.into(), try_))
    }

    /// Declares model `name` with these input and output columns (Arrow schemas) and
    /// options, replacing one of that name.
    fn register_model(
        &self,
        name: &str,
        input: pyo3_arrow::PySchema,
        output: pyo3_arrow::PySchema,
        options: BTreeMap<String, String>,
    ) -> PyResult<()> {
        self.session
            .register_model(name, input.into_inner(), output.into_inner(), options)
            .py()
    }

    /// A call of Riffle's built-in `name`, `None` arguments taking their defaults.
    fn call_builtin(&self, name: &str, args: Vec<Option<PyExpr>>) -> PyResult<PyExpr> {
        let args = args.into_iter().map(|a| a.map(|a| a.expr)).collect();
        Ok(self.session.call_builtin(name, args).py()?.into())
    }

    /// A call of the function `name` (a built-in, a scalar or an aggregate) with `args` in
    /// parameter order.
    fn call(&self, name: &str, args: Vec<PyExpr>) -> PyResult<PyExpr> {
        let args = crate::expr::exprs(args);
        Ok(self.session.call_function(name, args).py()?.into())
    }
}
