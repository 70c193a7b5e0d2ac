//! The `datagen` connector: generated rows, bounded or unbounded, for tests, demos and
//! benchmarks (named and configured as Flink's).
//!
//! ```sql
//! CREATE TABLE clicks (id BIGINT, user_id INT, score DOUBLE, page VARCHAR)
//! WITH ('connector' = 'datagen', 'number-of-rows' = '1000000',
//!       'fields.user_id.min' = '1', 'fields.user_id.max' = '1000')
//! ```
//!
//! Options: `number-of-rows` (absent: unbounded), `rows-per-second` (pacing, per table),
//! `seed`, and per column `fields.<col>.kind` (`sequence` or `random`; integers default to
//! `sequence`, other types are random), `fields.<col>.min` / `.max` (numbers), and
//! `fields.<col>.length` (strings, default 10). The rows are deterministic for a seed: row
//! `i` has the same values whatever the parallelism.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::ScanShape;
use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int8Array, Int16Array,
    Int32Array, Int64Array, LargeStringArray, RecordBatch, StringArray, StringViewArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use riffle_common::RiffleError;
use riffle_plan::{Sink, TableDefinition, TableFactory, WriteMode};

/// Serves `'connector' = 'datagen'`.
#[derive(Debug, Default)]
pub struct DataGenFactory;

/// How one column is generated.
#[derive(Debug, Clone)]
enum FieldKind {
    Sequence { start: i64 },
    Random { min: f64, max: f64 },
    Text { length: usize },
}

/// What a table generates.
#[derive(Debug, Clone)]
struct DataGenSpec {
    schema: SchemaRef,
    fields: Vec<FieldKind>,
    rows: Option<u64>,
    rows_per_second: Option<f64>,
    seed: u64,
}

impl DataGenSpec {
    fn parse(definition: &TableDefinition) -> riffle_common::Result<Self> {
        if definition.schema.fields().is_empty() {
            return Err(RiffleError::user(format!(
                "table {}: the datagen connector needs declared columns",
                definition.name
            )));
        }
        let mut fields = Vec::new();
        for field in definition.schema.fields() {
            let name = field.name();
            let key = |suffix: &str| format!("fields.{name}.{suffix}");
            let kind = definition
                .options
                .get(&key("kind"))
                .map(|k| k.to_ascii_lowercase());
            let integer = field.data_type().is_integer();
            let text = matches!(
                field.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            let supported = integer
                || text
                || field.data_type().is_floating()
                || matches!(
                    field.data_type(),
                    DataType::Boolean | DataType::Date32 | DataType::Timestamp(_, _)
                );
            if !supported {
                return Err(RiffleError::user(format!(
                    "table {}: datagen cannot generate column {name} of type {}",
                    definition.name,
                    field.data_type()
                ))
                .with_hint(
                    "use integer, floating point, boolean, string, date or timestamp columns",
                ));
            }
            let kind = match kind.as_deref() {
                Some("sequence") if integer => FieldKind::Sequence {
                    start: definition.number(&key("start"))?.unwrap_or(0),
                },
                Some("sequence") => {
                    return Err(RiffleError::user(format!(
                        "table {}: 'sequence' needs an integer column, and {name} is {}",
                        definition.name,
                        field.data_type()
                    )));
                }
                None | Some("random") => {
                    if text {
                        FieldKind::Text {
                            length: definition.number(&key("length"))?.unwrap_or(10),
                        }
                    } else if integer && kind.is_none() {
                        FieldKind::Sequence {
                            start: definition.number(&key("start"))?.unwrap_or(0),
                        }
                    } else {
                        let default_max = if integer { 1000.0 } else { 1.0 };
                        FieldKind::Random {
                            min: definition.number(&key("min"))?.unwrap_or(0.0),
                            max: definition.number(&key("max"))?.unwrap_or(default_max),
                        }
                    }
                }
                Some(other) => {
                    return Err(RiffleError::user(format!(
                        "table {}: unknown kind '{other}' for column {name}",
                        definition.name
                    ))
                    .with_hint("use 'sequence' or 'random'"));
                }
            };
            fields.push(kind);
        }
        let rows_per_second: Option<f64> = definition.number("rows-per-second")?;
        if rows_per_second.is_some_and(|rate| rate <= 0.0) {
            return Err(RiffleError::user(format!(
                "table {}: 'rows-per-second' must be positive",
                definition.name
            )));
        }
        Ok(Self {
            schema: Arc::clone(&definition.schema),
            fields,
            rows: definition.number("number-of-rows")?,
            rows_per_second,
            seed: definition.number("seed")?.unwrap_or(42),
        })
    }
}

#[async_trait]
impl TableFactory for DataGenFactory {
    fn connector(&self) -> &str {
        "datagen"
    }

