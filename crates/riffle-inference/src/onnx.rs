//! In-process ONNX models through ONNX Runtime: no server.
//!
//! The runtime is the `onnxruntime` PyPI wheel's shared library, loaded when the first model
//! is (the `ort` crate with `load-dynamic`: nothing is downloaded at build time). It is found
//! at `onnx.runtime-library` (a model option), `ORT_DYLIB_PATH`, or in the `onnxruntime`
//! package of `python3`. A model file loads once per process, stays loaded, and is shared by
//! every subtask and query that uses it (`Arc<Mutex<Session>>`: ONNX Runtime parallelises
//! one run over its intra-op threads).
//!
//! Inputs: the call's DESCRIPTOR columns go to the model's inputs in order. A `VECTOR` or
//! `TENSOR` column becomes a tensor `[rows, ...shape]`; a number column `[rows]` (or
//! `[rows, 1]` when the model wants rank 2). Elements are cast to the type the model
//! declares (float, double, int64, int32). Outputs: the model's outputs fill the OUTPUT
//! columns, by name where an OUTPUT column is named like a model output, else in order; a
//! `[rows]` output fills a number column, a `[rows, k]` one a `VECTOR(FLOAT, k)` (a wrong `k`
//! is an error naming both shapes).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array};
use datafusion::arrow::datatypes::{Field, SchemaRef};
use ort::session::Session;
use ort::value::{DynValue, Tensor, TensorElementType, ValueType};

use crate::backend::{Answer, Backend, CallError, Request};
use crate::tensors::{self, Values};

/// A loaded model, shared.
pub(crate) type SharedSession = Arc<Mutex<Session>>;

fn environment(library: Option<&str>) -> Result<&'static ort::environment::Environment, String> {
    static ENVIRONMENT: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            let path = find_runtime(library)?;
            ort::init_from(&path)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?
                .with_name("riffle")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Where libonnxruntime is: the option, `ORT_DYLIB_PATH`, or the Python package's.
fn find_runtime(library: Option<&str>) -> Result<PathBuf, String> {
    if let Some(path) = library
        .map(str::to_string)
        .or_else(|| std::env::var("ORT_DYLIB_PATH").ok())
    {
        return Ok(PathBuf::from(path));
    }
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))",
        ])
        .output()
        .map_err(|e| format!("cannot run python3 to find onnxruntime: {e}"))?;
    let folder = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let found = std::fs::read_dir(&folder).ok().and_then(|entries| {
        entries.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
    });
    found.ok_or_else(|| {
        "ONNX Runtime was not found: pip install onnxruntime, or set ORT_DYLIB_PATH (or the \
         model option 'onnx.runtime-library') to libonnxruntime's path"
            .to_string()
    })
}

/// The session of `path`, loaded once per process.
pub(crate) fn session(
    path: &Path,
    threads: Option<usize>,
    library: Option<&str>,
) -> Result<SharedSession, String> {
    // Strong references: a model stays loaded for the process, shared by every query.
    static SESSIONS: OnceLock<Mutex<HashMap<PathBuf, SharedSession>>> = OnceLock::new();
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut sessions = SESSIONS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(session) = sessions.get(&key) {
        return Ok(Arc::clone(session));
    }
    if !key.is_file() {
        return Err(format!("the model file {} does not exist", path.display()));
    }
    let environment = environment(library)?;
    let mut builder = Session::builder(environment)
        .map_err(|e| format!("cannot start an ONNX Runtime session: {e}"))?;
    if let Some(threads) = threads {
        builder = builder
            .with_intra_threads(threads)
            .map_err(|e| format!("cannot set the session's threads: {e}"))?;
    }
    // The `cuda` feature: the GPU first; ONNX Runtime falls back to the CPU (with a warning
    // in its log) when its library has no CUDA provider or the machine no GPU.
    #[cfg(feature = "cuda")]
    {
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default().build()])
            .map_err(|e| format!("cannot ask for the CUDA execution provider: {e}"))?;
    }
    let session = builder.commit_from_file(&key).map_err(|e| {
        format!(
            "{} is not an ONNX model ONNX Runtime can load: {e}",
            path.display()
        )
    })?;
    let shared = Arc::new(Mutex::new(session));
    sessions.insert(key, Arc::clone(&shared));
    Ok(shared)
}

