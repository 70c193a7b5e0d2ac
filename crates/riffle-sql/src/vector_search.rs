//! `VECTOR_SEARCH(TABLE t, query, DESCRIPTOR(column), k [, 'metric'])`, Flink's syntax, as
//! an exact brute-force search.
//!
//! The call is rewritten, before DataFusion plans the statement, into a subquery that scores
//! every row with a vectorized vector function and keeps the top `k` (DataFusion's top-k
//! sort): `(SELECT *, cosine_similarity(column, query) AS score FROM t ORDER BY score DESC
//! LIMIT k)`. Metrics: `'cosine'` (default, highest first), `'inner_product'` (highest
//! first), `'l2'` (the distance, lowest first). The query is a constant vector.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use riffle_common::{Result, RiffleError};

use crate::script::{call_arguments, render, tokenize};

fn usage(detail: &str) -> RiffleError {
    RiffleError::user(format!("VECTOR_SEARCH: {detail}")).with_hint(
        "write VECTOR_SEARCH(TABLE docs, [0.1, 0.2, 0.3], DESCRIPTOR(embedding), 10), optionally with a metric: 'cosine', 'inner_product' or 'l2'",
    )
}

/// Rewrites every `VECTOR_SEARCH(...)` call in `tokens`.
pub(crate) fn rewrite_vector_search(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    let is_call = |i: usize, tokens: &[TokenWithSpan]| {
        matches!(&tokens[i].token, Token::Word(w) if w.value.eq_ignore_ascii_case("VECTOR_SEARCH"))
            && tokens[i + 1..]
                .iter()
                .find(|t| !matches!(t.token, Token::Whitespace(_)))
                .is_some_and(|t| t.token == Token::LParen)
    };
    if !(0..tokens.len()).any(|i| is_call(i, &tokens)) {
        return Ok(tokens);
    }
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        if !is_call(i, &tokens) {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        }
        let open = i
            + 1
            + tokens[i + 1..]
                .iter()
                .position(|t| t.token == Token::LParen)
                .unwrap_or(0);
        let (args, end) =
            call_arguments(&tokens, open).ok_or_else(|| usage("the call is not closed"))?;
        let subquery = rewrite_call(&args)?;
        out.extend(tokenize(&subquery)?);
        i = end + 1;
    }
    Ok(out)
}

fn words(tokens: &[TokenWithSpan]) -> Vec<&Token> {
    tokens
        .iter()
        .map(|t| &t.token)
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect()
}

fn rewrite_call(args: &[Vec<TokenWithSpan>]) -> Result<String> {
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
    Ok(format!(
        "(SELECT *, {function}({column}, {query}) AS score FROM {table} \
         ORDER BY score {order} NULLS LAST LIMIT {k})"
    ))
}
