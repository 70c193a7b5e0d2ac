//! Models in SQL, in Flink's syntax: `CREATE MODEL`, `SHOW MODELS`, `DESCRIBE MODEL`,
//! `DROP MODEL`, and the `ML_PREDICT` table function.
//!
//! `ML_PREDICT(TABLE t, MODEL m, DESCRIPTOR(cols) [, MAP['key', 'value', ...]])` is planned
//! as Riffle's own logical node ([`MlPredictNode`]), not as a rewrite into other SQL: the
//! call's input is planned (`SELECT * FROM t`), the node is put on top of it, and the
//! statement refers to the node through a view registered for the statement's planning only
//! (DataFusion inlines a view's plan where it is scanned). EXPLAIN, the optimizer and the
//! job graph all see the node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datafusion::catalog::TableProvider;
use datafusion::datasource::ViewTable;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use riffle_common::{Result, RiffleError};
use riffle_plan::{MlPredictNode, ModelDefinition, RiffleSession};

use crate::script::{call_arguments, call_open, render, tokenize};

fn model_usage(detail: &str) -> RiffleError {
    RiffleError::user(format!("CREATE MODEL: {detail}")).with_hint(
        "write CREATE MODEL name INPUT (text STRING) OUTPUT (embedding VECTOR(FLOAT, 384)) \
         WITH ('provider' = 'openai', 'endpoint' = 'http://host/v1/embeddings')",
    )
}

fn predict_usage(detail: &str) -> RiffleError {
    RiffleError::user(format!("ML_PREDICT: {detail}")).with_hint(
        "write ML_PREDICT(TABLE t, MODEL m, DESCRIPTOR(column, ...)), optionally with \
         MAP['capacity', '8', 'output-mode', 'allow_unordered']",
    )
}

fn significant(tokens: &[TokenWithSpan]) -> Vec<&TokenWithSpan> {
    tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect()
}

fn is_word(token: Option<&&TokenWithSpan>, word: &str) -> bool {
    matches!(token.map(|t| &t.token), Some(Token::Word(w)) if w.value.eq_ignore_ascii_case(word))
}

fn name_of(token: &TokenWithSpan) -> Option<String> {
    match &token.token {
        Token::Word(word) if word.quote_style.is_some() => Some(word.value.clone()),
        Token::Word(word) => Some(word.value.to_ascii_lowercase()),
        _ => None,
    }
}

/// Whether the statement is `CREATE MODEL ...`.
pub(crate) fn is_create_model(tokens: &[TokenWithSpan]) -> bool {
    let words = significant(tokens);
    is_word(words.first(), "CREATE") && is_word(words.get(1), "MODEL")
}

/// `CREATE MODEL [IF NOT EXISTS] name INPUT (...) OUTPUT (...) [COMMENT '...'] WITH (...)`:
/// the model, and whether `IF NOT EXISTS` was given.
pub(crate) async fn parse_create_model(
    session: &RiffleSession,
    tokens: &[TokenWithSpan],
) -> Result<(ModelDefinition, bool)> {
    let words = significant(tokens);
    let mut at = 2;
    let if_not_exists = is_word(words.get(at), "IF")
        && is_word(words.get(at + 1), "NOT")
        && is_word(words.get(at + 2), "EXISTS");
    if if_not_exists {
        at += 3;
    }
    let name = words
        .get(at)
        .and_then(|t| name_of(t))
        .ok_or_else(|| model_usage("the model needs a name"))?;
    at += 1;
    // Positions in `tokens` of the significant words, to cut column lists out.
    let position = |word: &TokenWithSpan| {
        tokens
            .iter()
            .position(|t| std::ptr::eq(t, word))
            .unwrap_or(tokens.len())
    };
    let columns = |keyword: &str, at: &mut usize| -> Result<Option<Vec<TokenWithSpan>>> {
        if !is_word(words.get(*at), keyword) {
            return Ok(None);
        }
        let open = words
            .get(*at + 1)
            .filter(|t| t.token == Token::LParen)
            .ok_or_else(|| model_usage(&format!("{keyword} takes a column list in parentheses")))?;
        let start = position(open);
        let (_, close) = call_arguments(tokens, start)
            .ok_or_else(|| model_usage(&format!("the {keyword} column list is not closed")))?;
        while *at < words.len() && position(words[*at]) <= close {
            *at += 1;
        }
        Ok(Some(tokens[start..=close].to_vec()))
    };
    let input = columns("INPUT", &mut at)?;
    let output = columns("OUTPUT", &mut at)?
        .ok_or_else(|| model_usage(&format!("model {name} declares no OUTPUT columns")))?;
    if is_word(words.get(at), "COMMENT") {
        at += 2;
    }
    if !matches!(words.get(at).map(|t| &t.token), Some(Token::Word(w)) if w.keyword == Keyword::WITH)
    {
        return Err(model_usage(&format!(
            "model {name} needs WITH ('provider' = ...) after its columns"
        )));
    }
    let options = crate::ddl::parse_options(&tokens[position(words[at]) + 1..])?;
    let schema_of = |list: Option<Vec<TokenWithSpan>>| async move {
        let Some(list) = list else {
            return Ok(Arc::new(datafusion::arrow::datatypes::Schema::empty()));
        };
        let sql = format!("CREATE TABLE __riffle_model_columns {}", render(&list));
        match session.logical_plan(&sql).await? {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(create)) => {
                Ok(Arc::new(create.input.schema().as_arrow().clone()))
            }
            _ => Err(model_usage("the column lists must be name type, ...")),
        }
    };
    let input = schema_of(input).await?;
    let output = schema_of(Some(output)).await?;
    Ok((
        ModelDefinition {
            name,
            input,
            output,
            options,
            fallback: None,
        },
        if_not_exists,
    ))
}

