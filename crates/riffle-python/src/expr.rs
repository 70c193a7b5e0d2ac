//! Expressions: DataFusion's `Expr`, built from Python with operators and calls.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyFloat, PyInt, PyString};
use pyo3_arrow::PyArray;
use riffle::datafusion::arrow::datatypes::FieldRef;
use riffle::datafusion::common::ScalarValue;
use riffle::datafusion::logical_expr::expr::{Cast, TryCast};
use riffle::datafusion::logical_expr::{Expr, Operator, SortExpr, binary_expr};
use riffle::datafusion::prelude::ident;

use crate::errors::IntoPy;

/// An expression over the columns of a DataFrame.
#[pyclass(name = "Expr", module = "riffle._internal", frozen, from_py_object)]
#[derive(Clone)]
pub struct PyExpr {
    pub(crate) expr: Expr,
}

impl From<Expr> for PyExpr {
    fn from(expr: Expr) -> Self {
        Self { expr }
    }
}

/// A function parameter: its name and its default as SQL text (None: required).
type Parameter = (String, Option<String>);

/// The column `name`, as written (no case folding, dots are part of the name).
#[pyfunction]
pub fn col(name: &str) -> PyExpr {
    ident(name).into()
}

/// SQL's `CASE WHEN c1 THEN v1 ... ELSE otherwise END`: the first branch whose condition
/// holds; `otherwise` (or NULL) when none does.
#[pyfunction]
#[pyo3(signature = (branches, otherwise=None))]
pub fn case_when(branches: Vec<(PyExpr, PyExpr)>, otherwise: Option<PyExpr>) -> PyResult<PyExpr> {
    let mut branches = branches.into_iter();
    let Some((condition, value)) = branches.next() else {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "when: give at least one condition",
        ));
    };
    let mut case = riffle::datafusion::logical_expr::when(condition.expr, value.expr);
    for (condition, value) in branches {
        case.when(condition.expr, value.expr);
    }
    let expr = match otherwise {
        Some(value) => case.otherwise(value.expr),
        None => case.end(),
    };
    Ok(expr.py()?.into())
}

/// A literal from a Python None, bool, int, float, str or bytes.
#[pyfunction]
pub fn lit(value: &Bound<'_, PyAny>) -> PyResult<PyExpr> {
    let scalar = if value.is_none() {
        ScalarValue::Null
    } else if value.is_instance_of::<PyBool>() {
        ScalarValue::Boolean(Some(value.extract()?))
    } else if value.is_instance_of::<PyInt>() {
        ScalarValue::Int64(Some(value.extract()?))
    } else if value.is_instance_of::<PyFloat>() {
        ScalarValue::Float64(Some(value.extract()?))
    } else if value.is_instance_of::<PyString>() {
        ScalarValue::Utf8(Some(value.extract()?))
    } else if let Ok(bytes) = value.cast::<PyBytes>() {
        ScalarValue::Binary(Some(bytes.as_bytes().to_vec()))
    } else {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "lit: cannot make a literal of a {}",
            value.get_type().name()?
        )));
    };
    Ok(Expr::Literal(scalar, None).into())
}

/// A literal from the first element of an Arrow array (lists, structs, timestamps, ...).
#[pyfunction]
pub fn lit_arrow(array: PyArray) -> PyResult<PyExpr> {
    let (array, _field) = array.into_inner();
    let scalar = ScalarValue::try_from_array(&array, 0).py()?;
    Ok(Expr::Literal(scalar, None).into())
}

/// Each Riffle built-in function with its parameters: `(name, [(parameter, default)])`, the
/// default as SQL text or None for a required parameter. The one table SQL's named
/// arguments use; Python's generated functions are checked against it.
#[pyfunction]
pub fn function_parameters() -> Vec<(String, Vec<Parameter>)> {
    riffle::function_parameters()
        .iter()
        .map(|(name, params)| {
            (
                name.to_string(),
                params
                    .iter()
                    .map(|p| (p.name.to_string(), p.default.map(str::to_string)))
                    .collect(),
            )
        })
        .collect()
}

