//! Pipeline regions: the sets of subtasks joined by pipelined edges.
//!
//! A failure in one subtask can only corrupt what that subtask's data reached through live
//! channels, so the region (the connected component of subtasks over pipelined edges) is
//! the unit of failover: it restarts together from one snapshot, while other regions share
//! no live channel with it. A map-only job (one vertex, no edges) has one region per subtask;
//! a forward edge keeps subtask `i` with subtask `i`; an all-to-all edge (hash, rebalance,
//! broadcast) joins everything on both sides. Persisted edges (a committed file between two
//! regions) do not join.

use std::collections::BTreeMap;

use crate::tracker::TaskId;

/// One edge of a job graph, as the subtask pairs it links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeLinks {
    /// The producing vertex.
    pub from: usize,
    /// The consuming vertex.
    pub to: usize,
    /// (producer subtask, consumer subtask) pairs that exchange data.
    pub links: Vec<(usize, usize)>,
    /// Whether the edge is persisted (blocking): then it does not join regions.
    pub persisted: bool,
}

/// The shape of a job graph: what regions are computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphShape {
    /// Parallelism of each vertex, by vertex id.
    pub parallelism: Vec<usize>,
    /// The edges.
    pub edges: Vec<EdgeLinks>,
}

/// One pipeline region: its subtasks, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// The subtasks of the region.
    pub tasks: Vec<TaskId>,
}

/// The regions of `shape`, ordered by their first subtask.
pub fn regions(shape: &GraphShape) -> Vec<Region> {
    let mut index = BTreeMap::new();
    let mut tasks = Vec::new();
    for (vertex, &parallelism) in shape.parallelism.iter().enumerate() {
        for subtask in 0..parallelism {
            index.insert(TaskId::new(vertex, subtask), tasks.len());
            tasks.push(TaskId::new(vertex, subtask));
        }
    }
    let mut parent: Vec<usize> = (0..tasks.len()).collect();
    fn root(parent: &mut [usize], mut node: usize) -> usize {
        while parent[node] != node {
            parent[node] = parent[parent[node]];
            node = parent[node];
        }
        node
    }
    for edge in shape.edges.iter().filter(|edge| !edge.persisted) {
        for &(producer, consumer) in &edge.links {
            let (Some(&a), Some(&b)) = (
                index.get(&TaskId::new(edge.from, producer)),
                index.get(&TaskId::new(edge.to, consumer)),
            ) else {
                continue;
            };
            let (a, b) = (root(&mut parent, a), root(&mut parent, b));
            if a != b {
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<TaskId>> = BTreeMap::new();
    for (node, task) in tasks.iter().enumerate() {
        let group = root(&mut parent, node);
        groups.entry(group).or_default().push(*task);
    }
    groups.into_values().map(|tasks| Region { tasks }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_to_all(from: usize, to: usize, producers: usize, consumers: usize) -> EdgeLinks {
        let links = (0..producers)
            .flat_map(|p| (0..consumers).map(move |c| (p, c)))
            .collect();
        EdgeLinks {
            from,
            to,
            links,
            persisted: false,
        }
    }

    #[test]
    fn a_map_only_job_has_a_region_per_subtask() {
        let shape = GraphShape {
            parallelism: vec![4],
            edges: vec![],
        };
        assert_eq!(regions(&shape).len(), 4);
    }

    #[test]
    fn forward_edges_keep_subtasks_apart_and_all_to_all_edges_join_them() {
        let forward = EdgeLinks {
            from: 0,
            to: 1,
            links: (0..3).map(|i| (i, i)).collect(),
            persisted: false,
        };
        let shape = GraphShape {
            parallelism: vec![3, 3],
            edges: vec![forward],
        };
        let found = regions(&shape);
        assert_eq!(found.len(), 3);
        assert_eq!(found[1].tasks, vec![TaskId::new(0, 1), TaskId::new(1, 1)]);

        let shape = GraphShape {
            parallelism: vec![3, 2],
            edges: vec![all_to_all(0, 1, 3, 2)],
        };
        assert_eq!(regions(&shape).len(), 1);
    }

    #[test]
    fn rescale_makes_one_region_per_consumer_and_persisted_edges_split() {
        // Four decoders feeding two writers pointwise: {0,1} -> 0, {2,3} -> 1.
        let rescale = EdgeLinks {
            from: 0,
            to: 1,
            links: vec![(0, 0), (1, 0), (2, 1), (3, 1)],
            persisted: false,
        };
        let shape = GraphShape {
            parallelism: vec![4, 2],
            edges: vec![rescale],
        };
        assert_eq!(regions(&shape).len(), 2);

        let mut persisted = all_to_all(0, 1, 2, 2);
        persisted.persisted = true;
        let shape = GraphShape {
            parallelism: vec![2, 2],
            edges: vec![persisted],
        };
        assert_eq!(regions(&shape).len(), 4);
    }
}
