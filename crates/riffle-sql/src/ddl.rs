//! Riffle's statements, and the Flink-style `CREATE TABLE ... WITH (...)`.
//!
//! DataFusion's parser does not know `WITH ('connector' = ...)`. Riffle cuts the statement
//! at that `WITH`: the part before it is ordinary `CREATE TABLE name (columns)`, which
//! DataFusion plans (so column types follow DataFusion's SQL type rules), and the options
//! after it are read here. Flink's `CREATE TABLE name WITH (options) AS query` takes its
//! columns from the query; the session creates the table and then inserts the query's rows.

use std::collections::BTreeMap;

use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use riffle_common::{Result, RiffleError};
use riffle_plan::{ModelDefinition, RiffleSession, TableDefinition};

use crate::model::{is_create_model, parse_create_model, resolve_ml_predict};
use crate::named_args::resolve_named_arguments;
use crate::script::{render, tokenize};
use crate::set::parse_set;
use crate::vector_search::rewrite_vector_search;

/// One planned statement.
#[derive(Debug)]
pub enum RiffleStatement {
    /// `CREATE TABLE name (columns) WITH (options)`.
    CreateTable {
        /// The table.
        definition: TableDefinition,
        /// `IF NOT EXISTS` was given.
        if_not_exists: bool,
    },
    /// `CREATE TABLE name WITH (options) AS query`: a connector table with the query's
    /// columns, filled with its rows.
    CreateTableAs {
        /// The table, its columns those of the query.
        definition: TableDefinition,
        /// `IF NOT EXISTS` was given: an existing table is left as it is, the query unrun.
        if_not_exists: bool,
        /// The rows to insert.
        query: LogicalPlan,
    },
    /// `SET 'key' = 'value'`: a job option for the statements and jobs that follow.
    SetOption {
        /// The option's key.
        key: String,
        /// Its value, as written.
        value: String,
    },
    /// `SET` alone: the options set so far.
    ShowOptions,
    /// `DROP TABLE [IF EXISTS] name`.
    DropTable {
        /// The table.
        name: String,
        /// `IF EXISTS` was given.
        if_exists: bool,
    },
    /// `SHOW TABLES`.
    ShowTables,
    /// `DESCRIBE name`.
    Describe(String),
    /// `CREATE MODEL name INPUT (...) OUTPUT (...) WITH (...)`.
    CreateModel {
        /// The model.
        definition: ModelDefinition,
        /// `IF NOT EXISTS` was given.
        if_not_exists: bool,
    },
    /// `DROP MODEL [IF EXISTS] name`.
    DropModel {
        /// The model.
        name: String,
        /// `IF EXISTS` was given.
        if_exists: bool,
    },
    /// `SHOW MODELS`.
    ShowModels,
    /// `DESCRIBE MODEL name`.
    DescribeModel(String),
    /// `EXPLAIN statement`: the logical plan and the job graph.
    Explain(Box<RiffleStatement>),
    /// `EXPLAIN ANALYZE statement`: runs it, then the plan, the job graph and what the job
    /// did (rows, time, restarts, checkpoints, each model call's counters).
    ExplainAnalyze(Box<RiffleStatement>),
    /// Anything DataFusion plans: a query, `INSERT INTO`, a view.
    Plan(LogicalPlan),
}

/// The significant tokens (no whitespace or comments).
fn significant(tokens: &[TokenWithSpan]) -> Vec<&TokenWithSpan> {
    tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect()
}

fn is_keyword(token: Option<&&TokenWithSpan>, keyword: Keyword) -> bool {
    matches!(token.map(|t| &t.token), Some(Token::Word(word)) if word.keyword == keyword)
}

