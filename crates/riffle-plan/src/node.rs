//! What Riffle's own DataFusion plan nodes have in common.

/// Writes the two `ExecutionPlan` methods every Riffle node implements the same way: no
/// expressions of its own (`apply_expressions`), and the deprecated `with_new_children`
/// by way of `replace_children`. Use it inside `impl ExecutionPlan for ...`.
#[macro_export]
macro_rules! plan_node_defaults {
    () => {
        fn apply_expressions(
            &self,
            _f: &mut dyn FnMut(
                &std::sync::Arc<dyn datafusion::physical_plan::PhysicalExpr>,
            ) -> datafusion::error::Result<
                datafusion::common::tree_node::TreeNodeRecursion,
            >,
        ) -> datafusion::error::Result<datafusion::common::tree_node::TreeNodeRecursion> {
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        }

        fn with_new_children(
            self: std::sync::Arc<Self>,
            children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
        ) -> datafusion::error::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>
        {
            self.replace_children(
                children,
                datafusion::physical_plan::ReplaceChildrenOptions::new(
                    datafusion::physical_plan::ChildrenPropertiesMode::Recompute,
                ),
            )
        }
    };
}

/// Writes the `ExecutionPlan` methods of a source node (one without inputs) whose plan
/// properties are in a `properties` field: `name`, `properties`, `children` and
/// `replace_children`, plus those of [`plan_node_defaults!`]. Use it inside `impl
/// ExecutionPlan for ...`, with the node's name.
#[macro_export]
macro_rules! leaf_plan_node {
    ($name:literal) => {
        $crate::plan_node_defaults!();

        fn name(&self) -> &str {
            $name
        }

        fn properties(&self) -> &std::sync::Arc<datafusion::physical_plan::PlanProperties> {
            &self.properties
        }

        fn children(&self) -> Vec<&std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            vec![]
        }

        fn replace_children(
            self: std::sync::Arc<Self>,
            children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
            _options: datafusion::physical_plan::ReplaceChildrenOptions,
        ) -> datafusion::error::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>
        {
            if children.is_empty() {
                Ok(self)
            } else {
                Err(datafusion::error::DataFusionError::Internal(
                    concat!($name, " takes no children").into(),
                ))
            }
        }
    };
}
