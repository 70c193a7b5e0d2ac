//! Named arguments for Riffle's built-in functions: `image_resize(img, 224, 224, on_error =>
//! 'null')`.
//!
//! DataFusion resolves named arguments itself, but cannot skip an optional parameter (it has
//! no defaults). So calls of Riffle's functions that name an argument are rewritten, before
//! planning, into positional calls: each named argument moves to its parameter's place and
//! the skipped parameters before it take their defaults (see
//! [`riffle_functions::parameters`]). Positional arguments come first, as in SQL.

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};
use riffle_common::{Result, RiffleError};
use riffle_functions::parameters::{Parameter, parameters};

use crate::script::{call_arguments, tokenize};

/// Rewrites every call of a built-in function that names an argument.
pub(crate) fn resolve_named_arguments(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    if !tokens.iter().any(|t| t.token == Token::RArrow) {
        return Ok(tokens);
    }
    rewrite(&tokens)
}

fn rewrite(tokens: &[TokenWithSpan]) -> Result<Vec<TokenWithSpan>> {
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        let Some((name, params, open)) = known_call(tokens, i) else {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        };
        let Some((args, close)) = call_arguments(tokens, open) else {
            // Not closed: leave it to the parser to report.
            out.push(tokens[i].clone());
            i += 1;
            continue;
        };
        let args = args
            .iter()
            .map(|arg| rewrite(arg))
            .collect::<Result<Vec<_>>>()?;
        out.push(tokens[i].clone());
        out.push(tokens[open].clone());
        for (index, arg) in place(&name, params, args)?.into_iter().enumerate() {
            if index > 0 {
                out.push(TokenWithSpan::wrap(Token::Comma));
            }
            out.extend(arg);
        }
        out.push(tokens[close].clone());
        i = close + 1;
    }
    Ok(out)
}

/// If a built-in function's call starts at `i`: its name, parameters and the `(` position.
fn known_call(tokens: &[TokenWithSpan], i: usize) -> Option<(String, &'static [Parameter], usize)> {
    let Token::Word(word) = &tokens[i].token else {
        return None;
    };
    let params = parameters(&word.value)?;
    let open = i
        + 1
        + tokens[i + 1..]
            .iter()
            .position(|t| !matches!(t.token, Token::Whitespace(_)))?;
    (tokens[open].token == Token::LParen).then(|| (word.value.clone(), params, open))
}

/// The arguments in parameter order, skipped ones filled with their defaults.
fn place(
    function: &str,
    params: &[Parameter],
    args: Vec<Vec<TokenWithSpan>>,
) -> Result<Vec<Vec<TokenWithSpan>>> {
    let usage = |detail: String| {
        let names: Vec<&str> = params.iter().map(|p| p.name).collect();
        RiffleError::user(format!("{function}: {detail}"))
            .with_hint(format!("its parameters are {}", names.join(", ")))
    };
    let mut slots: Vec<Option<Vec<TokenWithSpan>>> = vec![None; params.len()];
    let mut positional = 0;
    let mut named_seen = false;
    for arg in args {
        match named(&arg) {
            Some((name, value)) => {
                named_seen = true;
                let index = params
                    .iter()
                    .position(|p| p.name.eq_ignore_ascii_case(&name))
                    .ok_or_else(|| usage(format!("no parameter is called '{name}'")))?;
                if slots[index].is_some() {
                    return Err(usage(format!("'{name}' is given twice")));
                }
                slots[index] = Some(value);
            }
            None if named_seen => {
                return Err(usage(
                    "positional arguments must come before named ones".into(),
                ));
            }
            None => {
                if positional >= params.len() {
                    return Err(usage(format!("takes at most {} arguments", params.len())));
                }
                slots[positional] = Some(arg);
                positional += 1;
            }
        }
    }
    let given = slots
        .iter()
        .rposition(Option::is_some)
        .map_or(0, |last| last + 1);
    slots
        .into_iter()
        .zip(params)
        .take(given)
        .map(|(slot, param)| match (slot, param.default) {
            (Some(arg), _) => Ok(arg),
            (None, Some(default)) => tokenize(default),
            (None, None) => Err(usage(format!("'{}' is required", param.name))),
        })
        .collect()
}

/// `name => value`: the name and the value's tokens.
fn named(arg: &[TokenWithSpan]) -> Option<(String, Vec<TokenWithSpan>)> {
    let mut words = arg
        .iter()
        .enumerate()
        .filter(|(_, t)| !matches!(t.token, Token::Whitespace(_)));
    let (_, first) = words.next()?;
    let (arrow, second) = words.next()?;
    match (&first.token, &second.token) {
        (Token::Word(name), Token::RArrow) => Some((name.value.clone(), arg[arrow + 1..].to_vec())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::render;

    /// The rewritten SQL, without spaces (they follow the original text).
    fn resolved(sql: &str) -> Result<String> {
        Ok(render(&resolve_named_arguments(tokenize(sql)?)?).replace(' ', ""))
    }

    #[test]
    fn named_arguments_become_positional_with_defaults_in_the_gaps() {
        assert_eq!(
            resolved("SELECT image_resize(img, 224, 224, on_error => 'null') FROM t").unwrap(),
            "SELECTimage_resize(img,224,224,'bilinear','null')FROMt"
        );
        assert_eq!(
            resolved("SELECT image_decode(file_read(f, on_error => 'null'), on_error => 'null')")
                .unwrap(),
            "SELECTimage_decode(file_read(f,'null'),'null')"
        );
        // Names in any order, any case; nothing to do without names.
        assert_eq!(
            resolved("SELECT text_chunk(size => 10, TEXT => body)").unwrap(),
            "SELECTtext_chunk(body,10)"
        );
        assert_eq!(
            resolved("SELECT image_resize(a, 1, 2) FROM t").unwrap(),
            "SELECTimage_resize(a,1,2)FROMt"
        );
    }

    #[test]
    fn bad_named_calls_name_the_function_and_its_parameters() {
        let error = resolved("SELECT image_decode(b, on_eror => 'null')").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no parameter is called 'on_eror'"),
            "{error}"
        );
        assert!(
            format!("{error:?}").contains("bytes, on_error"),
            "{error:?}"
        );
        let error = resolved("SELECT image_resize(img, width => 1, 2)").unwrap_err();
        assert!(error.to_string().contains("before named"), "{error}");
        let error = resolved("SELECT image_resize(img, height => 1)").unwrap_err();
        assert!(error.to_string().contains("'width' is required"), "{error}");
    }
}