/// Plans one statement of SQL.
pub async fn parse_statement(session: &RiffleSession, sql: &str) -> Result<RiffleStatement> {
    let mut tokens = tokenize(sql)?;
    // `Session::sql("DROP TABLE t;")`: the semicolon ends the statement, it is not a word of it.
    while tokens
        .last()
        .is_some_and(|t| matches!(t.token, Token::SemiColon | Token::Whitespace(_)))
    {
        tokens.pop();
    }
    let tokens = resolve_named_arguments(rewrite_vector_search(unbracket_tensor_shapes(
        flink_type_names(tokens),
    ))?)?;
    if is_create_model(&tokens) {
        let (definition, if_not_exists) = parse_create_model(session, &tokens).await?;
        return Ok(RiffleStatement::CreateModel {
            definition,
            if_not_exists,
        });
    }
    // The views of ML_PREDICT calls live until the statement is planned.
    let (tokens, _predict_views) = resolve_ml_predict(session, tokens).await?;
    let rewritten = render(&tokens);
    let sql = rewritten.as_str();
    let words = significant(&tokens);
    if words.is_empty() {
        return Err(RiffleError::user("empty statement"));
    }
    if is_keyword(words.first(), Keyword::EXPLAIN) {
        let analyze = is_keyword(words.get(1), Keyword::ANALYZE);
        let keyword = words[usize::from(analyze)];
        let start = tokens
            .iter()
            .position(|t| std::ptr::eq(t, keyword))
            .map(|i| i + 1)
            .unwrap_or(1);
        let inner = render(&tokens[start..]);
        let inner = Box::pin(parse_statement(session, &inner)).await?;
        return Ok(if analyze {
            RiffleStatement::ExplainAnalyze(Box::new(inner))
        } else {
            RiffleStatement::Explain(Box::new(inner))
        });
    }
    if is_keyword(words.first(), Keyword::SET)
        && let Some(statement) = parse_set(&tokens)?
    {
        return Ok(statement);
    }
    if is_keyword(words.first(), Keyword::SHOW) && is_keyword(words.get(1), Keyword::TABLES) {
        return Ok(RiffleStatement::ShowTables);
    }
    let second_is_model = matches!(
        words.get(1).map(|t| &t.token),
        Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("MODEL")
    );
    let second_is_models = matches!(
        words.get(1).map(|t| &t.token),
        Some(Token::Word(w)) if w.value.eq_ignore_ascii_case("MODELS")
    );
    if is_keyword(words.first(), Keyword::SHOW) && second_is_models && words.len() == 2 {
        return Ok(RiffleStatement::ShowModels);
    }
    if (is_keyword(words.first(), Keyword::DESCRIBE) || is_keyword(words.first(), Keyword::DESC))
        && second_is_model
    {
        if words.len() != 3 {
            return Err(RiffleError::user("DESCRIBE MODEL takes one model name")
                .with_hint("DESCRIBE MODEL my_model"));
        }
        return Ok(RiffleStatement::DescribeModel(identifier(words[2])?));
    }
    if is_keyword(words.first(), Keyword::DROP) && second_is_model {
        let if_exists =
            is_keyword(words.get(2), Keyword::IF) && is_keyword(words.get(3), Keyword::EXISTS);
        let rest = if if_exists { &words[4..] } else { &words[2..] };
        if rest.len() != 1 {
            return Err(RiffleError::user("DROP MODEL takes one model name"));
        }
        return Ok(RiffleStatement::DropModel {
            name: identifier(rest[0])?,
            if_exists,
        });
    }
    if is_keyword(words.first(), Keyword::DESCRIBE) || is_keyword(words.first(), Keyword::DESC) {
        if words.len() != 2 {
            return Err(
                RiffleError::user("DESCRIBE takes one table name").with_hint("DESCRIBE my_table")
            );
        }
        return Ok(RiffleStatement::Describe(identifier(words[1])?));
    }
    if is_keyword(words.first(), Keyword::DROP) && is_keyword(words.get(1), Keyword::TABLE) {
        let if_exists =
            is_keyword(words.get(2), Keyword::IF) && is_keyword(words.get(3), Keyword::EXISTS);
        let rest = if if_exists { &words[4..] } else { &words[2..] };
        if rest.len() != 1 {
            return Err(RiffleError::user("DROP TABLE takes one table name"));
        }
        return Ok(RiffleStatement::DropTable {
            name: identifier(rest[0])?,
            if_exists,
        });
    }
    if is_keyword(words.first(), Keyword::CREATE)
        && let Some(with) = connector_with_clause(&tokens)
    {
        return create_table(session, &tokens[..with], &tokens[with + 1..]).await;
    }
    if let Some(cast) = crate::insert_casts::cast_tensor_columns(session, sql).await? {
        return Ok(RiffleStatement::Plan(session.logical_plan(&cast).await?));
    }
    Ok(RiffleStatement::Plan(session.logical_plan(sql).await?))
}

