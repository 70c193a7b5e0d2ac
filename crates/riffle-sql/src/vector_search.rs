//! `VECTOR_SEARCH(TABLE t, query, DESCRIPTOR(column), k [, 'metric'])`, Flink's syntax, as
//! an exact brute-force search.
//!
//! The call is rewritten, before DataFusion plans the statement, into a subquery that scores
//! every row with a vectorized vector function and keeps the top `k` (DataFusion's top-k
//! sort): `(SELECT *, cosine_similarity(column, query) AS score FROM t ORDER BY score DESC
//! LIMIT k)`. Metrics: `'cosine'` (default, highest first), `'inner_product'` (highest
//! first), `'l2'` (the distance, lowest first).
//!
//! Flink's lateral form, one search per row, `FROM q, LATERAL TABLE(VECTOR_SEARCH(TABLE
//! docs, q.embedding, DESCRIPTOR(embedding), k)) AS s`, becomes a join of `q` with the top
//! `k` of each distinct query vector (ranked by a window over the table crossed with the
//! distinct vectors), on the vector: `s` has the table's columns, `score` and
//! `query_vector`. Rows whose query vector is NULL find nothing.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use riffle_common::{Result, RiffleError};

use crate::script::{call_arguments, call_open, render, tokenize};

fn usage(detail: &str) -> RiffleError {
    RiffleError::user(format!("VECTOR_SEARCH: {detail}")).with_hint(
        "write VECTOR_SEARCH(TABLE docs, [0.1, 0.2, 0.3], DESCRIPTOR(embedding), 10), optionally with a metric: 'cosine', 'inner_product' or 'l2'",
    )
}

/// Rewrites every `VECTOR_SEARCH(...)` call in `tokens`.
pub(crate) fn rewrite_vector_search(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    if !(0..tokens.len()).any(|i| call_open(&tokens, i, "VECTOR_SEARCH").is_some()) {
        return Ok(tokens);
    }
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let Some(open) = call_open(&tokens, i, "VECTOR_SEARCH") else {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        };
        let (args, end) =
            call_arguments(&tokens, open).ok_or_else(|| usage("the call is not closed"))?;
        let search = parse_call(&args)?;
        if let Some(left) = strip_lateral(&mut out) {
            // `LATERAL TABLE(VECTOR_SEARCH(...))`: past the TABLE call's `)`, then an alias.
            let after = skip_to(&tokens, end + 1, &Token::RParen)
                .ok_or_else(|| usage("LATERAL TABLE(VECTOR_SEARCH(...)) is not closed"))?;
            let (alias, next) = alias_after(&tokens, after);
            out.extend(tokenize(&search.lateral_join(&left, &alias))?);
            i = next;
            continue;
        }
        out.extend(tokenize(&search.constant_query())?);
        i = end + 1;
    }
    Ok(out)
}

/// If `out` ends with `<from item>, LATERAL TABLE(`, removes `, LATERAL TABLE(` and
/// returns the from item's SQL (which stays in `out`).
fn strip_lateral(out: &mut Vec<TokenWithSpan>) -> Option<String> {
    let significant: Vec<usize> = (0..out.len())
        .filter(|&i| !matches!(out[i].token, Token::Whitespace(_)))
        .collect();
    let n = significant.len();
    if n < 5 {
        return None;
    }
    let is_word = |i: usize, word: &str| matches!(&out[i].token, Token::Word(w) if w.value.eq_ignore_ascii_case(word));
    let [comma, lateral, table, open] = [
        significant[n - 4],
        significant[n - 3],
        significant[n - 2],
        significant[n - 1],
    ];
    if out[comma].token != Token::Comma
        || !is_word(lateral, "LATERAL")
        || !is_word(table, "TABLE")
        || out[open].token != Token::LParen
    {
        return None;
    }
    // The from item: back from the comma to the FROM (or JOIN, or comma) at its depth.
    let mut depth = 0i32;
    let mut start = None;
    for j in (0..comma).rev() {
        match &out[j].token {
            Token::RParen => depth += 1,
            Token::LParen => depth -= 1,
            Token::Comma if depth == 0 => {
                start = Some(j);
                break;
            }
            Token::Word(w)
                if depth == 0 && (w.keyword == Keyword::FROM || w.keyword == Keyword::JOIN) =>
            {
                start = Some(j);
                break;
            }
            _ => {}
        }
    }
    let item = render(&out[start? + 1..comma]);
    out.truncate(comma);
    Some(item)
}

/// The position just after the next `token` from `i`.
fn skip_to(tokens: &[TokenWithSpan], i: usize, token: &Token) -> Option<usize> {
    (i..tokens.len())
        .find(|&j| &tokens[j].token == token)
        .map(|j| j + 1)
}

