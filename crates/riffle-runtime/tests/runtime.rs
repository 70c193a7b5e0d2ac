//! The runtime through its API: hand-built job graphs with test sources and sinks.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::expressions::{binary, col, lit};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions,
};
use futures::StreamExt;
use riffle_common::JobConfig;
use riffle_plan::{
    Edge, EdgePartitioning, ExchangeReadExec, JobGraph, Sink, SinkExec, Vertex, VertexKind,
    plan_chain,
};
use riffle_runtime::LocalExecutor;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]))
}

/// Emits batches of `rows` rows whose `k` counts up from `partition * 1_000_000`;
/// `batches: None` never ends. Fails with "source broke" after `fail_after` batches.
#[derive(Debug)]
struct TestSource {
    batches: Option<usize>,
    rows: usize,
    fail_after: Option<usize>,
    produced: Arc<AtomicUsize>,
    properties: Arc<PlanProperties>,
}

impl TestSource {
    fn new(partitions: usize, batches: Option<usize>, rows: usize) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            if batches.is_some() {
                Boundedness::Bounded
            } else {
                Boundedness::Unbounded {
                    requires_infinite_memory: false,
                }
            },
        );
        Self {
            batches,
            rows,
            fail_after: None,
            produced: Arc::new(AtomicUsize::new(0)),
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for TestSource {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "TestSource")
    }
}

impl ExecutionPlan for TestSource {
    riffle_plan::plan_node_defaults!();

    fn name(&self) -> &str {
        "TestSource"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }
    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }
    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (limit, rows, fail_after) = (self.batches, self.rows, self.fail_after);
        let produced = Arc::clone(&self.produced);
        let stream = futures::stream::unfold(0usize, move |index| {
            let produced = Arc::clone(&produced);
            async move {
                if limit.is_some_and(|limit| index >= limit) {
                    return None;
                }
                tokio::task::yield_now().await;
                if fail_after == Some(index) && partition == 0 {
                    return Some((
                        Err(DataFusionError::Execution("source broke".into())),
                        index + 1,
                    ));
                }
                let start = (partition * 1_000_000 + index * rows) as i64;
                let values = Int64Array::from_iter_values(start..start + rows as i64);
                produced.fetch_add(1, Ordering::SeqCst);
                Some((
                    RecordBatch::try_new(schema(), vec![Arc::new(values)]).map_err(Into::into),
                    index + 1,
                ))
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema(), stream)))
    }
}

/// Records what each partition received; optionally slow.
#[derive(Debug, Default)]
struct RecordingSink {
    delay: Option<Duration>,
    received: Mutex<HashMap<usize, Vec<i64>>>,
    batches: AtomicUsize,
    /// The largest gap seen between batches produced and batches received.
    max_lag: AtomicUsize,
    produced: Option<Arc<AtomicUsize>>,
    committed: AtomicUsize,
    aborted: AtomicUsize,
}

