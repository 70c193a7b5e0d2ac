//! Cutting a script into statements.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use riffle_common::{Result, RiffleError};

/// One statement of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStatement {
    /// The statement's text, without the trailing semicolon.
    pub sql: String,
    /// The line of the script it starts on (from 1).
    pub line: u64,
}

impl ScriptStatement {
    /// Where the statement is, for error messages: `statement at line 3 (SELECT ...)`.
    pub fn location(&self) -> String {
        let first_line = self.sql.lines().next().unwrap_or_default();
        format!("statement at line {} ({first_line})", self.line)
    }
}

/// Tokenizes SQL text, with a clear error for unterminated strings and the like.
pub(crate) fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>> {
    Tokenizer::new(&GenericDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| RiffleError::user(format!("SQL syntax error: {e}")))
}

/// Where the `(` of a call of function `name` is, when `tokens[i]` is that name followed
/// (past whitespace) by one: `VECTOR_SEARCH(`, `ML_PREDICT (`.
pub(crate) fn call_open(tokens: &[TokenWithSpan], i: usize, name: &str) -> Option<usize> {
    if !matches!(&tokens[i].token, Token::Word(w) if w.value.eq_ignore_ascii_case(name)) {
        return None;
    }
    let next = i
        + 1
        + tokens[i + 1..]
            .iter()
            .position(|t| !matches!(t.token, Token::Whitespace(_)))?;
    (tokens[next].token == Token::LParen).then_some(next)
}

/// The arguments of the call whose `(` is at `open`, split on the commas at its own depth,
/// and the position of its `)`; `None` if the call is not closed.
pub(crate) fn call_arguments(
    tokens: &[TokenWithSpan],
    open: usize,
) -> Option<(Vec<Vec<TokenWithSpan>>, usize)> {
    let mut depth = 0;
    let mut args: Vec<Vec<TokenWithSpan>> = vec![Vec::new()];
    for (j, token) in tokens.iter().enumerate().skip(open) {
        match token.token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                depth -= 1;
                if depth == 0 {
                    let empty = args.len() == 1
                        && args[0]
                            .iter()
                            .all(|t| matches!(t.token, Token::Whitespace(_)));
                    if empty {
                        args.clear();
                    }
                    return Some((args, j));
                }
            }
            Token::Comma if depth == 1 => {
                args.push(Vec::new());
                continue;
            }
            _ => {}
        }
        if let Some(current) = args.last_mut() {
            current.push(token.clone());
        }
    }
    None
}

/// Renders tokens back into SQL text.
pub(crate) fn render(tokens: &[TokenWithSpan]) -> String {
    tokens
        .iter()
        .map(|t| t.token.to_string())
        .collect::<String>()
        .trim()
        .to_string()
}

/// Splits a script on the semicolons between statements (not those inside strings or
/// comments), dropping empty statements.
pub fn split_statements(script: &str) -> Result<Vec<ScriptStatement>> {
    let tokens = tokenize(script)?;
    let mut statements = Vec::new();
    let mut current: Vec<TokenWithSpan> = Vec::new();
    let mut flush = |current: &mut Vec<TokenWithSpan>| {
        let significant = current
            .iter()
            .find(|t| !matches!(t.token, Token::Whitespace(_)));
        if let Some(first) = significant {
            let line = first.span.start.line;
            statements.push(ScriptStatement {
                sql: render(current),
                line,
            });
        }
        current.clear();
    };
    for token in tokens {
        if token.token == Token::SemiColon {
            flush(&mut current);
        } else {
            current.push(token);
        }
    }
    flush(&mut current);
    Ok(statements)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_semicolons_outside_strings_and_comments() {
        let script = "SELECT ';' AS x;\n-- a comment; still a comment\nSELECT 2;\n\n;";
        let statements = split_statements(script).unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!(statements[0].sql, "SELECT ';' AS x");
        assert_eq!(statements[0].line, 1);
        assert!(statements[1].sql.ends_with("SELECT 2"));
        assert_eq!(statements[1].line, 3);
    }

    #[test]
    fn unterminated_strings_are_a_clear_error() {
        let error = split_statements("SELECT 'abc").unwrap_err();
        assert!(error.to_string().contains("SQL syntax error"), "{error}");
    }
}
