//! Job graphs as bytes: what a coordinator sends to the workers that run them.
//!
//! Fragments travel as DataFusion's protobuf plans (`datafusion-proto`), hash-partitioning
//! keys as protobuf physical expressions, and the graph's shape as a small protobuf message
//! of its own. Riffle's own plan nodes are encoded here ([`RiffleCodec`]); nodes and sinks
//! of the connectors are encoded by the codecs the connectors provide ([`ConnectorCodec`]).
//!
//! A sink is rebuilt from its description on the receiving side; the object stores it
//! writes to must be registered in the receiving runtime (credentials do not travel).

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};
use datafusion_proto::bytes::{
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use datafusion_proto::physical_plan::PhysicalProtoConverterExtension;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use datafusion_proto::protobuf;
use prost::Message;

use datafusion::physical_expr::async_scalar_function::AsyncFuncExpr;

use crate::async_batches::AsyncBatchExec;
use crate::batch_rows::BatchRowsExec;
use crate::builder::{ChainOptions, vertex_kind};
use crate::exchange::ExchangeReadExec;
use crate::fixed_parallelism::FixedParallelismExec;
use crate::job_graph::{Edge, EdgePartitioning, JobGraph, Vertex, VertexKind};
use crate::ml_predict::{MlPredictExec, ModelDefinition};
use crate::scan_context::ScanContextExec;
use crate::sink::{Sink, SinkExec};
use crate::skip_corrupt::SkipCorruptFilesExec;

/// Encodes what connectors add to plans: their scan nodes and their sinks.
pub trait ConnectorCodec: PhysicalExtensionCodec {
    /// Describes a sink so that [`ConnectorCodec::decode_sink`] can rebuild it.
    fn encode_sink(&self, sink: &Arc<dyn Sink>) -> Result<Vec<u8>>;

    /// Rebuilds a sink in the receiving runtime.
    fn decode_sink(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<dyn Sink>>;
}

/// Encodes Riffle's plan nodes, and hands the connectors' nodes to their codec.
#[derive(Debug, Clone)]
pub struct RiffleCodec {
    connectors: Arc<dyn ConnectorCodec>,
}

impl RiffleCodec {
    /// A codec that encodes connector nodes and sinks with `connectors`.
    pub fn new(connectors: Arc<dyn ConnectorCodec>) -> Self {
        Self { connectors }
    }
}

/// The first byte of an encoded extension node: which node it is.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Node {
    ExchangeRead = 1,
    Sink = 2,
    ScanContext = 3,
    FixedParallelism = 4,
    Connector = 5,
    AsyncBatch = 6,
    SkipCorrupt = 7,
    MlPredict = 8,
    BatchRows = 9,
}

/// An `MlPredictExec`: the model as the catalog had it, the call's columns and options.
#[derive(Clone, PartialEq, Message)]
struct MlPredictMessage {
    #[prost(string, tag = "1")]
    model: String,
    #[prost(bytes = "vec", tag = "2")]
    input: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    output: Vec<u8>,
    /// The model's options, as JSON.
    #[prost(string, tag = "4")]
    options: String,
    #[prost(string, repeated, tag = "5")]
    descriptor: Vec<String>,
    /// The call's options, as JSON.
    #[prost(string, tag = "6")]
    call_options: String,
    /// The fallback model, when there is one (an empty name when not).
    #[prost(string, tag = "7")]
    fallback_model: String,
    #[prost(bytes = "vec", tag = "8")]
    fallback_input: Vec<u8>,
    #[prost(bytes = "vec", tag = "9")]
    fallback_output: Vec<u8>,
    #[prost(string, tag = "10")]
    fallback_options: String,
}

fn options_json(options: &std::collections::BTreeMap<String, String>) -> Result<String> {
    serde_json::to_string(options).map_err(|e| DataFusionError::Internal(e.to_string()))
}

fn options_from_json(text: &str) -> Result<std::collections::BTreeMap<String, String>> {
    serde_json::from_str(text).map_err(|e| DataFusionError::Internal(e.to_string()))
}

#[derive(Clone, PartialEq, Message)]
struct AsyncBatchNode {
    #[prost(message, repeated, tag = "1")]
    exprs: Vec<protobuf::PhysicalExprNode>,
    #[prost(string, repeated, tag = "2")]
    names: Vec<String>,
    #[prost(uint64, tag = "3")]
    rows: u64,
}

#[derive(Clone, PartialEq, Message)]
struct ExchangeReadNode {
    #[prost(uint64, tag = "1")]
    vertex: u64,
    #[prost(uint64, tag = "2")]
    input: u64,
    #[prost(uint64, tag = "3")]
    partitions: u64,
    #[prost(bytes = "vec", tag = "4")]
    schema: Vec<u8>,
    #[prost(bool, tag = "5")]
    unbounded: bool,
}

#[derive(Clone, PartialEq, Message)]
struct FileList {
    #[prost(string, repeated, tag = "1")]
    files: Vec<String>,
}

#[derive(Clone, PartialEq, Message)]
struct ScanContextNode {
    #[prost(message, repeated, tag = "1")]
    partitions: Vec<FileList>,
}

/// A `BatchRowsExec`: its input's list column.
#[derive(Clone, PartialEq, Message)]
struct BatchRowsNode {
    #[prost(uint64, tag = "1")]
    column: u64,
}

#[derive(Clone, PartialEq, Message)]
struct FixedParallelismNode {
    #[prost(uint64, tag = "1")]
    readers: u64,
}

fn encode_schema(schema: &Schema) -> Result<Vec<u8>> {
    let proto: protobuf::Schema = schema
        .try_into()
        .map_err(|e| DataFusionError::Internal(format!("cannot encode a schema: {e}")))?;
    Ok(proto.encode_to_vec())
}

fn decode_schema(bytes: &[u8]) -> Result<SchemaRef> {
    let proto = protobuf::Schema::decode(bytes).map_err(decode_error)?;
    let schema = Schema::try_from(&proto)
        .map_err(|e| DataFusionError::Internal(format!("cannot decode a schema: {e}")))?;
    Ok(Arc::new(schema))
}

fn decode_error(error: prost::DecodeError) -> DataFusionError {
    DataFusionError::Internal(format!("malformed job graph: {error}"))
}

fn one_input(inputs: &[Arc<dyn ExecutionPlan>], node: &str) -> Result<Arc<dyn ExecutionPlan>> {
    match inputs {
        [input] => Ok(Arc::clone(input)),
        _ => Err(DataFusionError::Internal(format!(
            "{node} needs one input, the encoded plan has {}",
            inputs.len()
        ))),
    }
}

impl PhysicalExtensionCodec for RiffleCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (&tag, body) = buf
            .split_first()
            .ok_or_else(|| DataFusionError::Internal("empty extension node".into()))?;
        let plan: Arc<dyn ExecutionPlan> = match tag {
            t if t == Node::ExchangeRead as u8 => {
                let node = ExchangeReadNode::decode(body).map_err(decode_error)?;
                let partitioning = Partitioning::UnknownPartitioning(node.partitions as usize);
                let properties = PlanProperties::new(
                    EquivalenceProperties::new(decode_schema(&node.schema)?),
                    partitioning.clone(),
                    EmissionType::Incremental,
                    if node.unbounded {
                        Boundedness::Unbounded {
                            requires_infinite_memory: false,
                        }
                    } else {
                        Boundedness::Bounded
                    },
                );
                Arc::new(ExchangeReadExec::new(
                    node.vertex as usize,
                    node.input as usize,
                    &properties,
                    partitioning,
                ))
            }
            t if t == Node::Sink as u8 => {
                let sink = self.connectors.decode_sink(body, ctx)?;
                Arc::new(SinkExec::new(one_input(inputs, "SinkExec")?, sink))
            }
            t if t == Node::ScanContext as u8 => {
                let node = ScanContextNode::decode(body).map_err(decode_error)?;
                let files = node.partitions.into_iter().map(|p| p.files).collect();
                Arc::new(ScanContextExec::new(
                    one_input(inputs, "ScanContextExec")?,
                    files,
                ))
            }
            t if t == Node::FixedParallelism as u8 => {
                let node = FixedParallelismNode::decode(body).map_err(decode_error)?;
                Arc::new(FixedParallelismExec::new(
                    one_input(inputs, "FixedParallelismExec")?,
                    node.readers as usize,
                    ctx.session_config().options(),
                )?)
            }
            t if t == Node::BatchRows as u8 => {
                let node = BatchRowsNode::decode(body).map_err(decode_error)?;
                Arc::new(BatchRowsExec::try_new(
                    one_input(inputs, "BatchRowsExec")?,
                    node.column as usize,
                )?)
            }
            t if t == Node::AsyncBatch as u8 => {
                let node = AsyncBatchNode::decode(body).map_err(decode_error)?;
                let input = one_input(inputs, "AsyncBatchExec")?;
                let schema = input.schema();
                let exprs = node
                    .exprs
                    .iter()
                    .zip(&node.names)
                    .map(|(expr, name)| {
                        let func = parse_physical_expr(expr, ctx, &schema, self)?;
                        Ok(Arc::new(AsyncFuncExpr::try_new(
                            name.clone(),
                            func,
                            &schema,
                        )?))
                    })
                    .collect::<Result<Vec<_>>>()?;
                Arc::new(AsyncBatchExec::new(exprs, input, node.rows as usize)?)
            }
            t if t == Node::MlPredict as u8 => {
                let node = MlPredictMessage::decode(body).map_err(decode_error)?;
                let fallback = if node.fallback_model.is_empty() {
                    None
                } else {
                    Some(Box::new(ModelDefinition {
                        name: node.fallback_model,
                        input: decode_schema(&node.fallback_input)?,
                        output: decode_schema(&node.fallback_output)?,
                        options: options_from_json(&node.fallback_options)?,
                        fallback: None,
                    }))
                };
                let model = ModelDefinition {
                    name: node.model,
                    input: decode_schema(&node.input)?,
                    output: decode_schema(&node.output)?,
                    options: options_from_json(&node.options)?,
                    fallback,
                };
                Arc::new(MlPredictExec::try_new(
                    one_input(inputs, "MlPredictExec")?,
                    model,
                    node.descriptor,
                    options_from_json(&node.call_options)?,
                )?)
            }
            t if t == Node::SkipCorrupt as u8 => Arc::new(SkipCorruptFilesExec::new(one_input(
                inputs,
                "SkipCorruptFilesExec",
            )?)),
            t if t == Node::Connector as u8 => {
                return self
                    .connectors
                    .try_decode(body, inputs, ctx, proto_converter);
            }
            other => {
                return Err(DataFusionError::Internal(format!(
                    "unknown extension node kind {other} in a job graph"
                )));
            }
        };
        Ok(plan)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        if let Some(read) = node.downcast_ref::<ExchangeReadExec>() {
            buf.push(Node::ExchangeRead as u8);
            let message = ExchangeReadNode {
                vertex: read.vertex() as u64,
                input: read.input() as u64,
                partitions: read.properties().partitioning.partition_count() as u64,
                schema: encode_schema(read.schema().as_ref())?,
                unbounded: read.properties().boundedness.is_unbounded(),
            };
            message
                .encode(buf)
                .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        } else if let Some(sink) = node.downcast_ref::<SinkExec>() {
            buf.push(Node::Sink as u8);
            buf.extend(self.connectors.encode_sink(sink.sink())?);
        } else if let Some(scan) = node.downcast_ref::<ScanContextExec>() {
            buf.push(Node::ScanContext as u8);
            let message = ScanContextNode {
                partitions: scan
                    .files()
                    .iter()
                    .map(|files| FileList {
                        files: files.clone(),
                    })
                    .collect(),
            };
            message
                .encode(buf)
                .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        } else if let Some(fixed) = node.downcast_ref::<FixedParallelismExec>() {
            buf.push(Node::FixedParallelism as u8);
            let message = FixedParallelismNode {
                readers: fixed.readers() as u64,
            };
            message
                .encode(buf)
                .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        } else if let Some(predict) = node.downcast_ref::<MlPredictExec>() {
            buf.push(Node::MlPredict as u8);
            let model = predict.model();
            let message = MlPredictMessage {
                model: model.name.clone(),
                input: encode_schema(&model.input)?,
                output: encode_schema(&model.output)?,
                options: options_json(&model.options)?,
                descriptor: predict.descriptor().to_vec(),
                call_options: options_json(predict.call_options())?,
                fallback_model: model
                    .fallback
                    .as_ref()
                    .map_or(String::new(), |f| f.name.clone()),
                fallback_input: match &model.fallback {
                    Some(f) => encode_schema(&f.input)?,
                    None => Vec::new(),
                },
                fallback_output: match &model.fallback {
                    Some(f) => encode_schema(&f.output)?,
                    None => Vec::new(),
                },
                fallback_options: match &model.fallback {
                    Some(f) => options_json(&f.options)?,
                    None => String::new(),
                },
            };
            message
                .encode(buf)
                .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        } else if let Some(rows) = node.downcast_ref::<BatchRowsExec>() {
            buf.push(Node::BatchRows as u8);
            let message = BatchRowsNode {
                column: rows.column() as u64,
            };
            message
                .encode(buf)
                .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        } else if node.downcast_ref::<SkipCorruptFilesExec>().is_some() {
            buf.push(Node::SkipCorrupt as u8);
        } else if let Some(batches) = node.downcast_ref::<AsyncBatchExec>() {
            buf.push(Node::AsyncBatch as u8);
            let message = AsyncBatchNode {
                exprs: batches
                    .exprs()
                    .iter()
                    .map(|expr| serialize_physical_expr(&expr.func, self))
                    .collect::<Result<Vec<_>>>()?,
                names: batches
                    .exprs()
                    .iter()
                    .map(|e| e.name().to_string())
                    .collect(),
                rows: batches.rows() as u64,
            };
            message
                .encode(buf)
                .map_err(|e| DataFusionError::Internal(e.to_string()))?;
        } else {
            buf.push(Node::Connector as u8);
            self.connectors.try_encode(node, buf, proto_converter)?;
        }
        Ok(())
    }
}