/// One model input or output as the session declares it.
#[derive(Debug, Clone)]
struct Port {
    name: String,
    element: TensorElementType,
    /// Dimensions, -1 where dynamic.
    shape: Vec<i64>,
}

fn ports(outlets: &[ort::value::Outlet]) -> Result<Vec<Port>, String> {
    outlets
        .iter()
        .map(|outlet| match outlet.dtype() {
            ValueType::Tensor { ty, shape, .. } => Ok(Port {
                name: outlet.name().to_string(),
                element: *ty,
                shape: shape.iter().copied().collect(),
            }),
            other => Err(format!(
                "{} is a {other:?}; only tensor inputs and outputs are supported",
                outlet.name()
            )),
        })
        .collect()
}

/// An in-process ONNX model; see the module docs.
pub struct OnnxBackend {
    path: PathBuf,
    session: SharedSession,
    inputs: Vec<Port>,
    /// Which model output fills each OUTPUT column.
    fills: Vec<usize>,
    model_outputs: Vec<Port>,
    outputs: SchemaRef,
    label: String,
}

impl std::fmt::Debug for OnnxBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl OnnxBackend {
    /// Loads (or shares) the model at `path` for `descriptor` inputs and `outputs`.
    pub fn new(
        model: &str,
        path: &str,
        threads: Option<usize>,
        library: Option<&str>,
        descriptor: usize,
        outputs: SchemaRef,
    ) -> Result<Self, String> {
        let path = PathBuf::from(path);
        let session =
            session(&path, threads, library).map_err(|e| format!("model {model}: {e}"))?;
        let (inputs, model_outputs) = {
            let session = session.lock().unwrap_or_else(|p| p.into_inner());
            (ports(session.inputs())?, ports(session.outputs())?)
        };
        if inputs.len() != descriptor {
            return Err(format!(
                "model {model}: {} takes {} inputs ({}), DESCRIPTOR names {descriptor}",
                path.display(),
                inputs.len(),
                inputs
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let mut fills = Vec::new();
        for (index, field) in outputs.fields().iter().enumerate() {
            let by_name = model_outputs.iter().position(|p| &p.name == field.name());
            let fill = by_name
                .or((index < model_outputs.len()).then_some(index))
                .ok_or_else(|| {
                    format!(
                        "model {model}: OUTPUT column {} has no model output to fill it (the model \
                     gives {})",
                        field.name(),
                        model_outputs
                            .iter()
                            .map(|p| p.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
            fills.push(fill);
        }
        Ok(Self {
            label: format!("onnx:{}", path.display()),
            path,
            session,
            inputs,
            fills,
            model_outputs,
            outputs,
        })
    }
}

fn tensor_input(
    port: &Port,
    rows: usize,
    values: Values,
    row_shape: Vec<usize>,
) -> Result<DynValue, String> {
    let mut shape = vec![rows];
    shape.extend(&row_shape);
    // A model wanting [rows, 1] for a number column.
    if row_shape.is_empty() && port.shape.len() == 2 {
        shape.push(1);
    }
    if port.shape.len() != shape.len() {
        return Err(format!(
            "input {} wants a tensor of rank {} ({:?}), the column gives rows of shape {row_shape:?}",
            port.name,
            port.shape.len(),
            port.shape
        ));
    }
    for (axis, (&want, &have)) in port.shape.iter().zip(&shape).enumerate().skip(1) {
        if want >= 0 && want as usize != have {
            return Err(format!(
                "input {} wants dimension {axis} of {want}, the column gives {have} (shape {shape:?} \
                 against {:?})",
                port.name, port.shape
            ));
        }
    }
    let value: DynValue = match port.element {
        TensorElementType::Float32 => Tensor::from_array((shape, values.into_f32()))
            .map_err(|e| e.to_string())?
            .into_dyn(),
        TensorElementType::Float64 => Tensor::from_array((shape, values.into_f64()))
            .map_err(|e| e.to_string())?
            .into_dyn(),
        TensorElementType::Int64 => Tensor::from_array((shape, values.into_i64()))
            .map_err(|e| e.to_string())?
            .into_dyn(),
        TensorElementType::Int32 => Tensor::from_array((shape, values.into_i32()))
            .map_err(|e| e.to_string())?
            .into_dyn(),
        other => {
            return Err(format!(
                "input {} is {other:?}, which Riffle cannot fill yet",
                port.name
            ));
        }
    };
    Ok(value)
}

/// A model output as a column of `field`'s type.
fn output_column(
    value: &DynValue,
    port: &Port,
    field: &Field,
    rows: usize,
) -> Result<ArrayRef, String> {
    let (shape, flat): (Vec<i64>, ArrayRef) = match port.element {
        TensorElementType::Float32 => {
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| e.to_string())?;
            (
                shape.iter().copied().collect(),
                std::sync::Arc::new(Float32Array::from(data.to_vec())),
            )
        }
        TensorElementType::Float64 => {
            let (shape, data) = value
                .try_extract_tensor::<f64>()
                .map_err(|e| e.to_string())?;
            (
                shape.iter().copied().collect(),
                std::sync::Arc::new(Float64Array::from(data.to_vec())),
            )
        }
        TensorElementType::Int64 => {
            let (shape, data) = value
                .try_extract_tensor::<i64>()
                .map_err(|e| e.to_string())?;
            (
                shape.iter().copied().collect(),
                std::sync::Arc::new(Int64Array::from(data.to_vec())),
            )
        }
        TensorElementType::Int32 => {
            let (shape, data) = value
                .try_extract_tensor::<i32>()
                .map_err(|e| e.to_string())?;
            (
                shape.iter().copied().collect(),
                std::sync::Arc::new(Int32Array::from(data.to_vec())),
            )
        }
        other => {
            return Err(format!(
                "output {} is {other:?}, which Riffle cannot read yet",
                port.name
            ));
        }
    };
    tensors::tensor_column(&port.name, &shape, flat, field, rows)
}

#[async_trait]
impl Backend for OnnxBackend {
    fn endpoint(&self) -> &str {
        &self.label
    }

    async fn call(&self, request: Request<'_>) -> Result<Answer, CallError> {
        let rows = request.inputs.num_rows();
        let mut values = Vec::with_capacity(self.inputs.len());
        let schema = request.inputs.schema();
        for ((port, column), field) in self
            .inputs
            .iter()
            .zip(request.inputs.columns())
            .zip(schema.fields())
        {
            let (flat, row_shape) =
                tensors::column_tensor(field, column).map_err(CallError::malformed)?;
            values.push(tensor_input(port, rows, flat, row_shape).map_err(CallError::malformed)?);
        }
        let session = Arc::clone(&self.session);
        let model_outputs = self.model_outputs.clone();
        let fills = self.fills.clone();
        let outputs = Arc::clone(&self.outputs);
        let path = self.path.clone();
        // ONNX Runtime computes on the caller's thread: not on the async runtime's.
        let columns = tokio::task::spawn_blocking(move || -> Result<Vec<ArrayRef>, String> {
            let mut session = session.lock().unwrap_or_else(|p| p.into_inner());
            let inputs: Vec<ort::session::SessionInputValue<'_>> =
                values.into_iter().map(Into::into).collect();
            let results = session
                .run(inputs.as_slice())
                .map_err(|e| format!("running {}: {e}", path.display()))?;
            fills
                .iter()
                .zip(outputs.fields())
                .map(|(&index, field)| {
                    output_column(&results[index], &model_outputs[index], field, rows)
                })
                .collect()
        })
        .await
        .map_err(|e| CallError::malformed(format!("the model's run stopped: {e}")))?
        .map_err(CallError::malformed)?;
        Ok(Answer {
            columns,
            row_errors: Vec::new(),
            usage: None,
            hints: Default::default(),
        })
    }
}