    async fn create_source(
        &self,
        definition: &TableDefinition,
        _session: &SessionState,
    ) -> riffle_common::Result<Arc<dyn TableProvider>> {
        Ok(Arc::new(DataGenTable {
            spec: DataGenSpec::parse(definition)?,
        }))
    }

    fn create_sink(
        &self,
        definition: &TableDefinition,
        _session: &SessionState,
        _mode: WriteMode,
    ) -> riffle_common::Result<Arc<dyn Sink>> {
        Err(RiffleError::user(format!(
            "cannot insert into {}: the datagen connector only generates rows",
            definition.name
        )))
    }
}

#[derive(Debug)]
struct DataGenTable {
    spec: DataGenSpec,
}

#[async_trait]
impl TableProvider for DataGenTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.spec.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let partitions = state.config().target_partitions().max(1);
        Ok(Arc::new(DataGenExec::new(
            self.spec.clone(),
            projection.cloned(),
            limit,
            partitions,
            state.config().batch_size(),
        )))
    }
}

/// Generates rows in parallel: partition `p` of `n` generates rows `p, p + n, p + 2n, ...`
/// in batches.
#[derive(Debug)]
pub struct DataGenExec {
    spec: DataGenSpec,
    projection: Option<Vec<usize>>,
    limit: Option<usize>,
    batch_size: usize,
    properties: Arc<PlanProperties>,
}

impl DataGenExec {
    fn new(
        spec: DataGenSpec,
        projection: Option<Vec<usize>>,
        limit: Option<usize>,
        partitions: usize,
        batch_size: usize,
    ) -> Self {
        let schema = match &projection {
            Some(columns) => Arc::new(
                spec.schema
                    .project(columns)
                    .unwrap_or_else(|_| spec.schema.as_ref().clone()),
            ),
            None => Arc::clone(&spec.schema),
        };
        let bounded = spec.rows.is_some() || limit.is_some();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            if bounded {
                Boundedness::Bounded
            } else {
                Boundedness::Unbounded {
                    requires_infinite_memory: false,
                }
            },
        );
        Self {
            spec,
            projection,
            limit,
            batch_size: batch_size.max(1),
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for DataGenExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self.spec.rows {
            Some(rows) => write!(f, "DataGenExec: rows={rows}"),
            None => write!(f, "DataGenExec: unbounded"),
        }
    }
}

