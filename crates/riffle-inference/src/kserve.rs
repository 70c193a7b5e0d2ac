//! KServe v2 (the Open Inference Protocol that Triton, MLServer and KServe speak), over REST
//! and over gRPC: Flink's `'provider' = 'triton'`.
//!
//! Each DESCRIPTOR column becomes one input tensor named like the column, `[rows, ...row
//! shape]` (see [`crate::tensors`]); a text column becomes a `BYTES` tensor `[rows, 1]`. The
//! answer's output tensors fill the OUTPUT columns, by name where a server output is named
//! like the column, else in order. `output-names` asks the server for particular outputs (an
//! MLServer scikit-learn model gives `predict` unless asked for `predict_proba`).
//!
//! The endpoint's scheme picks the transport: `http://` or `https://` is REST
//! (`POST /v2/models/NAME[/versions/V]/infer`), `grpc://` is gRPC
//! (`inference.GRPCInferenceService/ModelInfer`, plaintext HTTP/2). Readiness
//! (`/v2/health/ready` and the model's `ready`, or the gRPC `ServerReady` and `ModelReady`) is
//! what the circuit breaker's half-open probe asks before it lets rows go again.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
    UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use serde_json::{Value, json};

use crate::backend::{Answer, Backend, CallError, Request};
use crate::columns;
use crate::hints::ServerHints;
use crate::http;
use crate::options::TritonOptions;
use crate::retry::Failure;
use crate::tensors::{self, Values};

/// One input tensor, ready for either transport.
#[derive(Debug)]
struct InputTensor {
    name: String,
    shape: Vec<i64>,
    data: TensorData,
}

#[derive(Debug)]
enum TensorData {
    /// Values, and the element type the column stores (a `UINT8` image goes as `UINT8`,
    /// though its values travel widened).
    Numbers(Values, DataType),
    Text(Vec<String>),
}

impl TensorData {
    fn datatype(&self) -> &'static str {
        match self {
            TensorData::Numbers(_, DataType::Int8) => "INT8",
            TensorData::Numbers(_, DataType::Int16) => "INT16",
            TensorData::Numbers(_, DataType::UInt8) => "UINT8",
            TensorData::Numbers(_, DataType::UInt16) => "UINT16",
            TensorData::Numbers(_, DataType::UInt32) => "UINT32",
            TensorData::Numbers(_, DataType::UInt64) => "UINT64",
            TensorData::Numbers(Values::F32(_), _) => "FP32",
            TensorData::Numbers(Values::F64(_), _) => "FP64",
            TensorData::Numbers(Values::I64(_), _) => "INT64",
            TensorData::Numbers(Values::I32(_), _) => "INT32",
            TensorData::Text(_) => "BYTES",
        }
    }
}

/// One output tensor of an answer, its values flat.
#[derive(Debug)]
struct OutputTensor {
    name: String,
    shape: Vec<i64>,
    values: ArrayRef,
}

/// A model behind a KServe v2 server; see the module docs.
#[derive(Debug)]
pub struct KserveBackend {
    model: String,
    options: TritonOptions,
    outputs: SchemaRef,
    input_names: Vec<String>,
    transport: Transport,
    /// The endpoint and the model, for errors and as the limits' key.
    label: String,
}

#[derive(Debug)]
enum Transport {
    Rest {
        client: reqwest::Client,
        /// `.../v2/models/NAME[/versions/V]`.
        model_url: String,
        base: String,
    },
    Grpc(grpc::Client),
}

impl KserveBackend {
    /// A backend for `options`, filling `outputs` from inputs named `input_names`.
    pub fn new(
        model: &str,
        options: TritonOptions,
        input_names: Vec<String>,
        outputs: SchemaRef,
    ) -> Result<Self, String> {
        if outputs.fields().is_empty() {
            return Err(format!("model {model} declares no OUTPUT column"));
        }
        if !options.output_names.is_empty() && options.output_names.len() != outputs.fields().len()
        {
            return Err(format!(
                "model {model}: 'output-names' names {} server outputs for {} OUTPUT columns",
                options.output_names.len(),
                outputs.fields().len()
            ));
        }
        let base = options.endpoint.trim_end_matches('/').to_string();
        let transport = if let Some(address) = base.strip_prefix("grpc://") {
            Transport::Grpc(grpc::Client::new(address).map_err(|e| format!("model {model}: {e}"))?)
        } else if base.starts_with("http://") || base.starts_with("https://") {
            let mut model_url = format!("{base}/v2/models/{}", options.model_name);
            if let Some(version) = &options.model_version {
                model_url.push_str(&format!("/versions/{version}"));
            }
            Transport::Rest {
                client: http::client()?,
                model_url,
                base: base.clone(),
            }
        } else {
            return Err(format!(
                "model {model}: endpoint '{base}' is neither http(s)://host:port (KServe v2 \
                 REST) nor grpc://host:port (KServe v2 gRPC)"
            ));
        };
        let label = format!(
            "{}#{}",
            base.split('?').next().unwrap_or_default(),
            options.model_name
        );
        Ok(Self {
            model: model.to_string(),
            options,
            outputs,
            input_names,
            transport,
            label,
        })
    }