#[async_trait]
impl Sink for RecordingSink {
    fn describe(&self) -> String {
        "recording sink".into()
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn write(
        &self,
        partition: usize,
        mut input: SendableRecordBatchStream,
        _c: Arc<TaskContext>,
    ) -> Result<u64> {
        let mut rows = 0;
        while let Some(batch) = input.next().await {
            let batch = batch?;
            let seen = self.batches.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(produced) = &self.produced {
                let lag = produced.load(Ordering::SeqCst).saturating_sub(seen);
                self.max_lag.fetch_max(lag, Ordering::SeqCst);
            }
            let values = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            self.received
                .lock()
                .unwrap()
                .entry(partition)
                .or_default()
                .extend(values.values().iter());
            rows += batch.num_rows() as u64;
            if let Some(delay) = self.delay {
                tokio::time::sleep(delay).await;
            }
        }
        Ok(rows)
    }

    async fn commit(&self) -> Result<()> {
        self.committed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn abort(&self) -> Result<()> {
        self.aborted.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn properties(partitions: usize, boundedness: Boundedness) -> PlanProperties {
    PlanProperties::new(
        EquivalenceProperties::new(schema()),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Incremental,
        boundedness,
    )
}

/// The reader of input 0 of vertex 0, with `partitions` partitions.
fn reader(partitions: usize, boundedness: Boundedness) -> Arc<ExchangeReadExec> {
    Arc::new(ExchangeReadExec::new(
        0,
        0,
        &properties(partitions, boundedness),
        Partitioning::UnknownPartitioning(partitions),
    ))
}

/// `source` (vertex 1) --edge--> `consumer` (vertex 0), whose reader has `partitions`
/// partitions.
fn job(
    consumer: Arc<dyn ExecutionPlan>,
    source: Arc<TestSource>,
    partitioning: EdgePartitioning,
    partitions: usize,
    sinks: Vec<Arc<dyn Sink>>,
) -> JobGraph {
    let producers = source.properties().partitioning.partition_count();
    let consumers = consumer.properties().partitioning.partition_count();
    JobGraph {
        vertices: vec![
            Vertex {
                id: 0,
                name: "consumer".into(),
                parallelism: consumers,
                // Consumers that can run as chains do, so that these tests drive chain
                // tasks reading input gates as well as fragments.
                kind: match plan_chain(&consumer, 8192) {
                    Ok(chain) => VertexKind::Chain(chain),
                    Err(reason) => VertexKind::Fragment { reason },
                },
                fragment: consumer,
            },
            Vertex {
                id: 1,
                name: "source".into(),
                parallelism: producers,
                fragment: source,
                kind: VertexKind::Fragment {
                    reason: "a test source".into(),
                },
            },
        ],
        edges: vec![Edge {
            from: 1,
            to: 0,
            input: 0,
            partitions,
            partitioning,
        }],
        sinks,
    }
}

/// source (vertex 1) --edge--> sink over an exchange reader with `partitions` partitions (vertex 0).
fn two_vertex_job(
    source: Arc<TestSource>,
    sink: Arc<RecordingSink>,
    partitioning: EdgePartitioning,
    partitions: usize,
) -> JobGraph {
    let reader = reader(partitions, source.properties().boundedness);
    let consumer: Arc<dyn ExecutionPlan> = Arc::new(SinkExec::new(reader, sink.clone()));
    job(consumer, source, partitioning, partitions, vec![sink])
}

fn executor(credit_batches: usize, credit_bytes: usize) -> LocalExecutor {
    let config = JobConfig {
        channel_credit_batches: credit_batches,
        channel_credit_bytes: credit_bytes,
        ..JobConfig::default()
    };
    LocalExecutor::new(&config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_sink_slows_the_sources_and_bounds_buffered_memory() {
    let source = Arc::new(TestSource::new(2, Some(200), 1000));
    let sink = Arc::new(RecordingSink {
        delay: Some(Duration::from_millis(1)),
        produced: Some(Arc::clone(&source.produced)),
        ..Default::default()
    });
    let batch_bytes = RecordBatch::try_new(
        schema(),
        vec![Arc::new(Int64Array::from_iter_values(0..1000))],
    )
    .unwrap()
    .get_array_memory_size();
    // Byte credit of three batches, batch credit of four: bytes bind first.
    let credit_bytes = 3 * batch_bytes;
    let graph = two_vertex_job(
        Arc::clone(&source),
        Arc::clone(&sink),
        EdgePartitioning::Rebalance,
        1,
    );
    let handle = executor(4, credit_bytes)
        .execute(graph, &TaskContext::default())
        .unwrap();
    let stats = handle.channel_stats();
    let batches = handle.collect().await.unwrap();
    let stats = stats.get();
    assert_eq!(batches.len(), 1);
    assert_eq!(sink.batches.load(Ordering::SeqCst), 400);
    for channel in &stats {
        assert!(
            channel.stats.peak_bytes() <= credit_bytes,
            "peak {} > credit {credit_bytes}",
            channel.stats.peak_bytes()
        );
        assert!(channel.stats.peak_batches() <= 3);
    }
    // Produced-but-unconsumed batches never exceed what the channel and the two producer
    // tasks (one batch in hand each) can hold.
    let bound = 3 + 2 + 1;
    let lag = sink.max_lag.load(Ordering::SeqCst);
    assert!(
        lag <= bound,
        "sources ran {lag} batches ahead of the slow sink (bound {bound})"
    );
}

async fn deliveries(
    partitioning: EdgePartitioning,
    producers: usize,
    partitions: usize,
) -> HashMap<usize, Vec<i64>> {
    let source = Arc::new(TestSource::new(producers, Some(5), 100));
    let sink = Arc::new(RecordingSink::default());
    let graph = two_vertex_job(source, Arc::clone(&sink), partitioning, partitions);
    executor(2, 1 << 20)
        .execute(graph, &TaskContext::default())
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(sink.committed.load(Ordering::SeqCst), 1);
    assert_eq!(sink.aborted.load(Ordering::SeqCst), 0);
    sink.received.lock().unwrap().clone()
}

fn all_rows(producers: usize) -> Vec<i64> {
    let mut rows: Vec<i64> = (0..producers)
        .flat_map(|p| (0..500).map(move |i| (p * 1_000_000 + i) as i64))
        .collect();
    rows.sort();
    rows
}

fn sorted(mut values: Vec<i64>) -> Vec<i64> {
    values.sort();
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_sends_producer_i_to_partition_i() {
    let received = deliveries(EdgePartitioning::Forward, 3, 3).await;
    for partition in 0..3 {
        let expected: Vec<i64> = (0..500)
            .map(|i| (partition * 1_000_000 + i) as i64)
            .collect();
        assert_eq!(sorted(received[&partition].clone()), expected);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescale_and_rebalance_deliver_every_row_once() {
    for (partitioning, producers, partitions) in [
        (EdgePartitioning::Rescale, 4, 2),
        (EdgePartitioning::Rescale, 2, 4),
        (EdgePartitioning::Rebalance, 2, 3),
    ] {
        let received = deliveries(partitioning.clone(), producers, partitions).await;
        let all = sorted(received.values().flatten().copied().collect());
        assert_eq!(all, all_rows(producers), "{partitioning}");
        if matches!(partitioning, EdgePartitioning::Rescale) && producers > partitions {
            // Pointwise: producers 0 and 1 feed partition 0, producers 2 and 3 partition 1.
            assert!(received[&0].iter().all(|v| *v < 2_000_000));
            assert!(received[&1].iter().all(|v| *v >= 2_000_000));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_sends_each_key_to_one_partition() {
    // Keys k % 16 repeat within and across producers, so a partitioning that split one key
    // over two partitions would be seen.
    let key = binary(
        col("k", &schema()).unwrap(),
        Operator::Modulo,
        lit(16i64),
        &schema(),
    )
    .unwrap();
    let received = deliveries(EdgePartitioning::Hash(vec![key]), 2, 4).await;
    let all = sorted(received.values().flatten().copied().collect());
    assert_eq!(all, all_rows(2));
    let mut partition_of_key: HashMap<i64, usize> = HashMap::new();
    for (partition, values) in &received {
        for value in values {
            let seen = *partition_of_key.entry(value % 16).or_insert(*partition);
            assert_eq!(
                seen,
                *partition,
                "key {} went to two partitions",
                value % 16
            );
        }
    }
    assert_eq!(partition_of_key.len(), 16);
    let used: std::collections::HashSet<usize> = partition_of_key.values().copied().collect();
    assert!(used.len() > 1, "keys should spread over partitions");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_sends_every_row_to_every_partition() {
    let received = deliveries(EdgePartitioning::Broadcast, 2, 3).await;
    for partition in 0..3 {
        assert_eq!(sorted(received[&partition].clone()), all_rows(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_job_runs_until_cancelled() {
    let source = Arc::new(TestSource::new(2, None, 10));
    let sink = Arc::new(RecordingSink::default());
    let graph = two_vertex_job(source, Arc::clone(&sink), EdgePartitioning::Rebalance, 1);
    assert!(!graph.is_bounded());
    let mut handle = executor(4, 1 << 20)
        .execute(graph, &TaskContext::default())
        .unwrap();
    let canceller = handle.canceller();
    while sink.batches.load(Ordering::SeqCst) < 50 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    canceller.cancel();
    let outcome = tokio::time::timeout(Duration::from_secs(10), handle.next_batch())
        .await
        .expect("the job must stop promptly after cancel");
    let error = outcome.unwrap_err();
    assert!(error.to_string().contains("cancelled"), "{error}");
    assert_eq!(sink.aborted.load(Ordering::SeqCst), 1);
    assert_eq!(sink.committed.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_task_error_stops_the_job_and_is_reported() {
    let mut source = TestSource::new(2, None, 10);
    source.fail_after = Some(20);
    let sink = Arc::new(RecordingSink::default());
    let graph = two_vertex_job(
        Arc::new(source),
        Arc::clone(&sink),
        EdgePartitioning::Rebalance,
        2,
    );
    let handle = executor(4, 1 << 20)
        .execute(graph, &TaskContext::default())
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(10), handle.collect())
        .await
        .expect("the job must stop promptly after a task fails");
    let error = outcome.unwrap_err();
    assert!(error.to_string().contains("source broke"), "{error}");
    assert_eq!(sink.aborted.load(Ordering::SeqCst), 1);
    assert_eq!(sink.committed.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_handle_cancels_the_job() {
    let source = Arc::new(TestSource::new(1, None, 10));
    let sink = Arc::new(RecordingSink::default());
    let graph = two_vertex_job(
        Arc::clone(&source),
        Arc::clone(&sink),
        EdgePartitioning::Forward,
        1,
    );
    let handle = executor(4, 1 << 20)
        .execute(graph, &TaskContext::default())
        .unwrap();
    while sink.batches.load(Ordering::SeqCst) < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(handle);
    let mut waited = 0;
    while sink.aborted.load(Ordering::SeqCst) == 0 && waited < 1000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
    }
    assert_eq!(sink.aborted.load(Ordering::SeqCst), 1);
    let produced = source.produced.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        source.produced.load(Ordering::SeqCst),
        produced,
        "the source must stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_leaves_an_input_partition_unread_does_not_hang_the_job() {
    // The consumer reads three batches of partition 0; partition 1 is never opened.
    let source = Arc::new(TestSource::new(2, None, 10));
    let unbounded = Boundedness::Unbounded {
        requires_infinite_memory: false,
    };
    let limit: Arc<dyn ExecutionPlan> = Arc::new(TakeExec {
        input: reader(2, unbounded),
        reads: vec![(0, 3)],
        properties: Arc::new(properties(1, Boundedness::Bounded)),
    });
    let graph = job(limit, source, EdgePartitioning::Rebalance, 2, vec![]);
    let handle = executor(2, 1 << 20)
        .execute(graph, &TaskContext::default())
        .unwrap();
    let batches = tokio::time::timeout(Duration::from_secs(20), handle.collect())
        .await
        .expect("the job must end once its only consumer is done")
        .unwrap();
    assert_eq!(batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 30);
}

/// Output partition `i` reads input partition `reads[i].0` and stops after `reads[i].1`
/// batches, as a plan does when a limit is reached early.
#[derive(Debug)]
struct TakeExec {
    input: Arc<dyn ExecutionPlan>,
    reads: Vec<(usize, usize)>,
    properties: Arc<PlanProperties>,
}

impl DisplayAs for TakeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "TakeExec")
    }
}

impl ExecutionPlan for TakeExec {
    riffle_plan::plan_node_defaults!();

    fn name(&self) -> &str {
        "TakeExec"
    }
    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }
    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }
    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (input_partition, batches) = self.reads[partition];
        let input = self.input.execute(input_partition, context)?;
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema(),
            input.take(batches),
        )))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_early_leaves_the_rows_to_the_others() {
    // Partition 0 stops after 2 batches (as a LIMIT does); partition 1 reads to the end.
    let source = Arc::new(TestSource::new(2, Some(50), 10));
    let take: Arc<dyn ExecutionPlan> = Arc::new(TakeExec {
        input: reader(2, Boundedness::Bounded),
        reads: vec![(0, 2), (1, usize::MAX)],
        properties: Arc::new(properties(2, Boundedness::Bounded)),
    });
    let graph = job(take, source, EdgePartitioning::Rebalance, 2, vec![]);
    let handle = executor(2, 1 << 20)
        .execute(graph, &TaskContext::default())
        .unwrap();
    let batches = tokio::time::timeout(Duration::from_secs(20), handle.collect())
        .await
        .expect("the job must end")
        .expect("an early stop downstream is not a failure");
    // Every batch goes to partition 1 once partition 0 has stopped.
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert!(
        rows > 500,
        "partition 1 must receive the rest of the rows, got {rows}"
    );
}
