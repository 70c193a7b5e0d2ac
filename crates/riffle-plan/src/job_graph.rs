//! The job graph: what the runtime runs.
//!
//! A [`Vertex`] is a fragment of a DataFusion physical plan (a chain of operators fused into
//! one task) run as `parallelism` subtasks; subtask `i` runs partition `i` of the fragment.
//! An [`Edge`] carries batches from every subtask of one vertex to one input
//! ([`ExchangeReadExec`](crate::ExchangeReadExec)) of another, partitioned as its
//! [`EdgePartitioning`] says. Vertices without an outgoing edge send their output to the
//! job's result.

use std::fmt;
use std::sync::Arc;

use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr, displayable};
use serde::Serialize;

use crate::chain::ChainPlan;
use crate::sink::Sink;

/// Index of a vertex in [`JobGraph::vertices`].
pub type VertexId = usize;

/// How an edge spreads the batches of its producers over the partitions of its consumer.
#[derive(Debug, Clone)]
pub enum EdgePartitioning {
    /// Producer subtask `i` feeds partition `i`; both sides have the same width.
    Forward,
    /// Pointwise: each producer feeds a fixed subset of partitions (all of them into one
    /// partition when the consumer has one), round-robin within that subset.
    Rescale,
    /// Round-robin over all partitions, batch by batch.
    Rebalance,
    /// Rows go to the partition given by the hash of these expressions.
    Hash(Vec<Arc<dyn PhysicalExpr>>),
    /// Every batch goes to every partition.
    Broadcast,
}

impl fmt::Display for EdgePartitioning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EdgePartitioning::Forward => write!(f, "FORWARD"),
            EdgePartitioning::Rescale => write!(f, "RESCALE"),
            EdgePartitioning::Rebalance => write!(f, "REBALANCE"),
            EdgePartitioning::Broadcast => write!(f, "BROADCAST"),
            EdgePartitioning::Hash(keys) => {
                let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                write!(f, "HASH({})", keys.join(", "))
            }
        }
    }
}

/// How a vertex runs (see [`crate::chain`]).
#[derive(Debug, Clone)]
pub enum VertexKind {
    /// A chain of Riffle operators, driven one batch at a time by a task that owns its
    /// input: barriers, watermarks and the end of input pass between batches.
    Chain(ChainPlan),
    /// A DataFusion fragment pulled as a stream: it takes no checkpoints.
    Fragment {
        /// Why the fragment is not a chain, naming the operator.
        reason: String,
    },
}

impl VertexKind {
    /// Whether the vertex is a chain.
    pub fn is_chain(&self) -> bool {
        matches!(self, VertexKind::Chain(_))
    }
}

/// One vertex: a plan fragment run as `parallelism` subtasks.
#[derive(Debug, Clone)]
pub struct Vertex {
    /// Position in [`JobGraph::vertices`].
    pub id: VertexId,
    /// A short name built from the fragment's operators.
    pub name: String,
    /// Number of subtasks; equals the fragment's output partition count.
    pub parallelism: usize,
    /// The fused operator chain; its leaves are sources or exchange readers.
    pub fragment: Arc<dyn ExecutionPlan>,
    /// Whether it runs as a chain of Riffle operators or as a DataFusion fragment.
    pub kind: VertexKind,
}

/// One edge, from every subtask of `from` to input `input` of `to`.
#[derive(Debug, Clone)]
pub struct Edge {
    /// The producing vertex.
    pub from: VertexId,
    /// The consuming vertex.
    pub to: VertexId,
    /// Which of the consumer's exchange readers receives the batches.
    pub input: usize,
    /// Number of partitions of that reader.
    pub partitions: usize,
    /// How batches are spread over those partitions.
    pub partitioning: EdgePartitioning,
}

/// A planned job: vertices, edges, and the sinks to commit when it succeeds.
#[derive(Debug, Clone, Default)]
pub struct JobGraph {
    /// The vertices, producers before consumers is not guaranteed.
    pub vertices: Vec<Vertex>,
    /// The edges.
    pub edges: Vec<Edge>,
    /// Sinks written by the job, committed after it succeeds and aborted if it fails.
    pub sinks: Vec<Arc<dyn Sink>>,
}

