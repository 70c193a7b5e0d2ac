//! From DataFusion's physical plan to a [`JobGraph`].
//!
//! DataFusion's optimizer has already placed exchanges where data must move between
//! partitions. The builder walks the plan from the root and cuts it at each exchange:
//!
//! | DataFusion node | becomes |
//! |---|---|
//! | `RepartitionExec` (hash) | a HASH edge into an [`ExchangeReadExec`] with as many partitions |
//! | `RepartitionExec` (round-robin) | a REBALANCE edge |
//! | `CoalescePartitionsExec` | a RESCALE edge into one partition (plus a limit when it had a fetch) |
//! | input of `SortPreservingMergeExec` | a FORWARD edge: partition `i` reads producer `i`'s sorted output |
//!
//! Everything between two cuts is one fragment, run as one task per output partition.
//!
//! An exchange is **not** cut when the plan below it evaluates an uncorrelated scalar
//! subquery (`WHERE x > (SELECT avg(x) FROM t)`). DataFusion runs such subqueries in a
//! `ScalarSubqueryExec` above the expressions that read their values, and hands the values
//! over through memory the two share: the exec fills it before it executes its input. Cut
//! in between, the reading vertex would run at once with the exec's vertex and read the
//! value before it exists (and a job graph sent elsewhere could not rebuild the link). So
//! the exchanges between a `ScalarSubqueryExec` and its readers stay inside the fragment,
//! where DataFusion runs them itself; exchanges further down, below every reader, are cut
//! as usual, so scans, joins and aggregations under the subquery's filter still run as
//! vertices of their own.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_expr::scalar_subquery::ScalarSubqueryExpr;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::limit::GlobalLimitExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    ReplaceChildrenOptions,
};

use crate::chain::plan_chain;
use crate::exchange::ExchangeReadExec;
use crate::job_graph::{Edge, EdgePartitioning, JobGraph, Vertex, VertexId, VertexKind};
use crate::sink::SinkExec;

/// How the builder makes vertices.
#[derive(Debug, Clone, Copy)]
pub struct ChainOptions {
    /// Whether fragments that can run as chains do (`pipeline.operator-chaining.enabled`);
    /// when off, every vertex is a DataFusion fragment, as before chains existed.
    pub enabled: bool,
    /// Rows per batch that the coalescing after a filter aims at.
    pub batch_rows: usize,
}

impl Default for ChainOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            batch_rows: 8192,
        }
    }
}

/// Cuts `plan` into a job graph, with chains where they can run.
pub fn build_job_graph(plan: Arc<dyn ExecutionPlan>) -> Result<JobGraph> {
    build_job_graph_with(plan, ChainOptions::default())
}

/// Cuts `plan` into a job graph; `chains` says whether and how to make chain vertices.
///
/// A vertex fed by an unbounded source must be a chain (a fragment never finishes its
/// stream, so it could never take a checkpoint); such a fragment is refused, naming its
/// operator. Vertices behind a LIMIT are bounded and may be fragments.
pub fn build_job_graph_with(
    plan: Arc<dyn ExecutionPlan>,
    chains: ChainOptions,
) -> Result<JobGraph> {
    let mut builder = Builder {
        graph: JobGraph::default(),
        inputs: Vec::new(),
        chains,
    };
    builder.add_vertex(plan)?;
    let graph = builder.graph;
    graph.check().map_err(DataFusionError::Internal)?;
    if chains.enabled {
        for vertex in &graph.vertices {
            let unbounded = vertex.fragment.boundedness().is_unbounded();
            if let VertexKind::Fragment { reason } = &vertex.kind
                && unbounded
            {
                return Err(DataFusionError::External(Box::new(
                    riffle_common::RiffleError::user(format!(
                        "unbounded source: the job cannot run as a stream because {reason}"
                    ))
                    .with_hint(
                        "an unbounded job runs projections, filters, functions, LIMIT and \
                         INSERT; bound the source (a LIMIT, or 'number-of-rows' for datagen) \
                         for the rest",
                    ),
                )));
            }
        }
    }
    Ok(graph)
}

struct Builder {
    graph: JobGraph,
    /// Number of exchange readers placed so far, per vertex.
    inputs: Vec<usize>,
    chains: ChainOptions,
}