#[derive(Clone, PartialEq, Message)]
struct GraphMessage {
    #[prost(message, repeated, tag = "1")]
    vertices: Vec<VertexMessage>,
    #[prost(message, repeated, tag = "2")]
    edges: Vec<EdgeMessage>,
}

#[derive(Clone, PartialEq, Message)]
struct VertexMessage {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(uint64, tag = "3")]
    parallelism: u64,
    #[prost(bytes = "vec", tag = "4")]
    fragment: Vec<u8>,
    /// Rows per coalesced batch when the vertex is a chain (rebuilt from the fragment on
    /// decode); absent for a fragment vertex.
    #[prost(uint64, optional, tag = "5")]
    chain_batch_rows: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct EdgeMessage {
    #[prost(uint64, tag = "1")]
    from: u64,
    #[prost(uint64, tag = "2")]
    to: u64,
    #[prost(uint64, tag = "3")]
    input: u64,
    #[prost(uint64, tag = "4")]
    partitions: u64,
    /// FORWARD, RESCALE, REBALANCE, HASH or BROADCAST.
    #[prost(string, tag = "5")]
    partitioning: String,
    #[prost(message, repeated, tag = "6")]
    keys: Vec<protobuf::PhysicalExprNode>,
}

/// The coalescing target a chain vertex was planned with; `None` for a fragment vertex.
fn chain_batch_rows(kind: &VertexKind) -> Option<u64> {
    match kind {
        VertexKind::Chain(chain) => Some(chain.batch_rows as u64),
        VertexKind::Fragment { .. } => None,
    }
}

