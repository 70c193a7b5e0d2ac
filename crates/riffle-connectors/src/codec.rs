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