/// Flink's type names that DataFusion's parser does not read, as it reads them:
/// `ROW<name type, ...>` becomes `STRUCT<...>`, `MAP<K, V>` becomes `MAP(K, V)`,
/// `MULTISET<T>` becomes `MAP(T, INT)` (Flink's multiset is a map of each element to its
/// count), and `TIMESTAMP[(p)] WITH LOCAL TIME ZONE` becomes `TIMESTAMP_LTZ[(p)]`. In a
/// `CREATE` statement every such type is rewritten; elsewhere only a type right after `AS`
/// (`CAST(x AS ROW<...>)`), so that a column named `map` compared with `<` stays as it is.
fn flink_type_names(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let tokens = local_time_zone(tokens);
    let first = tokens
        .iter()
        .find(|t| !matches!(t.token, Token::Whitespace(_)));
    let create = is_keyword(first.as_ref(), Keyword::CREATE);
    let next_is_lt = |tokens: &[TokenWithSpan], i: usize| {
        tokens[i + 1..]
            .iter()
            .find(|t| !matches!(t.token, Token::Whitespace(_)))
            .is_some_and(|t| t.token == Token::Lt)
    };
    let previous_is_as = |tokens: &[TokenWithSpan], i: usize| {
        tokens[..i]
            .iter()
            .rev()
            .find(|t| !matches!(t.token, Token::Whitespace(_)))
            .is_some_and(|t| matches!(&t.token, Token::Word(w) if w.keyword == Keyword::AS))
    };
    let word = |token: &Token, name: &str| matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(name));
    let mut out = tokens.clone();
    // Outside CREATE: the end of the type begun after AS (its closing `>`), inside which
    // nested types are rewritten too.
    let mut in_type_until: Option<usize> = None;
    let mut i = 0;
    while i < out.len() {
        if in_type_until.is_some_and(|end| i > end) {
            in_type_until = None;
        }
        let flink_type = (word(&out[i].token, "ROW")
            || word(&out[i].token, "MAP")
            || word(&out[i].token, "MULTISET"))
            && next_is_lt(&out, i);
        if flink_type && !create && in_type_until.is_none() {
            if !previous_is_as(&out, i) {
                i += 1;
                continue;
            }
            in_type_until = matching_gt(&out, i).map(|(close, _)| close);
        }
        if flink_type && word(&out[i].token, "ROW") {
            out[i].token = Token::make_word("STRUCT", None);
        } else if flink_type {
            let multiset = word(&out[i].token, "MULTISET");
            if let Some((close, depth)) = matching_gt(&out, i) {
                let open = i
                    + 1
                    + out[i + 1..]
                        .iter()
                        .position(|t| t.token == Token::Lt)
                        .unwrap_or(0);
                out[i].token = Token::make_word("MAP", None);
                out[open].token = Token::LParen;
                out[close].token = Token::RParen;
                let mut at = close;
                if multiset {
                    // MULTISET<T>: MAP(T, INT).
                    for token in [Token::Comma, Token::make_word("INT", None)] {
                        out.insert(at, TokenWithSpan::wrap(token));
                        at += 1;
                    }
                    if let Some(end) = in_type_until.as_mut() {
                        *end += 2;
                    }
                }
                if depth != 0 {
                    // `>>`: this type's end and the enclosing type's.
                    out.insert(at + 1, TokenWithSpan::wrap(Token::Gt));
                    if let Some(end) = in_type_until.as_mut() {
                        *end += 1;
                    }
                }
            }
        }
        i += 1;
    }
    out
}