impl JobGraph {
    /// Encodes the graph: its shape, every fragment and every partitioning key.
    pub fn encode(&self, codec: &RiffleCodec) -> Result<Vec<u8>> {
        let mut vertices = Vec::with_capacity(self.vertices.len());
        for vertex in &self.vertices {
            let fragment =
                physical_plan_to_bytes_with_extension_codec(Arc::clone(&vertex.fragment), codec)?;
            vertices.push(VertexMessage {
                id: vertex.id as u64,
                name: vertex.name.clone(),
                parallelism: vertex.parallelism as u64,
                fragment: fragment.to_vec(),
                chain_batch_rows: chain_batch_rows(&vertex.kind),
            });
        }
        let mut edges = Vec::with_capacity(self.edges.len());
        for edge in &self.edges {
            let (partitioning, keys) = match &edge.partitioning {
                EdgePartitioning::Forward => ("FORWARD", Vec::new()),
                EdgePartitioning::Rescale => ("RESCALE", Vec::new()),
                EdgePartitioning::Rebalance => ("REBALANCE", Vec::new()),
                EdgePartitioning::Broadcast => ("BROADCAST", Vec::new()),
                EdgePartitioning::Hash(keys) => (
                    "HASH",
                    keys.iter()
                        .map(|key| serialize_physical_expr(key, codec))
                        .collect::<Result<Vec<_>>>()?,
                ),
            };
            edges.push(EdgeMessage {
                from: edge.from as u64,
                to: edge.to as u64,
                input: edge.input as u64,
                partitions: edge.partitions as u64,
                partitioning: partitioning.to_string(),
                keys,
            });
        }
        Ok(GraphMessage { vertices, edges }.encode_to_vec())
    }

