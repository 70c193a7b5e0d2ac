//! Riffle's statements, and the Flink-style `CREATE TABLE ... WITH (...)`.
//!
//! DataFusion's parser does not know `WITH ('connector' = ...)`. Riffle cuts the statement
//! at that `WITH`: the part before it is ordinary `CREATE TABLE name (columns)`, which
//! DataFusion plans (so column types follow DataFusion's SQL type rules), and the options
//! after it are read here.

use std::collections::BTreeMap;

use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use riffle_common::{Result, RiffleError};
use riffle_plan::{RiffleSession, TableDefinition};

use crate::named_args::resolve_named_arguments;
use crate::script::{render, tokenize};
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
    /// `EXPLAIN statement`: the logical plan and the job graph.
    Explain(Box<RiffleStatement>),
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
    let tokens = resolve_named_arguments(rewrite_vector_search(unbracket_tensor_shapes(
        tokenize(sql)?,
    ))?)?;
    let rewritten = render(&tokens);
    let sql = rewritten.as_str();
    let words = significant(&tokens);
    if words.is_empty() {
        return Err(RiffleError::user("empty statement"));
    }
    if is_keyword(words.first(), Keyword::EXPLAIN) {
        if is_keyword(words.get(1), Keyword::ANALYZE) {
            return Err(RiffleError::user("EXPLAIN ANALYZE is not supported yet")
                .with_hint("use EXPLAIN to see the plan and the job graph"));
        }
        let start = tokens
            .iter()
            .position(|t| std::ptr::eq(t, words[0]))
            .map(|i| i + 1)
            .unwrap_or(1);
        let inner = render(&tokens[start..]);
        let inner = Box::pin(parse_statement(session, &inner)).await?;
        return Ok(RiffleStatement::Explain(Box::new(inner)));
    }
    if is_keyword(words.first(), Keyword::SHOW) && is_keyword(words.get(1), Keyword::TABLES) {
        return Ok(RiffleStatement::ShowTables);
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
    Ok(RiffleStatement::Plan(session.logical_plan(sql).await?))
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
    options: &[TokenWithSpan],
) -> Result<RiffleStatement> {
    let options = parse_options(options)?;
    let mut head_sql = render(head);
    let has_columns = head.iter().any(|t| t.token == Token::LParen);
    if !has_columns {
        head_sql.push_str(" ()");
    }
    let plan = session.logical_plan(&head_sql).await?;
    match plan {
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => {
            let schema = create.input.schema().inner().clone();
            Ok(RiffleStatement::CreateTable {
                definition: TableDefinition {
                    name: create.name.table().to_string(),
                    schema,
                    options,
                },
                if_not_exists: create.if_not_exists,
            })
        }
        _ => Err(RiffleError::user(
            "a WITH clause is only allowed on CREATE TABLE name (columns) WITH (...)",
        )),
    }
}

/// Parses `('key' = 'value', ...)`.
fn parse_options(tokens: &[TokenWithSpan]) -> Result<BTreeMap<String, String>> {
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
}