impl Builder {
    fn add_vertex(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<VertexId> {
        let id = self.inputs.len();
        self.inputs.push(0);
        // Reserve the slot so that producers created while cutting get later ids.
        self.graph.vertices.push(Vertex {
            id,
            name: String::new(),
            parallelism: 0,
            fragment: Arc::clone(&plan),
            kind: VertexKind::Fragment {
                reason: String::new(),
            },
        });
        let fragment = self.cut(plan, id)?;
        let kind = vertex_kind(&fragment, self.chains);
        let vertex = &mut self.graph.vertices[id];
        vertex.parallelism = fragment.output_partitioning().partition_count();
        vertex.name = fragment_name(&fragment);
        vertex.fragment = fragment;
        vertex.kind = kind;
        Ok(id)
    }

    fn cut(
        &mut self,
        plan: Arc<dyn ExecutionPlan>,
        vertex: VertexId,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if let Some(sink) = plan.downcast_ref::<SinkExec>() {
            self.graph.sinks.push(Arc::clone(sink.sink()));
        }
        let exchange = plan.is::<RepartitionExec>()
            || plan.is::<CoalescePartitionsExec>()
            || plan.is::<SortPreservingMergeExec>();
        if exchange
            && !plan.children().into_iter().any(reads_scalar_subquery)
            && let Some(reader) = self.cut_exchange(&plan, vertex)?
        {
            return Ok(reader);
        }
        let children = plan.children();
        if children.is_empty() {
            return Ok(plan);
        }
        let mut cut_children = Vec::with_capacity(children.len());
        for child in children {
            cut_children.push(self.cut(Arc::clone(child), vertex)?);
        }
        replace_children(&plan, cut_children)
    }

    /// The exchange reader that replaces `plan` when it is an exchange, its producer made a
    /// vertex of its own; `None` when `plan` is not an exchange.
    fn cut_exchange(
        &mut self,
        plan: &Arc<dyn ExecutionPlan>,
        vertex: VertexId,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
            if repartition.preserve_order() {
                return Err(DataFusionError::NotImplemented(
                    "order-preserving repartitioning is not supported by Riffle's planner yet"
                        .into(),
                ));
            }
            let partitioning = match repartition.partitioning() {
                Partitioning::Hash(keys, _) => EdgePartitioning::Hash(keys.clone()),
                Partitioning::RoundRobinBatch(_) => EdgePartitioning::Rebalance,
                other => {
                    return Err(DataFusionError::NotImplemented(format!(
                        "repartitioning by {other} is not supported by Riffle's planner yet"
                    )));
                }
            };
            let partitions = repartition.partitioning().partition_count();
            return self
                .exchange(
                    vertex,
                    repartition.input(),
                    plan,
                    partitioning,
                    repartition.partitioning().clone(),
                    partitions,
                )
                .map(Some);
        }
        if let Some(coalesce) = plan.downcast_ref::<CoalescePartitionsExec>() {
            let reader = self.exchange(
                vertex,
                coalesce.input(),
                plan,
                EdgePartitioning::Rescale,
                Partitioning::UnknownPartitioning(1),
                1,
            )?;
            return Ok(Some(match coalesce.fetch() {
                Some(fetch) => Arc::new(GlobalLimitExec::new(reader, 0, Some(fetch))),
                None => reader,
            }));
        }
        if let Some(merge) = plan.downcast_ref::<SortPreservingMergeExec>() {
            let input = merge.input();
            let partitions = input.output_partitioning().partition_count();
            let reader = self.exchange(
                vertex,
                input,
                input,
                EdgePartitioning::Forward,
                Partitioning::UnknownPartitioning(partitions),
                partitions,
            )?;
            return replace_children(plan, vec![reader]).map(Some);
        }
        Ok(None)
    }

    /// Makes `producer` a vertex of its own, joined to a new exchange reader of `vertex`.
    fn exchange(
        &mut self,
        vertex: VertexId,
        producer: &Arc<dyn ExecutionPlan>,
        replaced: &Arc<dyn ExecutionPlan>,
        partitioning: EdgePartitioning,
        reader_partitioning: Partitioning,
        partitions: usize,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = self.inputs[vertex];
        self.inputs[vertex] += 1;
        let from = self.add_vertex(Arc::clone(producer))?;
        self.graph.edges.push(Edge {
            from,
            to: vertex,
            input,
            partitions,
            partitioning,
        });
        Ok(Arc::new(ExchangeReadExec::new(
            vertex,
            input,
            replaced.properties(),
            reader_partitioning,
        )))
    }
}

fn replace_children(
    plan: &Arc<dyn ExecutionPlan>,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Arc::clone(plan).replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
    )
}

/// Whether any expression in `plan` reads the value of a scalar subquery (see the module
/// docs for why such a plan is not cut from the `ScalarSubqueryExec` above it).
fn reads_scalar_subquery(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let mut found = false;
    let visited = plan.apply_expressions(&mut |expr| {
        found = expr.exists(|e| Ok(e.downcast_ref::<ScalarSubqueryExpr>().is_some()))?;
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    // A visit that fails (it never does for these closures) keeps the plan whole: not
    // cutting is always correct.
    visited.is_err() || found || plan.children().into_iter().any(reads_scalar_subquery)
}

/// A chain when `fragment` can run as one and chaining is on; a fragment otherwise.
pub(crate) fn vertex_kind(fragment: &Arc<dyn ExecutionPlan>, chains: ChainOptions) -> VertexKind {
    if !chains.enabled {
        return VertexKind::Fragment {
            reason: "operator chaining is off (pipeline.operator-chaining.enabled)".into(),
        };
    }
    match plan_chain(fragment, chains.batch_rows) {
        Ok(chain) => VertexKind::Chain(chain),
        Err(reason) => VertexKind::Fragment { reason },
    }
}

/// Names a fragment by its operators, from the root down the first child.
fn fragment_name(fragment: &Arc<dyn ExecutionPlan>) -> String {
    let mut names = Vec::new();
    let mut node = Some(fragment);
    while let Some(plan) = node {
        let name = plan.name().trim_end_matches("Exec");
        names.push(name.to_string());
        node = plan.children().into_iter().next();
    }
    names.join(" <- ")
}
