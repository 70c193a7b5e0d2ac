//! `SET 'key' = 'value'` (Flink's syntax): job options, checked by
//! [`riffle_common::Options`] when the session applies them.
//!
//! DataFusion has a `SET` of its own for its settings (`SET datafusion.execution.batch_size
//! = 1024`, `SET TIME ZONE ...`); those keys stay DataFusion's. A quoted key, or an unquoted
//! `key = value` outside the `datafusion.` namespace, is Riffle's, so that a mistyped Riffle
//! key gets Riffle's "unknown option" error with the keys near it.

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use riffle_common::{Result, RiffleError};

use crate::ddl::RiffleStatement;
use crate::script::render;

/// The Riffle statement that `tokens` (a statement starting with `SET`) is, or `None` when it
/// is DataFusion's `SET`.
pub(crate) fn parse_set(tokens: &[TokenWithSpan]) -> Result<Option<RiffleStatement>> {
    let significant: Vec<(usize, &Token)> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)))
        .map(|(index, t)| (index, &t.token))
        .collect();
    // significant[0] is SET.
    let Some(&(_, first)) = significant.get(1) else {
        return Ok(Some(RiffleStatement::ShowOptions));
    };
    let Some(eq) = significant.iter().position(|(_, t)| **t == Token::Eq) else {
        if matches!(first, Token::SingleQuotedString(_)) {
            return Err(syntax());
        }
        return Ok(None);
    };
    let key = match (first, eq) {
        (Token::SingleQuotedString(key), 2) => key.clone(),
        (Token::SingleQuotedString(_), _) => return Err(syntax()),
        _ => {
            let key: String = significant[1..eq]
                .iter()
                .map(|(_, t)| t.to_string())
                .collect();
            if key.to_ascii_lowercase().starts_with("datafusion.") {
                return Ok(None);
            }
            key
        }
    };
    let value = match &significant[eq + 1..] {
        [] => return Err(syntax()),
        [(_, Token::SingleQuotedString(value))] => value.clone(),
        [(start, _), ..] => render(&tokens[*start..]),
    };
    Ok(Some(RiffleStatement::SetOption { key, value }))
}

fn syntax() -> RiffleError {
    RiffleError::user("SET takes a quoted key and value: SET 'key' = 'value'").with_hint(
        "SET 'execution.checkpointing.interval' = '10 s'; SET alone lists the options set",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::tokenize;

    fn set(sql: &str) -> Result<Option<RiffleStatement>> {
        parse_set(&tokenize(sql).unwrap())
    }

    fn key_value(sql: &str) -> (String, String) {
        match set(sql).unwrap() {
            Some(RiffleStatement::SetOption { key, value }) => (key, value),
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn quoted_and_unquoted_keys_are_riffles() {
        assert_eq!(
            key_value("SET 'execution.checkpointing.interval' = '10 s'"),
            ("execution.checkpointing.interval".into(), "10 s".into())
        );
        assert_eq!(
            key_value("SET url.allow-private = true"),
            ("url.allow-private".into(), "true".into())
        );
        assert_eq!(
            key_value("SET 'execution.checkpointing.interval' = 10 s"),
            ("execution.checkpointing.interval".into(), "10 s".into())
        );
        assert!(matches!(
            set("SET").unwrap(),
            Some(RiffleStatement::ShowOptions)
        ));
    }

    #[test]
    fn datafusion_settings_stay_datafusions() {
        assert!(
            set("SET datafusion.execution.batch_size = 1024")
                .unwrap()
                .is_none()
        );
        assert!(set("SET TIME ZONE 'UTC'").unwrap().is_none());
    }

    #[test]
    fn malformed_set_says_how_to_write_it() {
        for bad in ["SET 'a.b'", "SET 'a.b' =", "SET 'a' 'b' = 'c'"] {
            let error = set(bad).unwrap_err();
            assert!(
                error.to_string().contains("SET 'key' = 'value'"),
                "{bad}: {error}"
            );
        }
    }
}
