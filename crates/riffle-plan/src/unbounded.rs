//! A clear error for a query an unbounded source cannot feed.
//!
//! A grouped aggregate, a sort, a join or a window function over an unbounded source waits
//! for an end of input that never comes. DataFusion's own check (`SanityCheckPlan`) refuses
//! such plans with the operator's whole debug dump; this rule runs just before it with the
//! same test and says, in a sentence, which part of the query cannot run and what to do.
//! Streaming aggregates, windows and joins (which would lift this) are later work.

use std::sync::Arc;

use datafusion::config::ConfigOptions;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use riffle_common::RiffleError;

/// Refuses pipeline breakers over unbounded inputs with a message a user can act on.
#[derive(Debug, Default)]
pub struct UnboundedPipelineRule;

impl PhysicalOptimizerRule for UnboundedPipelineRule {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match check(&plan) {
            Some(error) => Err(error),
            None => Ok(plan),
        }
    }

    fn name(&self) -> &str {
        // DataFusion puts the rule's name before its error: make it part of the sentence.
        "unbounded source"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The error for `node` if it breaks the pipeline over an unbounded input; its children
/// are checked first, so the innermost breaker is named.
fn check(node: &Arc<dyn ExecutionPlan>) -> Option<DataFusionError> {
    for child in node.children() {
        if let Some(error) = check(child) {
            return Some(error);
        }
    }
    let needs_all = matches!(
        node.boundedness(),
        Boundedness::Unbounded {
            requires_infinite_memory: true
        }
    ) || (node.boundedness().is_unbounded()
        && node.pipeline_behavior() == EmissionType::Final);
    if !needs_all {
        return None;
    }
    let what = describe(node.as_ref());
    let error = RiffleError::user(format!("{what} needs the whole input, which never ends"))
        .with_hint(format!(
            "streaming aggregates, sorts, joins and windows are not built yet; bound the source \
         ('number-of-rows' for datagen) to run the {} as a batch job",
            short(node.as_ref())
        ));
    Some(DataFusionError::External(Box::new(error)))
}

/// The operator as the query wrote it.
fn describe(node: &dyn ExecutionPlan) -> String {
    if let Some(aggregate) = node.downcast_ref::<AggregateExec>() {
        let keys: Vec<&str> = aggregate
            .group_expr()
            .expr()
            .iter()
            .map(|(_, name)| name.as_str())
            .collect();
        return if keys.is_empty() {
            "the query's aggregate".to_string()
        } else {
            format!("the query's GROUP BY {}", keys.join(", "))
        };
    }
    format!("the query's {}", short(node))
}

fn short(node: &dyn ExecutionPlan) -> String {
    let name = node.name();
    if node.downcast_ref::<AggregateExec>().is_some() {
        "aggregate".into()
    } else if name.contains("Sort") {
        "ORDER BY (a sort)".into()
    } else if name.contains("Join") {
        "join".into()
    } else if name.contains("Window") {
        "window function".into()
    } else {
        format!("operator {name}")
    }
}

/// DataFusion's physical optimizer rules with [`UnboundedPipelineRule`] just before its
/// sanity check (or last, if a DataFusion version has none).
pub fn with_rule_before_sanity_check() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules;
    let at = rules
        .iter()
        .position(|rule| rule.name() == "SanityCheckPlan")
        .unwrap_or(rules.len());
    rules.insert(at, Arc::new(UnboundedPipelineRule));
    rules
}
