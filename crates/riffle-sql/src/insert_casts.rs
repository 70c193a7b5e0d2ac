//! `INSERT INTO t SELECT ...` where a column of `t` is a fixed-shape `TENSOR`: the source
//! column is cast to it explicitly.
//!
//! DataFusion plans an insert by casting each source column to its target column's type, and
//! refuses a cast Arrow cannot do, such as a variable-shape tensor (`image_to_tensor`'s
//! output) to `TENSOR(FLOAT, [3, 224, 224])`. Written as `CAST(... AS TENSOR(...))`, the cast
//! becomes riffle-plan's `tensor_fixed_shape` call, which checks each row's shape. So the
//! statement's source is wrapped: `SELECT c0, CAST(c1 AS TENSOR(FLOAT, 3, 224, 224)), ...
//! FROM (source) AS __riffle_source(c0, c1, ...)`.

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{SetExpr, Statement, TableObject};
use riffle_common::Result;
use riffle_plan::RiffleSession;
use riffle_types::TensorType;

/// The statement with its tensor columns cast, or `None` when it needs no cast (or is not an
/// insert of a query; DataFusion then reports what is wrong with it).
pub(crate) async fn cast_tensor_columns(
    session: &RiffleSession,
    sql: &str,
) -> Result<Option<String>> {
    let Ok(mut statements) = DFParser::parse_sql(sql) else {
        return Ok(None);
    };
    if statements.len() != 1 {
        return Ok(None);
    }
    let Some(DfStatement::Statement(statement)) = statements.pop_front() else {
        return Ok(None);
    };
    let Statement::Insert(mut insert) = *statement else {
        return Ok(None);
    };
    let (TableObject::TableName(table), Some(source)) = (&insert.table, &insert.source) else {
        return Ok(None);
    };
    let Ok(provider) = session.context().table_provider(table.to_string()).await else {
        return Ok(None);
    };
    let schema = provider.schema();
    let targets: Vec<&Field> = if insert.columns.is_empty() {
        schema.fields().iter().map(|f| f.as_ref()).collect()
    } else {
        let mut targets = Vec::new();
        for column in &insert.columns {
            // SQL's identifiers: a quoted one as written, an unquoted one in lower case.
            let name = match column.0.as_slice() {
                [part] => match part.as_ident() {
                    Some(ident) if ident.quote_style.is_some() => ident.value.clone(),
                    Some(ident) => ident.value.to_lowercase(),
                    None => return Ok(None),
                },
                _ => return Ok(None),
            };
            match schema.field_with_name(&name) {
                Ok(field) => targets.push(field),
                Err(_) => return Ok(None),
            }
        }
        targets
    };
    if !targets.iter().any(|f| TensorType::from_field(f).is_some()) {
        return Ok(None);
    }
    if matches!(source.body.as_ref(), SetExpr::Values(_)) {
        return Ok(None);
    }
    let state = session.context().state();
    let Ok(plan) = state
        .statement_to_plan(DfStatement::Statement(Box::new(Statement::Query(
            source.clone(),
        ))))
        .await
    else {
        return Ok(None);
    };
    let fields = plan.schema().fields();
    if fields.len() != targets.len() {
        return Ok(None);
    }
    let mut projection = Vec::new();
    let mut any = false;
    for (index, (field, target)) in fields.iter().zip(&targets).enumerate() {
        match TensorType::from_field(target) {
            // Tensors and lists, which Arrow's cast cannot make fixed-shape tensors of
            // (NULL and equal types need no help).
            Some(tensor)
                if field.data_type() != target.data_type()
                    && matches!(
                        field.data_type(),
                        DataType::Struct(_) | DataType::List(_) | DataType::LargeList(_)
                    ) =>
            {
                any = true;
                let shape: Vec<String> = tensor.shape.iter().map(ToString::to_string).collect();
                projection.push(format!(
                    "CAST(c{index} AS TENSOR({}, {}))",
                    tensor.element,
                    shape.join(", ")
                ));
            }
            _ => projection.push(format!("c{index}")),
        }
    }
    if !any {
        return Ok(None);
    }
    let aliases: Vec<String> = (0..fields.len()).map(|i| format!("c{i}")).collect();
    let wrapped = format!(
        "SELECT {} FROM ({source}) AS __riffle_source({})",
        projection.join(", "),
        aliases.join(", ")
    );
    let Ok(mut parsed) = DFParser::parse_sql(&wrapped) else {
        return Ok(None);
    };
    let Some(DfStatement::Statement(query)) = parsed.pop_front() else {
        return Ok(None);
    };
    let Statement::Query(query) = *query else {
        return Ok(None);
    };
    insert.source = Some(query);
    Ok(Some(Statement::Insert(insert).to_string()))
}
