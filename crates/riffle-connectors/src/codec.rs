//! Encoding the connectors' plan nodes and sinks, for job graphs sent as bytes.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use prost::Message;
use riffle_plan::{ConnectorCodec, Sink};

use crate::datagen::{DataGenExec, DataGenNode};
use crate::file_sink::{FileSink, FileSinkNode};
use crate::files::{FilesListExec, FilesListNode};

/// The first byte of an encoded scan: which connector's node follows.
const DATAGEN: u8 = 0;
const FILES: u8 = 1;

/// Encodes [`DataGenExec`] and [`FilesListExec`] scans and [`FileSink`]s; file scans are DataFusion's own and
/// need nothing from here.
#[derive(Debug, Default)]
pub struct ConnectorsCodec;

impl PhysicalExtensionCodec for ConnectorsCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !inputs.is_empty() {
            return Err(DataFusionError::Internal(
                "a connector scan has no inputs".into(),
            ));
        }
        let malformed = |e: prost::DecodeError| {
            DataFusionError::Internal(format!("malformed connector node: {e}"))
        };
        match buf.split_first() {
            Some((&DATAGEN, node)) => Ok(Arc::new(DataGenExec::from_node(
                DataGenNode::decode(node).map_err(malformed)?,
            )?)),
            Some((&FILES, node)) => Ok(Arc::new(FilesListExec::from_node(
                FilesListNode::decode(node).map_err(malformed)?,
            )?)),
            _ => Err(DataFusionError::Internal("unknown connector node".into())),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let encoded = if let Some(datagen) = node.downcast_ref::<DataGenExec>() {
            buf.push(DATAGEN);
            datagen.to_node()?.encode(buf)
        } else if let Some(files) = node.downcast_ref::<FilesListExec>() {
            buf.push(FILES);
            files.to_node().encode(buf)
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "{} cannot be sent to another process yet",
                node.name()
            )));
        };
        encoded.map_err(|e| DataFusionError::Internal(e.to_string()))
    }
}

impl ConnectorCodec for ConnectorsCodec {
    fn encode_sink(&self, sink: &Arc<dyn Sink>) -> Result<Vec<u8>> {
        let Some(file_sink) = sink.as_any().downcast_ref::<FileSink>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "the sink {} cannot be sent to another process",
                sink.describe()
            )));
        };
        Ok(file_sink.to_node()?.encode_to_vec())
    }

    fn decode_sink(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<dyn Sink>> {
        let node = FileSinkNode::decode(buf)
            .map_err(|e| DataFusionError::Internal(format!("malformed sink: {e}")))?;
        Ok(Arc::new(FileSink::from_node(node, ctx)?))
    }
}

/// What every connector scan node carries besides its own description: the columns it
/// projects, its limit, its partitions and its batch size.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct ScanShape {
    #[prost(uint64, repeated, tag = "1")]
    projection: Vec<u64>,
    /// Whether `projection` applies (an empty one projects no columns).
    #[prost(bool, tag = "2")]
    projected: bool,
    #[prost(uint64, optional, tag = "3")]
    limit: Option<u64>,
    #[prost(uint64, tag = "4")]
    partitions: u64,
    #[prost(uint64, tag = "5")]
    batch_size: u64,
}

impl ScanShape {
    pub(crate) fn new(
        projection: Option<&[usize]>,
        limit: Option<usize>,
        partitions: usize,
        batch_size: usize,
    ) -> Self {
        Self {
            projection: projection
                .iter()
                .flat_map(|p| p.iter())
                .map(|&c| c as u64)
                .collect(),
            projected: projection.is_some(),
            limit: limit.map(|l| l as u64),
            partitions: partitions as u64,
            batch_size: batch_size as u64,
        }
    }

    pub(crate) fn projection(&self) -> Option<Vec<usize>> {
        self.projected
            .then(|| self.projection.iter().map(|&c| c as usize).collect())
    }

    pub(crate) fn row_limit(&self) -> Option<usize> {
        self.limit.map(|l| l as usize)
    }

    pub(crate) fn partitions(&self) -> usize {
        (self.partitions as usize).max(1)
    }

    pub(crate) fn batch_size(&self) -> usize {
        self.batch_size as usize
    }
}