impl ExecutionPlan for DataGenExec {
    riffle_plan::leaf_plan_node!("DataGenExec");

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let partitions = self.properties.partitioning.partition_count() as u64;
        // A restored partition starts after the rows it emitted: row i of the partition is
        // row partition + i * partitions of the table, so there is nothing to read again.
        let start = context
            .session_config()
            .get_extension::<riffle_plan::SourceStart>()
            .and_then(|start| {
                let position = start.position_for(partition)?;
                start.honor();
                Some(position)
            })
            .unwrap_or(0);
        let pace = self
            .spec
            .rows_per_second
            .map(|rate| rate / partitions as f64);
        // A paced source emits about ten batches a second, so that rows arrive steadily
        // rather than a full batch at a time.
        let batch_size = match pace {
            Some(rate) => ((rate / 10.0).ceil() as u64).clamp(1, self.batch_size as u64),
            None => self.batch_size as u64,
        };
        let schema = self.schema();
        let state = Generator {
            spec: self.spec.clone(),
            columns: match &self.projection {
                Some(columns) => columns.clone(),
                None => (0..self.spec.fields.len()).collect(),
            },
            schema: Arc::clone(&schema),
            next_row: partition as u64 + start.saturating_mul(partitions),
            step: partitions,
            // A limit applies per partition; the plan's limit trims the rest.
            budget: self.limit.map(|l| (l as u64).saturating_sub(start)),
            batch_size,
            pace,
            started: Instant::now(),
            produced: 0,
        };
        let stream = futures::stream::unfold(state, |mut state| async move {
            let rows = state.next_rows();
            if rows.is_empty() {
                return None;
            }
            let batch = generate(&state.spec, &state.schema, &state.columns, &rows);
            if let Some(wait) = state.wait() {
                tokio::time::sleep(wait).await;
            }
            Some((batch, state))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// One partition's progress through its rows: every `step`-th row from its first, up to the
/// table's total and the scan's limit.
struct Generator {
    spec: DataGenSpec,
    columns: Vec<usize>,
    schema: SchemaRef,
    next_row: u64,
    step: u64,
    budget: Option<u64>,
    batch_size: u64,
    pace: Option<f64>,
    started: Instant,
    produced: u64,
}

impl Generator {
    /// The row numbers of the next batch; empty at the end.
    fn next_rows(&mut self) -> Vec<u64> {
        let mut rows = Vec::with_capacity(self.batch_size as usize);
        while (rows.len() as u64) < self.batch_size
            && self.spec.rows.is_none_or(|total| self.next_row < total)
            && self.budget != Some(0)
        {
            rows.push(self.next_row);
            self.next_row += self.step;
            if let Some(budget) = self.budget.as_mut() {
                *budget -= 1;
            }
        }
        self.produced += rows.len() as u64;
        rows
    }

    /// How long to wait before handing out what was produced, to keep to the pace.
    fn wait(&self) -> Option<Duration> {
        let rate = self.pace?;
        let due = Duration::from_secs_f64(self.produced as f64 / rate);
        Some(due.saturating_sub(self.started.elapsed())).filter(|w| !w.is_zero())
    }
}

/// A fast deterministic hash of (seed, column, row), so that a row's values do not depend on
/// which partition generates it.
fn mix(seed: u64, column: usize, row: u64) -> u64 {
    let mut x = seed
        ^ (column as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ row.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn unit(seed: u64, column: usize, row: u64) -> f64 {
    (mix(seed, column, row) >> 11) as f64 / (1u64 << 53) as f64
}

fn generate(
    spec: &DataGenSpec,
    schema: &SchemaRef,
    columns: &[usize],
    rows: &[u64],
) -> Result<RecordBatch> {
    let arrays = columns
        .iter()
        .map(|&column| generate_column(spec, column, rows))
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), arrays)?)
}

fn generate_column(spec: &DataGenSpec, column: usize, rows: &[u64]) -> Result<ArrayRef> {
    let data_type = spec.schema.field(column).data_type();
    let seed = spec.seed;
    let integer = |row: u64| -> i64 {
        match &spec.fields[column] {
            FieldKind::Sequence { start } => start.wrapping_add(row as i64),
            FieldKind::Random { min, max } => (min + unit(seed, column, row) * (max - min + 1.0))
                .floor()
                .min(*max) as i64,
            FieldKind::Text { .. } => row as i64,
        }
    };
    let float = |row: u64| -> f64 {
        match &spec.fields[column] {
            FieldKind::Random { min, max } => min + unit(seed, column, row) * (max - min),
            _ => unit(seed, column, row),
        }
    };
    let now_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    macro_rules! ints {
        ($array:ty, $native:ty) => {
            Arc::new(<$array>::from_iter_values(
                rows.iter().map(|&r| integer(r) as $native),
            )) as ArrayRef
        };
    }
    Ok(match data_type {
        DataType::Int8 => ints!(Int8Array, i8),
        DataType::Int16 => ints!(Int16Array, i16),
        DataType::Int32 => ints!(Int32Array, i32),
        DataType::Int64 => ints!(Int64Array, i64),
        DataType::UInt8 => ints!(UInt8Array, u8),
        DataType::UInt16 => ints!(UInt16Array, u16),
        DataType::UInt32 => ints!(UInt32Array, u32),
        DataType::UInt64 => ints!(UInt64Array, u64),
        DataType::Float32 => Arc::new(Float32Array::from_iter_values(
            rows.iter().map(|&r| float(r) as f32),
        )),
        DataType::Float64 => Arc::new(Float64Array::from_iter_values(
            rows.iter().map(|&r| float(r)),
        )),
        DataType::Boolean => Arc::new(BooleanArray::from_iter(
            rows.iter().map(|&r| Some(mix(seed, column, r) & 1 == 1)),
        )),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let length = match &spec.fields[column] {
                FieldKind::Text { length } => *length,
                _ => 10,
            };
            let strings = rows.iter().map(|&r| random_text(seed, column, r, length));
            match data_type {
                DataType::Utf8 => Arc::new(StringArray::from_iter_values(strings)),
                DataType::LargeUtf8 => Arc::new(LargeStringArray::from_iter_values(strings)),
                _ => Arc::new(StringViewArray::from_iter_values(strings)),
            }
        }
        DataType::Date32 => Arc::new(Date32Array::from_iter_values(
            rows.iter().map(|_| (now_millis / 86_400_000) as i32),
        )),
        DataType::Timestamp(unit, zone) => {
            let values = rows.iter().map(|_| now_millis);
            let zone = zone.clone();
            match unit {
                TimeUnit::Second => Arc::new(
                    TimestampSecondArray::from_iter_values(values.map(|v| v / 1000))
                        .with_timezone_opt(zone),
                ),
                TimeUnit::Millisecond => Arc::new(
                    TimestampMillisecondArray::from_iter_values(values).with_timezone_opt(zone),
                ),
                TimeUnit::Microsecond => Arc::new(
                    TimestampMicrosecondArray::from_iter_values(values.map(|v| v * 1000))
                        .with_timezone_opt(zone),
                ),
                TimeUnit::Nanosecond => Arc::new(
                    TimestampNanosecondArray::from_iter_values(values.map(|v| v * 1_000_000))
                        .with_timezone_opt(zone),
                ),
            }
        }
        other => {
            return Err(DataFusionError::Internal(format!(
                "datagen: unsupported type {other}"
            )));
        }
    })
}

fn random_text(seed: u64, column: usize, row: u64, length: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..length)
        .map(|i| {
            let index = mix(seed ^ i as u64, column, row) % ALPHABET.len() as u64;
            ALPHABET[index as usize] as char
        })
        .collect()
}