    fn inputs(&self, request: &Request<'_>) -> Result<Vec<InputTensor>, CallError> {
        let rows = request.inputs.num_rows() as i64;
        let schema = request.inputs.schema();
        let mut tensors = Vec::with_capacity(self.input_names.len());
        for ((name, column), field) in self
            .input_names
            .iter()
            .zip(request.inputs.columns())
            .zip(schema.fields())
        {
            let (data, row_shape) = match columns::strings(column) {
                Ok(texts) => {
                    let texts = texts
                        .into_iter()
                        .collect::<Option<Vec<String>>>()
                        .ok_or_else(|| {
                            CallError::malformed(format!(
                                "model {}: column {name} has a NULL row, which cannot go to the \
                                 model",
                                self.model
                            ))
                        })?;
                    (TensorData::Text(texts), vec![1])
                }
                Err(_) => {
                    let (values, shape) = tensors::column_tensor(field, column)
                        .map_err(|e| CallError::malformed(format!("model {}: {e}", self.model)))?;
                    (
                        TensorData::Numbers(values, tensors::element_type(column)),
                        shape,
                    )
                }
            };
            let mut shape = vec![rows];
            shape.extend(row_shape.iter().map(|&d| d as i64));
            // A number column is a column vector: one feature per row.
            if shape.len() == 1 {
                shape.push(1);
            }
            tensors.push(InputTensor {
                name: name.clone(),
                shape,
                data,
            });
        }
        Ok(tensors)
    }