/// The `>` that closes the type whose `<` follows token `i`, and the depth left there (-1
/// when a `>>` closes it and the enclosing type).
fn matching_gt(tokens: &[TokenWithSpan], i: usize) -> Option<(usize, i32)> {
    let open = i + 1 + tokens[i + 1..].iter().position(|t| t.token == Token::Lt)?;
    let mut depth = 0i32;
    for (j, token) in tokens.iter().enumerate().skip(open) {
        match token.token {
            Token::Lt => depth += 1,
            Token::Gt => depth -= 1,
            Token::ShiftRight => depth -= 2,
            _ => {}
        }
        if depth <= 0 {
            return Some((j, depth));
        }
    }
    None
}

/// `TIMESTAMP[(p)] WITH LOCAL TIME ZONE` as `TIMESTAMP_LTZ[(p)]`.
fn local_time_zone(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let word = |token: &TokenWithSpan, name: &str| matches!(&token.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(name));
    let significant: Vec<usize> = (0..tokens.len())
        .filter(|&i| !matches!(tokens[i].token, Token::Whitespace(_)))
        .collect();
    let mut drop = vec![false; tokens.len()];
    let mut out = tokens.clone();
    for (k, &i) in significant.iter().enumerate() {
        if !word(&tokens[i], "TIMESTAMP") {
            continue;
        }
        // An optional precision: `(`, a number, `)`.
        let mut next = k + 1;
        if significant
            .get(next)
            .is_some_and(|&j| tokens[j].token == Token::LParen)
            && significant
                .get(next + 2)
                .is_some_and(|&j| tokens[j].token == Token::RParen)
        {
            next += 3;
        }
        let tail = ["WITH", "LOCAL", "TIME", "ZONE"];
        let matches = tail.iter().enumerate().all(|(offset, name)| {
            significant
                .get(next + offset)
                .is_some_and(|&j| word(&tokens[j], name))
        });
        if matches {
            out[i].token = Token::make_word("TIMESTAMP_LTZ", None);
            let first = significant[next];
            let last = significant[next + tail.len() - 1];
            for flag in drop.iter_mut().take(last + 1).skip(first) {
                *flag = true;
            }
            // The whitespace before WITH goes too.
            if let Some(space) = first.checked_sub(1)
                && matches!(tokens[space].token, Token::Whitespace(_))
            {
                drop[space] = true;
            }
        }
    }
    out.into_iter()
        .zip(drop)
        .filter_map(|(token, dropped)| (!dropped).then_some(token))
        .collect()
}

/// SQL type modifiers cannot hold brackets: `TENSOR(FLOAT, [3, 224, 224])` becomes
/// `TENSOR(FLOAT, 3, 224, 224)`, which the type planner reads.
fn unbracket_tensor_shapes(tokens: Vec<TokenWithSpan>) -> Vec<TokenWithSpan> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut depth_in_tensor: Option<i32> = None;
    let mut after_tensor = false;
    for token in tokens {
        match (&token.token, depth_in_tensor) {
            (Token::Word(word), None) if word.value.eq_ignore_ascii_case("TENSOR") => {
                after_tensor = true;
            }
            (Token::LParen, None) if after_tensor => {
                depth_in_tensor = Some(1);
                after_tensor = false;
            }
            (Token::LParen, Some(depth)) => depth_in_tensor = Some(depth + 1),
            (Token::RParen, Some(depth)) => {
                depth_in_tensor = (depth > 1).then_some(depth - 1);
            }
            (Token::LBracket | Token::RBracket, Some(_)) => continue,
            (Token::Whitespace(_), None) => {}
            _ => after_tensor = false,
        }
        out.push(token);
    }
    out
}

fn identifier(token: &TokenWithSpan) -> Result<String> {
    match &token.token {
        Token::Word(word) if word.quote_style.is_some() => Ok(word.value.clone()),
        Token::Word(word) => Ok(word.value.to_ascii_lowercase()),
        other => Err(RiffleError::user(format!(
            "expected a table name, found '{other}'"
        ))),
    }
}

/// The position of the `WITH` that follows the column list of `CREATE TABLE`, if any.
fn connector_with_clause(tokens: &[TokenWithSpan]) -> Option<usize> {
    // `CREATE TABLE t WITH (...)` without columns is allowed too (columns inferred from the
    // files); `CREATE TABLE t AS ...` is DataFusion's.
    let mut depth = 0i32;
    for (index, token) in tokens.iter().enumerate() {
        match &token.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(word) if depth == 0 && word.keyword == Keyword::AS => return None,
            Token::Word(word) if depth == 0 && word.keyword == Keyword::WITH => return Some(index),
            _ => {}
        }
    }
    None
}