    /// Decodes a graph encoded by [`JobGraph::encode`], resolving functions, object stores
    /// and sinks in `ctx`.
    pub fn decode(bytes: &[u8], ctx: &TaskContext, codec: &RiffleCodec) -> Result<JobGraph> {
        let message = GraphMessage::decode(bytes).map_err(decode_error)?;
        let mut graph = JobGraph::default();
        for vertex in message.vertices {
            let fragment =
                physical_plan_from_bytes_with_extension_codec(&vertex.fragment, ctx, codec)?;
            fragment.apply(|node| {
                if let Some(sink) = node.downcast_ref::<SinkExec>() {
                    graph.sinks.push(Arc::clone(sink.sink()));
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
            let chains = ChainOptions {
                enabled: vertex.chain_batch_rows.is_some(),
                batch_rows: vertex.chain_batch_rows.unwrap_or_default() as usize,
            };
            let kind = vertex_kind(&fragment, chains);
            if chains.enabled && !kind.is_chain() {
                return Err(DataFusionError::Internal(format!(
                    "vertex {} was planned as a chain but decodes as a fragment",
                    vertex.id
                )));
            }
            graph.vertices.push(Vertex {
                id: vertex.id as usize,
                name: vertex.name,
                parallelism: vertex.parallelism as usize,
                fragment,
                kind,
            });
        }
        for edge in message.edges {
            let partitioning = match edge.partitioning.as_str() {
                "FORWARD" => EdgePartitioning::Forward,
                "RESCALE" => EdgePartitioning::Rescale,
                "REBALANCE" => EdgePartitioning::Rebalance,
                "BROADCAST" => EdgePartitioning::Broadcast,
                "HASH" => {
                    let producer = graph.vertices.get(edge.from as usize).ok_or_else(|| {
                        DataFusionError::Internal(format!("edge from unknown vertex {}", edge.from))
                    })?;
                    let schema = producer.fragment.schema();
                    EdgePartitioning::Hash(
                        edge.keys
                            .iter()
                            .map(|key| parse_physical_expr(key, ctx, &schema, codec))
                            .collect::<Result<Vec<_>>>()?,
                    )
                }
                other => {
                    return Err(DataFusionError::Internal(format!(
                        "unknown edge partitioning {other} in a job graph"
                    )));
                }
            };
            graph.edges.push(Edge {
                from: edge.from as usize,
                to: edge.to as usize,
                input: edge.input as usize,
                partitions: edge.partitions as usize,
                partitioning,
            });
        }
        graph.check().map_err(DataFusionError::Internal)?;
        Ok(graph)
    }
}