/// Every model option (the engine's one table, docs/inference-options.md): `(key,
/// default, provider, meaning)`; the Python front's keyword arguments are made from it.
#[pyfunction]
pub fn model_option_keys() -> Vec<(String, Option<String>, String, String)> {
    riffle::MODEL_OPTION_KEYS
        .iter()
        .map(|option| {
            let scope = match option.scope {
                riffle::OptionScope::Any => "any",
                riffle::OptionScope::OpenAi => "openai",
                riffle::OptionScope::Triton => "triton",
                riffle::OptionScope::Onnx => "onnx",
                riffle::OptionScope::Python => "python",
            };
            (
                option.key.to_string(),
                option.default.map(str::to_string),
                scope.to_string(),
                option.doc.to_string(),
            )
        })
        .collect()
}

fn binary(left: &PyExpr, op: Operator, right: &PyExpr) -> PyExpr {
    binary_expr(left.expr.clone(), op, right.expr.clone()).into()
}

#[pymethods]
impl PyExpr {
    fn add(&self, other: &PyExpr) -> PyExpr {
        binary(self, Operator::Plus, other)
    }
    fn sub(&self, other: &PyExpr) -> PyExpr {
        binary(self, Operator::Minus, other)
    }
    fn mul(&self, other: &PyExpr) -> PyExpr {
        binary(self, Operator::Multiply, other)
    }
    fn div(&self, other: &PyExpr) -> PyExpr {
        binary(self, Operator::Divide, other)
    }
    fn modulo(&self, other: &PyExpr) -> PyExpr {
        binary(self, Operator::Modulo, other)
    }
    fn eq(&self, other: &PyExpr) -> PyExpr {
        binary(self, Operator::Eq, other)
    }
    fn ne(&self, other: &PyExpr) -> PyExpr {
        binary(self, Operator::NotEq, other)
    }
    fn lt(&self, other: &PyExpr) -> PyExpr {
        binary(self, Operator::Lt, other)
    }
    fn le(&self, other: &PyExpr) -> PyExpr {
        binary(self, Operator::LtEq, other)
    }
    fn gt(&self, other: &PyExpr) -> PyExpr {
        binary(self, Operator::Gt, other)
    }
    fn ge(&self, other: &PyExpr) -> PyExpr {
        binary(self, Operator::GtEq, other)
    }
    fn and_(&self, other: &PyExpr) -> PyExpr {
        binary(self, Operator::And, other)
    }
    fn or_(&self, other: &PyExpr) -> PyExpr {
        binary(self, Operator::Or, other)
    }
    fn not_(&self) -> PyExpr {
        Expr::Not(Box::new(self.expr.clone())).into()
    }
    fn neg(&self) -> PyExpr {
        Expr::Negative(Box::new(self.expr.clone())).into()
    }
    fn is_null(&self) -> PyExpr {
        self.expr.clone().is_null().into()
    }
    fn is_not_null(&self) -> PyExpr {
        self.expr.clone().is_not_null().into()
    }
    fn is_in(&self, values: Vec<PyExpr>) -> PyExpr {
        let list = values.into_iter().map(|v| v.expr).collect();
        self.expr.clone().in_list(list, false).into()
    }
    fn between(&self, low: &PyExpr, high: &PyExpr) -> PyExpr {
        self.expr
            .clone()
            .between(low.expr.clone(), high.expr.clone())
            .into()
    }
    fn alias(&self, name: &str) -> PyExpr {
        self.expr.clone().alias(name).into()
    }

    /// The column's name in a result, as the expression's display.
    fn name(&self) -> String {
        self.expr.schema_name().to_string()
    }
    fn __repr__(&self) -> String {
        self.expr.to_string()
    }
}

impl PyExpr {
    /// A cast to the type of `field` (TRY_CAST when `try_`).
    pub(crate) fn cast_to_field(&self, field: FieldRef, try_: bool) -> PyExpr {
        let inner = Box::new(self.expr.clone());
        if try_ {
            Expr::TryCast(TryCast::new_from_field(inner, field)).into()
        } else {
            Expr::Cast(Cast::new_from_field(inner, field)).into()
        }
    }

    pub(crate) fn sort(&self, descending: bool, nulls_first: Option<bool>) -> SortExpr {
        let ascending = !descending;
        // SQL's default: NULLs last ascending, first descending.
        self.expr
            .clone()
            .sort(ascending, nulls_first.unwrap_or(descending))
    }
}

pub(crate) fn exprs(values: Vec<PyExpr>) -> Vec<Expr> {
    values.into_iter().map(|v| v.expr).collect()
}