/// Views registered for one statement's `ML_PREDICT` calls; deregistered when dropped.
pub(crate) struct PredictViews<'a> {
    session: &'a RiffleSession,
    names: Vec<String>,
}

impl Drop for PredictViews<'_> {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self.session.context().deregister_table(name.as_str());
        }
    }
}

/// Replaces every `ML_PREDICT(...)` of `tokens` with a view over its [`MlPredictNode`].
pub(crate) async fn resolve_ml_predict<'a>(
    session: &'a RiffleSession,
    tokens: Vec<TokenWithSpan>,
) -> Result<(Vec<TokenWithSpan>, PredictViews<'a>)> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut views = PredictViews {
        session,
        names: Vec::new(),
    };
    if !(0..tokens.len()).any(|i| call_open(&tokens, i, "ML_PREDICT").is_some()) {
        return Ok((tokens, views));
    }
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let Some(open) = call_open(&tokens, i, "ML_PREDICT") else {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        };
        let (args, end) =
            call_arguments(&tokens, open).ok_or_else(|| predict_usage("the call is not closed"))?;
        let node = predict_node(session, &args).await?;
        let name = format!(
            "__riffle_ml_predict_{}",
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let view: Arc<dyn TableProvider> = Arc::new(ViewTable::new(node.into_plan(), None));
        session.context().register_table(name.as_str(), view)?;
        views.names.push(name.clone());
        out.extend(tokenize(&name)?);
        i = end + 1;
    }
    Ok((out, views))
}

/// The node of one call's arguments.
async fn predict_node(
    session: &RiffleSession,
    args: &[Vec<TokenWithSpan>],
) -> Result<MlPredictNode> {
    if !(3..=4).contains(&args.len()) {
        return Err(predict_usage(&format!(
            "it takes 3 or 4 arguments, not {}",
            args.len()
        )));
    }
    let table = significant(&args[0]);
    if !is_word(table.first(), "TABLE") || table.len() < 2 {
        return Err(predict_usage("the first argument is TABLE name"));
    }
    let start = args[0]
        .iter()
        .position(|t| std::ptr::eq(t, table[1]))
        .unwrap_or(0);
    let relation = render(&args[0][start..]);
    let input = session
        .logical_plan(&format!("SELECT * FROM {relation}"))
        .await
        .map_err(|e| e.context(format!("ML_PREDICT's input TABLE {relation}")))?;
    let model = significant(&args[1]);
    let model_name = match model.as_slice() {
        [keyword, name] if is_word(Some(keyword), "MODEL") => {
            name_of(name).ok_or_else(|| predict_usage("MODEL takes a model's name"))?
        }
        _ => return Err(predict_usage("the second argument is MODEL name")),
    };
    let model = session.model(&model_name)?;
    let descriptor = significant(&args[2]);
    if !is_word(descriptor.first(), "DESCRIPTOR") {
        return Err(predict_usage(
            "the third argument is DESCRIPTOR(column, ...)",
        ));
    }
    let columns: Vec<String> = descriptor[1..]
        .iter()
        .filter(|t| !matches!(t.token, Token::LParen | Token::RParen | Token::Comma))
        .map(|t| name_of(t).ok_or_else(|| predict_usage("DESCRIPTOR lists column names")))
        .collect::<Result<_>>()?;
    let options = match args.get(3) {
        Some(map) => parse_map(map)?,
        None => BTreeMap::new(),
    };
    MlPredictNode::try_new(input, model, columns, options)
}

/// `MAP['key', 'value', ...]`.
fn parse_map(tokens: &[TokenWithSpan]) -> Result<BTreeMap<String, String>> {
    let words = significant(tokens);
    if !is_word(words.first(), "MAP") {
        return Err(predict_usage(
            "the fourth argument is MAP['key', 'value', ...]",
        ));
    }
    let values: Vec<String> = words[1..]
        .iter()
        .filter(|t| !matches!(t.token, Token::LBracket | Token::RBracket | Token::Comma))
        .map(|t| match &t.token {
            Token::SingleQuotedString(value) => Ok(value.clone()),
            Token::Number(value, _) => Ok(value.clone()),
            other => Err(predict_usage(&format!(
                "MAP holds quoted keys and values, not {other}"
            ))),
        })
        .collect::<Result<_>>()?;
    if !values.len().is_multiple_of(2) {
        return Err(predict_usage(
            "MAP holds key, value pairs: one value is missing",
        ));
    }
    let mut options = BTreeMap::new();
    for pair in values.chunks(2) {
        if options.insert(pair[0].clone(), pair[1].clone()).is_some() {
            return Err(predict_usage(&format!("MAP gives '{}' twice", pair[0])));
        }
    }
    Ok(options)
}