/// The alias after a lateral table (`AS s` or `s`; `vector_search` if none), and where the
/// rest of the statement starts.
fn alias_after(tokens: &[TokenWithSpan], i: usize) -> (String, usize) {
    let next_word = |from: usize| {
        (from..tokens.len())
            .find(|&j| !matches!(tokens[j].token, Token::Whitespace(_)))
            .and_then(|j| match &tokens[j].token {
                Token::Word(w) => Some((j, w.clone())),
                _ => None,
            })
    };
    match next_word(i) {
        Some((j, w)) if w.keyword == Keyword::AS => match next_word(j + 1) {
            Some((k, alias)) => (Token::Word(alias).to_string(), k + 1),
            None => ("vector_search".into(), j + 1),
        },
        Some((j, w)) if w.keyword == Keyword::NoKeyword => (Token::Word(w).to_string(), j + 1),
        _ => ("vector_search".into(), i),
    }
}

fn words(tokens: &[TokenWithSpan]) -> Vec<&Token> {
    tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect()
}

/// A parsed `VECTOR_SEARCH(TABLE t, query, DESCRIPTOR(column), k [, metric])`.
struct Search {
    table: String,
    query: String,
    column: String,
    k: String,
    function: &'static str,
    order: &'static str,
}

fn parse_call(args: &[Vec<TokenWithSpan>]) -> Result<Search> {
    if args.len() < 4 || args.len() > 5 {
        return Err(usage(&format!(
            "takes 4 or 5 arguments, not {}",
            args.len()
        )));
    }
    let table = match words(&args[0]).as_slice() {
        [Token::Word(keyword), rest @ ..]
            if keyword.keyword == Keyword::TABLE && !rest.is_empty() =>
        {
            rest.iter().map(|t| t.to_string()).collect::<String>()
        }
        _ => {
            return Err(usage(
                "the first argument is TABLE followed by a table name",
            ));
        }
    };
    let query = render(&args[1]);
    if query.is_empty() {
        return Err(usage("the second argument is the query vector"));
    }
    let column = match words(&args[2]).as_slice() {
        [
            Token::Word(descriptor),
            Token::LParen,
            Token::Word(column),
            Token::RParen,
        ] if descriptor.value.eq_ignore_ascii_case("DESCRIPTOR") => {
            Token::Word(column.clone()).to_string()
        }
        _ => return Err(usage("the third argument is DESCRIPTOR(column)")),
    };
    let k = match words(&args[3]).as_slice() {
        [Token::Number(n, _)] if n.parse::<u64>().is_ok_and(|k| k > 0) => n.clone(),
        _ => {
            return Err(usage(
                "the fourth argument is the number of rows to return, above 0",
            ));
        }
    };
    let metric = match args.get(4).map(|a| words(a)) {
        None => "cosine".to_string(),
        Some(tokens) => match tokens.as_slice() {
            [Token::SingleQuotedString(metric)] => metric.to_ascii_lowercase(),
            _ => return Err(usage("the fifth argument is a metric name in quotes")),
        },
    };
    let (function, order) = match metric.as_str() {
        "cosine" => ("cosine_similarity", "DESC"),
        "inner_product" | "dot" => ("inner_product", "DESC"),
        "l2" | "euclidean" => ("l2_distance", "ASC"),
        other => return Err(usage(&format!("unknown metric '{other}'"))),
    };
    Ok(Search {
        table,
        query,
        column,
        k,
        function,
        order,
    })
}

impl Search {
    /// A constant query vector: one top-k over the table.
    fn constant_query(&self) -> String {
        let Search {
            table,
            query,
            column,
            k,
            function,
            order,
        } = self;
        format!(
            "(SELECT *, {function}({column}, {query}) AS score FROM {table} \
             ORDER BY score {order} NULLS LAST LIMIT {k})"
        )
    }

    /// Flink's lateral form, a query vector per row of `left`: the top k of every distinct
    /// query vector (a window over the table crossed with the distinct vectors), joined back
    /// to the rows by their vector. Beside the table's columns and `score` it has
    /// `query_vector`, the vector the row was found for.
    fn lateral_join(&self, left: &str, alias: &str) -> String {
        let Search {
            table,
            query,
            column,
            k,
            function,
            order,
        } = self;
        let score = format!("{function}(__riffle_d.{column}, __riffle_q.query_vector)");
        format!(
            " JOIN (SELECT * EXCLUDE (__riffle_rank) FROM (\
             SELECT __riffle_q.query_vector, __riffle_d.*, {score} AS score, \
             row_number() OVER (PARTITION BY __riffle_q.query_vector \
             ORDER BY {score} {order} NULLS LAST) AS __riffle_rank \
             FROM (SELECT DISTINCT {query} AS query_vector FROM {left} WHERE {query} IS NOT NULL) \
             AS __riffle_q CROSS JOIN {table} AS __riffle_d) WHERE __riffle_rank <= {k}) AS {alias} \
             ON {alias}.query_vector = {query} "
        )
    }
}