/// The wire form of a [`DataGenExec`].
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct DataGenNode {
    #[prost(bytes = "vec", tag = "1")]
    schema: Vec<u8>,
    /// Per column: 0 sequence (`a` = start), 1 random (`a` = min, `b` = max), 2 text (`a` =
    /// length).
    #[prost(message, repeated, tag = "2")]
    fields: Vec<FieldNode>,
    #[prost(uint64, optional, tag = "3")]
    rows: Option<u64>,
    #[prost(double, optional, tag = "4")]
    rows_per_second: Option<f64>,
    #[prost(uint64, tag = "5")]
    seed: u64,
    #[prost(message, optional, tag = "6")]
    shape: Option<ScanShape>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FieldNode {
    #[prost(uint32, tag = "1")]
    kind: u32,
    #[prost(double, tag = "2")]
    a: f64,
    #[prost(double, tag = "3")]
    b: f64,
}

impl DataGenExec {
    pub(crate) fn to_node(&self) -> Result<DataGenNode> {
        let schema: datafusion_proto::protobuf::Schema = self
            .spec
            .schema
            .as_ref()
            .try_into()
            .map_err(|e| DataFusionError::Internal(format!("cannot encode a schema: {e}")))?;
        let fields = self
            .spec
            .fields
            .iter()
            .map(|field| match field {
                FieldKind::Sequence { start } => FieldNode {
                    kind: 0,
                    a: *start as f64,
                    b: 0.0,
                },
                FieldKind::Random { min, max } => FieldNode {
                    kind: 1,
                    a: *min,
                    b: *max,
                },
                FieldKind::Text { length } => FieldNode {
                    kind: 2,
                    a: *length as f64,
                    b: 0.0,
                },
            })
            .collect();
        Ok(DataGenNode {
            schema: prost::Message::encode_to_vec(&schema),
            fields,
            rows: self.spec.rows,
            rows_per_second: self.spec.rows_per_second,
            seed: self.spec.seed,
            shape: Some(ScanShape::new(
                self.projection.as_deref(),
                self.limit,
                self.properties.partitioning.partition_count(),
                self.batch_size,
            )),
        })
    }

    pub(crate) fn from_node(node: DataGenNode) -> Result<Self> {
        let schema =
            <datafusion_proto::protobuf::Schema as prost::Message>::decode(node.schema.as_slice())
                .map_err(|e| DataFusionError::Internal(format!("malformed datagen node: {e}")))?;
        let schema = datafusion::arrow::datatypes::Schema::try_from(&schema)
            .map_err(|e| DataFusionError::Internal(format!("cannot decode a schema: {e}")))?;
        let fields = node
            .fields
            .iter()
            .map(|field| match field.kind {
                0 => Ok(FieldKind::Sequence {
                    start: field.a as i64,
                }),
                1 => Ok(FieldKind::Random {
                    min: field.a,
                    max: field.b,
                }),
                2 => Ok(FieldKind::Text {
                    length: field.a as usize,
                }),
                other => Err(DataFusionError::Internal(format!(
                    "unknown datagen field kind {other}"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        let spec = DataGenSpec {
            schema: Arc::new(schema),
            fields,
            rows: node.rows,
            rows_per_second: node.rows_per_second,
            seed: node.seed,
        };
        let shape = node.shape.unwrap_or_default();
        Ok(Self::new(
            spec,
            shape.projection(),
            shape.row_limit(),
            shape.partitions(),
            shape.batch_size(),
        ))
    }
}