async fn create_table(
    session: &RiffleSession,
    head: &[TokenWithSpan],
    after_with: &[TokenWithSpan],
) -> Result<RiffleStatement> {
    let (options, query) = split_as_query(after_with);
    let options = parse_options(options)?;
    let mut head_sql = render(head);
    let has_columns = head.iter().any(|t| t.token == Token::LParen);
    if query.is_some() && has_columns {
        return Err(RiffleError::user(
            "CREATE TABLE ... WITH (...) AS takes its columns from the query",
        )
        .with_hint("remove the column list, or CREATE the table and INSERT INTO it"));
    }
    if !has_columns {
        head_sql.push_str(" ()");
    }
    let plan = session.logical_plan(&head_sql).await?;
    let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) = plan else {
        return Err(RiffleError::user(
            "a WITH clause is only allowed on CREATE TABLE name (columns) WITH (...)",
        ));
    };
    let name = create.name.table().to_string();
    let if_not_exists = create.if_not_exists;
    let Some(query) = query else {
        let schema = create.input.schema().inner().clone();
        return Ok(RiffleStatement::CreateTable {
            definition: TableDefinition {
                name,
                schema,
                options,
            },
            if_not_exists,
        });
    };
    let query = session.logical_plan(&render(query)).await?;
    if matches!(
        query,
        LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Statement(_)
    ) {
        return Err(RiffleError::user(format!(
            "CREATE TABLE {name} ... AS takes a query (SELECT, VALUES)"
        )));
    }
    Ok(RiffleStatement::CreateTableAs {
        definition: TableDefinition {
            name,
            schema: query.schema().inner().clone(),
            options,
        },
        if_not_exists,
        query,
    })
}

/// Splits what follows `WITH` into the options and, after `AS`, the query (Flink's
/// `CREATE TABLE t WITH (...) AS SELECT ...`).
fn split_as_query(tokens: &[TokenWithSpan]) -> (&[TokenWithSpan], Option<&[TokenWithSpan]>) {
    let mut depth = 0i32;
    for (index, token) in tokens.iter().enumerate() {
        match &token.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(word) if depth == 0 && word.keyword == Keyword::AS => {
                return (&tokens[..index], Some(&tokens[index + 1..]));
            }
            _ => {}
        }
    }
    (tokens, None)
}