impl JobGraph {
    /// The edge leaving `vertex`, if any: a vertex without one feeds the job's result.
    pub fn output_edge(&self, vertex: VertexId) -> Option<&Edge> {
        self.edges.iter().find(|edge| edge.from == vertex)
    }

    /// Whether every source of the job is bounded, so that the job finishes on its own.
    pub fn is_bounded(&self) -> bool {
        use datafusion::physical_plan::ExecutionPlanProperties;
        self.vertices
            .iter()
            .all(|vertex| !vertex.fragment.boundedness().is_unbounded())
    }

    /// Checks the graph's invariants: every vertex runs, every edge joins known vertices,
    /// and forward edges join equal widths.
    pub fn check(&self) -> Result<(), String> {
        for vertex in &self.vertices {
            if vertex.parallelism == 0 {
                return Err(format!("vertex {} has parallelism 0", vertex.id));
            }
        }
        for edge in &self.edges {
            let from = self
                .vertices
                .get(edge.from)
                .ok_or_else(|| format!("edge from unknown vertex {}", edge.from))?;
            if edge.to >= self.vertices.len() {
                return Err(format!("edge to unknown vertex {}", edge.to));
            }
            if matches!(edge.partitioning, EdgePartitioning::Forward)
                && from.parallelism != edge.partitions
            {
                return Err(format!(
                    "forward edge {} -> {} joins {} subtasks to {} partitions",
                    edge.from, edge.to, from.parallelism, edge.partitions
                ));
            }
        }
        Ok(())
    }

    /// A serializable summary of the graph's shape (vertices, parallelism, edges).
    pub fn summary(&self) -> JobGraphSummary {
        JobGraphSummary {
            vertices: self
                .vertices
                .iter()
                .map(|vertex| VertexSummary {
                    id: vertex.id,
                    name: vertex.name.clone(),
                    parallelism: vertex.parallelism,
                    chain: vertex.kind.is_chain(),
                })
                .collect(),
            edges: self
                .edges
                .iter()
                .map(|edge| EdgeSummary {
                    from: edge.from,
                    to: edge.to,
                    input: edge.input,
                    partitioning: edge.partitioning.to_string(),
                })
                .collect(),
        }
    }
}

/// The shape of a job graph, as data (for EXPLAIN and, later, for a dashboard).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct JobGraphSummary {
    /// The vertices.
    pub vertices: Vec<VertexSummary>,
    /// The edges.
    pub edges: Vec<EdgeSummary>,
}

/// One vertex of a [`JobGraphSummary`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct VertexSummary {
    /// Vertex id.
    pub id: VertexId,
    /// Operator chain.
    pub name: String,
    /// Number of subtasks.
    pub parallelism: usize,
    /// Whether it runs as a chain (else as a DataFusion fragment).
    pub chain: bool,
}

/// One edge of a [`JobGraphSummary`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EdgeSummary {
    /// Producer.
    pub from: VertexId,
    /// Consumer.
    pub to: VertexId,
    /// Consumer input.
    pub input: usize,
    /// Partitioning, as text.
    pub partitioning: String,
}

impl fmt::Display for JobGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for vertex in &self.vertices {
            let output = match self.output_edge(vertex.id) {
                Some(edge) => format!(
                    "-> vertex {} input {} ({})",
                    edge.to, edge.input, edge.partitioning
                ),
                None => "-> result".to_string(),
            };
            let kind = match &vertex.kind {
                VertexKind::Chain(_) => "chain",
                VertexKind::Fragment { .. } => "fragment",
            };
            writeln!(
                f,
                "vertex {} [{kind}, parallelism={}] {} {}",
                vertex.id, vertex.parallelism, vertex.name, output
            )?;
            match &vertex.kind {
                VertexKind::Chain(chain) => writeln!(f, "  chain: {chain}")?,
                VertexKind::Fragment { reason } => writeln!(f, "  fragment: {reason}")?,
            }
            let plan = displayable(vertex.fragment.as_ref())
                .indent(false)
                .to_string();
            for line in plan.lines() {
                writeln!(f, "    {line}")?;
            }
        }
        Ok(())
    }
}