    /// The answer's tensors as the OUTPUT columns.
    fn fill(&self, answer: Vec<OutputTensor>, rows: usize) -> Result<Vec<ArrayRef>, CallError> {
        let given = || {
            answer
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut columns = Vec::with_capacity(self.outputs.fields().len());
        for (index, field) in self.outputs.fields().iter().enumerate() {
            let wanted = self
                .options
                .output_names
                .get(index)
                .map_or(field.name().as_str(), String::as_str);
            let tensor = answer
                .iter()
                .find(|t| t.name == wanted)
                .or_else(|| {
                    self.options
                        .output_names
                        .is_empty()
                        .then(|| answer.get(index))
                        .flatten()
                })
                .ok_or_else(|| {
                    CallError::malformed(format!(
                        "model {}: the answer has no output for OUTPUT column {} (it gives {})",
                        self.model,
                        field.name(),
                        given()
                    ))
                })?;
            let column = tensors::tensor_column(
                &tensor.name,
                &tensor.shape,
                Arc::clone(&tensor.values),
                field,
                rows,
            )
            .map_err(|e| CallError::malformed(format!("model {}: {e}", self.model)))?;
            columns.push(column);
        }
        Ok(columns)
    }

    async fn infer_rest(
        &self,
        client: &reqwest::Client,
        model_url: &str,
        inputs: Vec<InputTensor>,
        key: &str,
    ) -> Result<(Vec<OutputTensor>, ServerHints), CallError> {
        let inputs: Vec<Value> = inputs
            .into_iter()
            .map(|tensor| {
                let datatype = tensor.data.datatype();
                let data = match tensor.data {
                    TensorData::Numbers(Values::F32(v), _) => json!(v),
                    TensorData::Numbers(Values::F64(v), _) => json!(v),
                    TensorData::Numbers(Values::I64(v), _) => json!(v),
                    TensorData::Numbers(Values::I32(v), _) => json!(v),
                    TensorData::Text(v) => json!(v),
                };
                json!({"name": tensor.name, "shape": tensor.shape, "datatype": datatype, "data": data})
            })
            .collect();
        let mut body = json!({"id": key, "inputs": inputs});
        if !self.options.output_names.is_empty() {
            body["outputs"] = self
                .options
                .output_names
                .iter()
                .map(|name| json!({"name": name}))
                .collect();
        }
        let request = client
            .post(format!("{model_url}/infer"))
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(serde_json::to_vec(&body).unwrap_or_default());
        let (answer, hints) = http::send_json(request, &self.label).await?;
        let outputs = answer
            .get("outputs")
            .and_then(Value::as_array)
            .ok_or_else(|| self.malformed("has no \"outputs\" list"))?;
        let tensors = outputs
            .iter()
            .map(|output| self.rest_output(output))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((tensors, hints))
    }

    fn rest_output(&self, output: &Value) -> Result<OutputTensor, CallError> {
        let name = output
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| self.malformed("has an output without a name"))?
            .to_string();
        let shape = output
            .get("shape")
            .and_then(Value::as_array)
            .and_then(|dims| dims.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| self.malformed(&format!("has output {name} without a shape")))?;
        let datatype = output
            .get("datatype")
            .and_then(Value::as_str)
            .unwrap_or("FP64");
        let data = output
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| self.malformed(&format!("has output {name} without a data list")))?;
        let wrong = || self.malformed(&format!("has output {name} with values not {datatype}"));
        let values: ArrayRef = match datatype {
            "BOOL" => Arc::new(
                data.iter()
                    .map(Value::as_bool)
                    .collect::<Option<BooleanArray>>()
                    .ok_or_else(wrong)?,
            ),
            "BYTES" => Arc::new(
                data.iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<String>>>()
                    .map(StringArray::from)
                    .ok_or_else(wrong)?,
            ),
            t if t.starts_with("INT") || t.starts_with("UINT") => Arc::new(Int64Array::from(
                data.iter()
                    .map(Value::as_i64)
                    .collect::<Option<Vec<i64>>>()
                    .ok_or_else(wrong)?,
            )),
            _ => Arc::new(Float64Array::from(
                data.iter()
                    .map(Value::as_f64)
                    .collect::<Option<Vec<f64>>>()
                    .ok_or_else(wrong)?,
            )),
        };
        Ok(OutputTensor {
            name,
            shape,
            values,
        })
    }

    fn malformed(&self, what: &str) -> CallError {
        CallError::malformed(format!("the answer of {} {what}", self.label))
    }

    /// Whether the server and the model say they are ready (`Err`: the server could not be
    /// asked).
    pub async fn is_ready(&self) -> Result<bool, CallError> {
        match &self.transport {
            Transport::Rest {
                client,
                model_url,
                base,
            } => {
                for url in [
                    format!("{base}/v2/health/ready"),
                    format!("{model_url}/ready"),
                ] {
                    let response = client.get(&url).send().await.map_err(|e| CallError {
                        failure: Some(Failure::Connection),
                        message: format!("GET {}: {}", self.label, http::without_url(&e)),
                        hints: ServerHints::default(),
                    })?;
                    if !response.status().is_success() {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Transport::Grpc(client) => {
                client
                    .ready(
                        &self.options.model_name,
                        self.options.model_version.as_deref(),
                        &self.label,
                    )
                    .await
            }
        }
    }
}

#[async_trait]
impl Backend for KserveBackend {
    fn endpoint(&self) -> &str {
        &self.label
    }

    async fn ready(&self) -> Result<bool, CallError> {
        self.is_ready().await
    }

    async fn call(&self, request: Request<'_>) -> Result<Answer, CallError> {
        let rows = request.inputs.num_rows();
        let inputs = self.inputs(&request)?;
        let (tensors, hints) = match &self.transport {
            Transport::Rest {
                client, model_url, ..
            } => {
                self.infer_rest(client, model_url, inputs, request.idempotency_key)
                    .await?
            }
            Transport::Grpc(client) => (
                client
                    .infer(&self.options, inputs, request.idempotency_key, &self.label)
                    .await?,
                ServerHints::default(),
            ),
        };
        Ok(Answer {
            columns: self.fill(tensors, rows)?,
            row_errors: Vec::new(),
            usage: None,
            hints,
        })
    }
}

/// The gRPC transport: the standard `grpc_predict_v2.proto` messages this backend uses,
/// written with prost's derives (field numbers as in the KServe proto; the `parameters` maps
/// are left out, which protobuf readers skip), and a tonic client.
mod grpc {
    use super::*;

    use tonic::codegen::http::uri::PathAndQuery;
    use tonic::transport::{Channel, Endpoint};

    /// `ModelInferRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelInferRequest {
        #[prost(string, tag = "1")]
        pub model_name: String,
        #[prost(string, tag = "2")]
        pub model_version: String,
        #[prost(string, tag = "3")]
        pub id: String,
        #[prost(message, repeated, tag = "5")]
        pub inputs: Vec<InferInputTensor>,
        #[prost(message, repeated, tag = "6")]
        pub outputs: Vec<InferRequestedOutputTensor>,
    }

    /// `ModelInferRequest.InferInputTensor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferInputTensor {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub datatype: String,
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
        #[prost(message, optional, tag = "5")]
        pub contents: Option<InferTensorContents>,
    }

    /// `ModelInferRequest.InferRequestedOutputTensor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferRequestedOutputTensor {
        #[prost(string, tag = "1")]
        pub name: String,
    }

    /// `InferTensorContents`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferTensorContents {
        #[prost(bool, repeated, tag = "1")]
        pub bool_contents: Vec<bool>,
        #[prost(int32, repeated, tag = "2")]
        pub int_contents: Vec<i32>,
        #[prost(int64, repeated, tag = "3")]
        pub int64_contents: Vec<i64>,
        #[prost(uint32, repeated, tag = "4")]
        pub uint_contents: Vec<u32>,
        #[prost(uint64, repeated, tag = "5")]
        pub uint64_contents: Vec<u64>,
        #[prost(float, repeated, tag = "6")]
        pub fp32_contents: Vec<f32>,
        #[prost(double, repeated, tag = "7")]
        pub fp64_contents: Vec<f64>,
        #[prost(bytes = "vec", repeated, tag = "8")]
        pub bytes_contents: Vec<Vec<u8>>,
    }

    /// `ModelInferResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelInferResponse {
        #[prost(string, tag = "1")]
        pub model_name: String,
        #[prost(string, tag = "2")]
        pub model_version: String,
        #[prost(string, tag = "3")]
        pub id: String,
        #[prost(message, repeated, tag = "5")]
        pub outputs: Vec<InferOutputTensor>,
        #[prost(bytes = "vec", repeated, tag = "6")]
        pub raw_output_contents: Vec<Vec<u8>>,
    }

    /// `ModelInferResponse.InferOutputTensor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct InferOutputTensor {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub datatype: String,
        #[prost(int64, repeated, tag = "3")]
        pub shape: Vec<i64>,
        #[prost(message, optional, tag = "5")]
        pub contents: Option<InferTensorContents>,
    }

    /// `ServerReadyRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ServerReadyRequest {}

    /// `ServerReadyResponse` and `ModelReadyResponse`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ReadyResponse {
        #[prost(bool, tag = "1")]
        pub ready: bool,
    }

    /// `ModelReadyRequest`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelReadyRequest {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    const SERVICE: &str = "/inference.GRPCInferenceService/";

    /// One HTTP/2 connection (made when first used, remade when lost), shared by every
    /// request to the server.
    #[derive(Debug, Clone)]
    pub struct Client {
        channel: Channel,
    }

    fn status_error(label: &str, status: tonic::Status) -> CallError {
        CallError {
            failure: Some(Failure::Grpc(status.code() as u32)),
            message: format!(
                "{label} answered gRPC {:?}: {}",
                status.code(),
                status.message().chars().take(300).collect::<String>()
            ),
            hints: ServerHints::default(),
        }
    }

    impl Client {
        pub fn new(address: &str) -> Result<Self, String> {
            let endpoint = Endpoint::from_shared(format!("http://{address}"))
                .map_err(|e| format!("grpc://{address} is not a valid address: {e}"))?;
            Ok(Self {
                channel: endpoint.connect_lazy(),
            })
        }

        async fn unary<Q, A>(
            &self,
            method: &'static str,
            request: Q,
            key: &str,
        ) -> Result<A, tonic::Status>
        where
            Q: prost::Message + Send + Sync + 'static,
            A: prost::Message + Default + Send + Sync + 'static,
        {
            // Answers of many rows (masks, embeddings) pass tonic's 4 MiB default.
            let mut grpc = tonic::client::Grpc::new(self.channel.clone())
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("cannot connect: {e}")))?;
            let path = PathAndQuery::try_from(format!("{SERVICE}{method}"))
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
            let mut request = tonic::Request::new(request);
            if let Ok(value) = key.parse() {
                request.metadata_mut().insert("idempotency-key", value);
            }
            let codec = tonic_prost::ProstCodec::<Q, A>::default();
            grpc.unary(request, path, codec)
                .await
                .map(tonic::Response::into_inner)
        }

        pub async fn ready(
            &self,
            model: &str,
            version: Option<&str>,
            label: &str,
        ) -> Result<bool, CallError> {
            // A server without the readiness calls (UNIMPLEMENTED) is taken as ready: its
            // inference answers say the rest.
            let asked = |result: Result<ReadyResponse, tonic::Status>| match result {
                Ok(answer) => Ok(answer.ready),
                Err(status) if status.code() == tonic::Code::Unimplemented => Ok(true),
                Err(status) => Err(status_error(label, status)),
            };
            if !asked(self.unary("ServerReady", ServerReadyRequest {}, "").await)? {
                return Ok(false);
            }
            let request = ModelReadyRequest {
                name: model.to_string(),
                version: version.unwrap_or_default().to_string(),
            };
            asked(self.unary("ModelReady", request, "").await)
        }

        pub async fn infer(
            &self,
            options: &TritonOptions,
            inputs: Vec<InputTensor>,
            key: &str,
            label: &str,
        ) -> Result<Vec<OutputTensor>, CallError> {
            let inputs = inputs
                .into_iter()
                .map(|tensor| {
                    let datatype = tensor.data.datatype().to_string();
                    let mut contents = InferTensorContents::default();
                    match tensor.data {
                        // Unsigned types have fields of their own; their values were widened
                        // without loss (a UINT64 above INT64's range was refused).
                        TensorData::Numbers(
                            values,
                            DataType::UInt8 | DataType::UInt16 | DataType::UInt32,
                        ) => {
                            contents.uint_contents =
                                values.into_i64().into_iter().map(|v| v as u32).collect()
                        }
                        TensorData::Numbers(values, DataType::UInt64) => {
                            contents.uint64_contents =
                                values.into_i64().into_iter().map(|v| v as u64).collect()
                        }
                        TensorData::Numbers(Values::F32(v), _) => contents.fp32_contents = v,
                        TensorData::Numbers(Values::F64(v), _) => contents.fp64_contents = v,
                        TensorData::Numbers(Values::I64(v), _) => contents.int64_contents = v,
                        TensorData::Numbers(Values::I32(v), _) => contents.int_contents = v,
                        TensorData::Text(v) => {
                            contents.bytes_contents =
                                v.into_iter().map(String::into_bytes).collect()
                        }
                    }
                    InferInputTensor {
                        name: tensor.name,
                        datatype,
                        shape: tensor.shape,
                        contents: Some(contents),
                    }
                })
                .collect();
            let request = ModelInferRequest {
                model_name: options.model_name.clone(),
                model_version: options.model_version.clone().unwrap_or_default(),
                id: key.to_string(),
                inputs,
                outputs: options
                    .output_names
                    .iter()
                    .map(|name| InferRequestedOutputTensor { name: name.clone() })
                    .collect(),
            };
            let response: ModelInferResponse = self
                .unary("ModelInfer", request, key)
                .await
                .map_err(|s| status_error(label, s))?;
            let raw = response.raw_output_contents;
            response
                .outputs
                .into_iter()
                .enumerate()
                .map(|(index, output)| {
                    let values = match raw.get(index) {
                        Some(bytes) => raw_values(&output.datatype, bytes),
                        None => typed_values(&output.datatype, output.contents.unwrap_or_default()),
                    }
                    .map_err(|e| {
                        CallError::malformed(format!(
                            "the answer of {label} has output {}: {e}",
                            output.name
                        ))
                    })?;
                    Ok(OutputTensor {
                        name: output.name,
                        shape: output.shape,
                        values,
                    })
                })
                .collect()
        }
    }

    fn typed_values(datatype: &str, contents: InferTensorContents) -> Result<ArrayRef, String> {
        Ok(match datatype {
            "BOOL" => Arc::new(BooleanArray::from(contents.bool_contents)),
            "INT8" | "INT16" | "INT32" => Arc::new(Int32Array::from(contents.int_contents)),
            "INT64" => Arc::new(Int64Array::from(contents.int64_contents)),
            "UINT8" | "UINT16" | "UINT32" => Arc::new(UInt32Array::from(contents.uint_contents)),
            "UINT64" => Arc::new(UInt64Array::from(contents.uint64_contents)),
            "FP32" | "FP16" => Arc::new(Float32Array::from(contents.fp32_contents)),
            "FP64" => Arc::new(Float64Array::from(contents.fp64_contents)),
            "BYTES" => Arc::new(StringArray::from(
                contents
                    .bytes_contents
                    .into_iter()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .collect::<Vec<_>>(),
            )),
            other => return Err(format!("datatype {other} is not one Riffle reads")),
        })
    }

    /// Little-endian values of `datatype`, as `raw_output_contents` holds them.
    fn raw_values(datatype: &str, bytes: &[u8]) -> Result<ArrayRef, String> {
        fn chunks<const N: usize>(
            bytes: &[u8],
        ) -> Result<impl Iterator<Item = [u8; N]> + '_, String> {
            if !bytes.len().is_multiple_of(N) {
                return Err(format!(
                    "{} bytes are not whole {N}-byte values",
                    bytes.len()
                ));
            }
            Ok(bytes
                .chunks_exact(N)
                .map(|c| <[u8; N]>::try_from(c).unwrap_or([0; N])))
        }
        Ok(match datatype {
            "BOOL" => Arc::new(BooleanArray::from(
                bytes.iter().map(|b| *b != 0).collect::<Vec<_>>(),
            )),
            "INT8" => Arc::new(Int32Array::from_iter_values(
                bytes.iter().map(|b| i32::from(*b as i8)),
            )),
            "UINT8" => Arc::new(Int32Array::from_iter_values(
                bytes.iter().map(|b| i32::from(*b)),
            )),
            "INT16" => Arc::new(Int32Array::from_iter_values(
                chunks::<2>(bytes)?.map(|c| i32::from(i16::from_le_bytes(c))),
            )),
            "UINT16" => Arc::new(Int32Array::from_iter_values(
                chunks::<2>(bytes)?.map(|c| i32::from(u16::from_le_bytes(c))),
            )),
            "UINT32" => Arc::new(UInt32Array::from_iter_values(
                chunks::<4>(bytes)?.map(u32::from_le_bytes),
            )),
            "UINT64" => Arc::new(UInt64Array::from_iter_values(
                chunks::<8>(bytes)?.map(u64::from_le_bytes),
            )),
            "FP16" => {
                let bits: Vec<u16> = chunks::<2>(bytes)?.map(u16::from_le_bytes).collect();
                let len = bits.len();
                let halves = datafusion::arrow::array::Float16Array::new(
                    datafusion::arrow::buffer::ScalarBuffer::new(
                        datafusion::arrow::buffer::Buffer::from_vec(bits),
                        0,
                        len,
                    ),
                    None,
                );
                datafusion::arrow::compute::cast(
                    &halves,
                    &datafusion::arrow::datatypes::DataType::Float32,
                )
                .map_err(|e| e.to_string())?
            }
            "BF16" => Arc::new(Float32Array::from_iter_values(
                chunks::<2>(bytes)?.map(|c| f32::from_bits(u32::from(u16::from_le_bytes(c)) << 16)),
            )),
            "BYTES" => {
                // Each element: a 4-byte little-endian length, then that many bytes.
                let mut texts = Vec::new();
                let mut rest = bytes;
                while !rest.is_empty() {
                    let (length, tail) = rest
                        .split_first_chunk::<4>()
                        .ok_or("a BYTES element's length is cut short")?;
                    let length = u32::from_le_bytes(*length) as usize;
                    let text = tail
                        .get(..length)
                        .ok_or("a BYTES element is shorter than its length says")?;
                    texts.push(String::from_utf8_lossy(text).into_owned());
                    rest = &tail[length..];
                }
                Arc::new(StringArray::from(texts))
            }
            "INT32" => Arc::new(Int32Array::from_iter_values(
                chunks::<4>(bytes)?.map(i32::from_le_bytes),
            )),
            "INT64" => Arc::new(Int64Array::from_iter_values(
                chunks::<8>(bytes)?.map(i64::from_le_bytes),
            )),
            "FP32" => Arc::new(Float32Array::from_iter_values(
                chunks::<4>(bytes)?.map(f32::from_le_bytes),
            )),
            "FP64" => Arc::new(Float64Array::from_iter_values(
                chunks::<8>(bytes)?.map(f64::from_le_bytes),
            )),
            other => return Err(format!("raw datatype {other} is not one Riffle reads")),
        })
    }
}
