//! The job's pipeline regions, computed from its graph (riffle-state's `regions` over the
//! subtask pairs each edge links).
//!
//! Today a failure restarts every region from the same checkpoint. Regions are computed and
//! recorded now so that region failover and regional checkpoints (the next steps of
//! ../shared/design/fault-tolerance.md) start from a graph and checkpoints that already know
//! them: each checkpoint's metadata lists its regions, and EXPLAIN and the job's report say
//! how many a job has.

use riffle_plan::JobGraph;
use riffle_state::{EdgeLinks, GraphShape, Region, regions};

use crate::partitioner::targets;

/// The subtask pairs each edge of `graph` links, as the partitioner sends them. No edge is
/// persisted yet: every edge is a live channel.
pub fn graph_shape(graph: &JobGraph) -> GraphShape {
    let mut parallelism = vec![0; graph.vertices.len()];
    for vertex in &graph.vertices {
        if let Some(width) = parallelism.get_mut(vertex.id) {
            *width = vertex.parallelism;
        }
    }
    let edges = graph
        .edges
        .iter()
        .map(|edge| {
            let producers = parallelism.get(edge.from).copied().unwrap_or(0);
            let links = (0..producers)
                .flat_map(|producer| {
                    targets(&edge.partitioning, producer, producers, edge.partitions)
                        .into_iter()
                        .map(move |consumer| (producer, consumer))
                })
                .collect();
            EdgeLinks {
                from: edge.from,
                to: edge.to,
                links,
                persisted: false,
            }
        })
        .collect();
    GraphShape { parallelism, edges }
}

/// The pipeline regions of `graph`, ordered by their first subtask.
pub fn job_regions(graph: &JobGraph) -> Vec<Region> {
    regions(&graph_shape(graph))
}

/// Each region as its `(vertex, subtask)` pairs, as checkpoint metadata records them.
pub fn region_tasks(regions: &[Region]) -> Vec<Vec<(usize, usize)>> {
    regions
        .iter()
        .map(|region| {
            region
                .tasks
                .iter()
                .map(|task| (task.vertex, task.subtask))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::physical_plan::empty::EmptyExec;
    use riffle_plan::{Edge, EdgePartitioning, Vertex, VertexKind};

    use super::*;

    fn vertex(id: usize, parallelism: usize) -> Vertex {
        Vertex {
            id,
            name: format!("v{id}"),
            parallelism,
            fragment: Arc::new(EmptyExec::new(Arc::new(
                datafusion::arrow::datatypes::Schema::empty(),
            ))),
            kind: VertexKind::Fragment {
                reason: "a test".into(),
            },
        }
    }

    fn edge(from: usize, to: usize, partitions: usize, partitioning: EdgePartitioning) -> Edge {
        Edge {
            from,
            to,
            input: 0,
            partitions,
            partitioning,
        }
    }

    #[test]
    fn forward_edges_keep_subtasks_apart_and_all_to_all_edges_join_them() {
        let forward = JobGraph {
            vertices: vec![vertex(0, 2), vertex(1, 2)],
            edges: vec![edge(1, 0, 2, EdgePartitioning::Forward)],
            sinks: Vec::new(),
        };
        assert_eq!(
            region_tasks(&job_regions(&forward)),
            vec![vec![(0, 0), (1, 0)], vec![(0, 1), (1, 1)]]
        );

        let rebalanced = JobGraph {
            vertices: vec![vertex(0, 2), vertex(1, 3)],
            edges: vec![edge(1, 0, 2, EdgePartitioning::Rebalance)],
            sinks: Vec::new(),
        };
        assert_eq!(job_regions(&rebalanced).len(), 1);

        // Rescale from 4 to 2: producers 0 and 1 feed partition 0, 2 and 3 partition 1.
        let rescaled = JobGraph {
            vertices: vec![vertex(0, 2), vertex(1, 4)],
            edges: vec![edge(1, 0, 2, EdgePartitioning::Rescale)],
            sinks: Vec::new(),
        };
        assert_eq!(
            region_tasks(&job_regions(&rescaled)),
            vec![vec![(0, 0), (1, 0), (1, 1)], vec![(0, 1), (1, 2), (1, 3)]]
        );

        // A map-only job: one region per subtask.
        let map_only = JobGraph {
            vertices: vec![vertex(0, 3)],
            edges: Vec::new(),
            sinks: Vec::new(),
        };
        assert_eq!(job_regions(&map_only).len(), 3);
    }
}