/// Parses `('key' = 'value', ...)`.
pub(crate) fn parse_options(tokens: &[TokenWithSpan]) -> Result<BTreeMap<String, String>> {
    let tokens = significant(tokens);
    let syntax = |found: &str| {
        RiffleError::user(format!("invalid WITH options near {found}")).with_hint(
            "write WITH ('connector' = 'filesystem', 'path' = '...', 'format' = 'parquet')",
        )
    };
    let mut options = BTreeMap::new();
    let mut iter = tokens.into_iter().peekable();
    match iter.next() {
        Some(t) if t.token == Token::LParen => {}
        Some(t) => return Err(syntax(&t.token.to_string())),
        None => return Err(syntax("end of statement")),
    }
    loop {
        let key = match iter.next().map(|t| &t.token) {
            Some(Token::SingleQuotedString(key)) => key.clone(),
            Some(Token::Word(word)) => word.value.clone(),
            Some(Token::RParen) if options.is_empty() => break,
            Some(other) => return Err(syntax(&other.to_string())),
            None => return Err(syntax("end of statement")),
        };
        match iter.next().map(|t| &t.token) {
            Some(Token::Eq) => {}
            Some(other) => return Err(syntax(&other.to_string())),
            None => return Err(syntax("end of statement")),
        }
        let value = match iter.next().map(|t| &t.token) {
            Some(Token::SingleQuotedString(value)) => value.clone(),
            Some(Token::Number(value, _)) => value.clone(),
            Some(Token::Word(word)) => word.value.clone(),
            Some(other) => return Err(syntax(&other.to_string())),
            None => return Err(syntax("end of statement")),
        };
        if options.insert(key.clone(), value).is_some() {
            return Err(RiffleError::user(format!("option '{key}' is given twice")));
        }
        match iter.next().map(|t| &t.token) {
            Some(Token::Comma) => continue,
            Some(Token::RParen) => break,
            Some(other) => return Err(syntax(&other.to_string())),
            None => return Err(syntax("end of statement")),
        }
    }
    if let Some(extra) = iter.next() {
        return Err(syntax(&extra.token.to_string()));
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use riffle_common::JobConfig;

    use super::*;

    #[tokio::test]
    async fn flink_style_create_table_keeps_columns_and_options() {
        let session = RiffleSession::new(JobConfig::default()).unwrap();
        let statement = parse_statement(
            &session,
            "CREATE TABLE IF NOT EXISTS Orders (id BIGINT NOT NULL, price DECIMAL(10, 2), note VARCHAR)\n\
             WITH ('connector' = 'filesystem', 'path' = '/tmp/x', format = 'csv')",
        )
        .await
        .unwrap();
        let RiffleStatement::CreateTable {
            definition,
            if_not_exists,
        } = statement
        else {
            panic!("expected CREATE TABLE, got {statement:?}");
        };
        assert!(if_not_exists);
        assert_eq!(definition.name, "orders");
        assert_eq!(definition.schema.fields().len(), 3);
        assert!(!definition.schema.field(0).is_nullable());
        assert_eq!(definition.options["connector"], "filesystem");
        assert_eq!(definition.options["format"], "csv");
    }

    /// The column types, as Arrow prints them, of a `CREATE TABLE ... WITH (...)`.
    async fn created_types(session: &RiffleSession, sql: &str) -> Vec<String> {
        let statement = parse_statement(session, sql).await.unwrap();
        let RiffleStatement::CreateTable { definition, .. } = statement else {
            panic!("expected CREATE TABLE, got {statement:?}");
        };
        definition
            .schema
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect()
    }

    #[tokio::test]
    async fn flinks_binary_and_instant_type_names_are_accepted() {
        use datafusion::arrow::datatypes::{DataType, TimeUnit};
        let session = RiffleSession::new(JobConfig::default()).unwrap();
        let statement = parse_statement(
            &session,
            "CREATE TABLE t (a BYTES, b VARBINARY, c BINARY(16), d TIMESTAMP_LTZ(3), \
             e TIMESTAMP_LTZ(9)) WITH ('connector' = 'filesystem', 'path' = '/tmp/x', \
             'format' = 'parquet')",
        )
        .await
        .unwrap();
        let RiffleStatement::CreateTable { definition, .. } = statement else {
            panic!("expected CREATE TABLE, got {statement:?}");
        };
        let types: Vec<DataType> = definition
            .schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        assert_eq!(
            types,
            vec![
                DataType::Binary,
                DataType::Binary,
                DataType::FixedSizeBinary(16),
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            ]
        );
        // ROW<...> and MAP<K, V>, nested too.
        let shown = created_types(
            &session,
            "CREATE TABLE u (r ROW<x INT, tags MAP<STRING, BIGINT>>, m MAP<STRING, DOUBLE>) \
             WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'parquet')",
        )
        .await;
        assert!(
            shown[0].starts_with("Struct(") && shown[0].contains("Map("),
            "{shown:?}"
        );
        assert!(shown[1].starts_with("Map("), "{shown:?}");
        let error = parse_statement(&session, "SELECT CAST(1 AS TIMESTAMP_LTZ(12))")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("0 to 9"), "{error}");
        // MULTISET<T> and TIMESTAMP(p) WITH LOCAL TIME ZONE in CREATE; ROW, MAP and the
        // rest in CAST; a column named map compared with < is left alone.
        let shown = created_types(
            &session,
            "CREATE TABLE v (s MULTISET<STRING>, t TIMESTAMP(3) WITH LOCAL TIME ZONE, \
             r ROW<a MULTISET<BIGINT>>) \
             WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'parquet')",
        )
        .await;
        assert!(
            shown[0].starts_with("Map(") && shown[0].contains("Int32"),
            "{shown:?}"
        );
        assert_eq!(shown[1], "Timestamp(ms, \"UTC\")", "{shown:?}");
        assert!(
            shown[2].starts_with("Struct(") && shown[2].contains("Map("),
            "{shown:?}"
        );
        for sql in [
            "SELECT CAST(named_struct('x', 1, 'y', 'a') AS ROW<x BIGINT, y STRING>)",
            "SELECT CAST(NULL AS MAP<STRING, BIGINT>)",
            "SELECT CAST(NULL AS TIMESTAMP WITH LOCAL TIME ZONE)",
            "SELECT CAST(NULL AS ROW<m MAP<STRING, DOUBLE>>)",
        ] {
            parse_statement(&session, sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let map_column = parse_statement(
            &session,
            "SELECT map FROM (SELECT 1 AS map) WHERE map < 2 AND map > 0",
        )
        .await;
        assert!(map_column.is_ok(), "{map_column:?}");
    }

    #[tokio::test]
    async fn bad_options_name_what_is_wrong() {
        let session = RiffleSession::new(JobConfig::default()).unwrap();
        let error = parse_statement(&session, "CREATE TABLE t (a INT) WITH ('connector' 'x')")
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("invalid WITH options near 'x'"),
            "{error}"
        );
        let error = parse_statement(
            &session,
            "CREATE TABLE t (a NOTATYPE) WITH ('connector' = 'x')",
        )
        .await
        .unwrap_err();
        assert!(
            error.to_string().to_lowercase().contains("notatype"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn riffle_statements_are_recognized() {
        let session = RiffleSession::new(JobConfig::default()).unwrap();
        assert!(matches!(
            parse_statement(&session, "show tables").await.unwrap(),
            RiffleStatement::ShowTables
        ));
        assert!(
            matches!(parse_statement(&session, "DESCRIBE t").await.unwrap(), RiffleStatement::Describe(name) if name == "t")
        );
        assert!(matches!(
            parse_statement(&session, "EXPLAIN SELECT 1").await.unwrap(),
            RiffleStatement::Explain(inner) if matches!(*inner, RiffleStatement::Plan(_))
        ));
        assert!(matches!(
            parse_statement(&session, "DROP TABLE IF EXISTS t")
                .await
                .unwrap(),
            RiffleStatement::DropTable {
                if_exists: true,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_trailing_semicolon_is_not_a_word_of_the_statement() {
        let session = RiffleSession::new(JobConfig::default()).unwrap();
        assert!(
            matches!(parse_statement(&session, "DESCRIBE t;").await.unwrap(), RiffleStatement::Describe(name) if name == "t")
        );
        assert!(matches!(
            parse_statement(&session, "DROP TABLE t ; \n").await.unwrap(),
            RiffleStatement::DropTable { name, if_exists: false } if name == "t"
        ));
        assert!(matches!(
            parse_statement(
                &session,
                "CREATE TABLE t (a INT) WITH ('connector' = 'datagen');"
            )
            .await
            .unwrap(),
            RiffleStatement::CreateTable { .. }
        ));
    }

    #[tokio::test]
    async fn create_table_with_as_takes_the_querys_columns() {
        let session = RiffleSession::new(JobConfig::default()).unwrap();
        let statement = parse_statement(
            &session,
            "CREATE TABLE out WITH ('connector' = 'filesystem', 'path' = '/tmp/x', 'format' = 'parquet') \
             AS SELECT x, x * 2 AS y FROM (VALUES (1), (2)) AS t(x)",
        )
        .await
        .unwrap();
        let RiffleStatement::CreateTableAs {
            definition, query, ..
        } = statement
        else {
            panic!("expected CREATE TABLE AS, got {statement:?}");
        };
        assert_eq!(definition.name, "out");
        assert_eq!(definition.options["format"], "parquet");
        let names: Vec<&str> = definition
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(names, ["x", "y"]);
        assert_eq!(query.schema().fields().len(), 2);
        let error = parse_statement(
            &session,
            "CREATE TABLE out (x INT) WITH ('connector' = 'datagen') AS SELECT 1 AS x",
        )
        .await
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("takes its columns from the query"),
            "{error}"
        );
    }
}
