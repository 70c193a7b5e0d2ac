//! The parameters of Riffle's built-in functions, by name, with the defaults of the optional
//! ones: what lets SQL write `image_resize(img, 224, 224, on_error => 'null')` and skip the
//! parameters in between, and what the Python front maps keyword arguments onto.
//!
//! Functions run on positional arguments; a named call is turned into a positional one
//! before planning (riffle-sql), filling skipped parameters with their defaults.

/// One parameter: its name, and for an optional one, its default as SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parameter {
    /// The name a call may give it by (`on_error => 'null'`).
    pub name: &'static str,
    /// The SQL literal a skipped optional parameter takes; `None` for a required one.
    pub default: Option<&'static str>,
}

const fn required(name: &'static str) -> Parameter {
    Parameter {
        name,
        default: None,
    }
}

const fn optional(name: &'static str, default: &'static str) -> Parameter {
    Parameter {
        name,
        default: Some(default),
    }
}

const ON_ERROR: Parameter = optional("on_error", "'raise'");

/// Every built-in function's parameters.
const PARAMETERS: &[(&str, &[Parameter])] = &[
    ("image_decode", &[required("bytes"), ON_ERROR]),
    (
        "image_encode",
        &[
            required("image"),
            required("format"),
            optional("quality", "90"),
            ON_ERROR,
        ],
    ),
    (
        "image_resize",
        &[
            required("image"),
            required("width"),
            required("height"),
            optional("filter", "'bilinear'"),
            ON_ERROR,
        ],
    ),
    (
        "image_crop",
        &[
            required("image"),
            required("x"),
            required("y"),
            required("width"),
            required("height"),
            ON_ERROR,
        ],
    ),
    (
        "image_center_crop",
        &[
            required("image"),
            required("width"),
            required("height"),
            ON_ERROR,
        ],
    ),
    (
        "image_convert",
        &[required("image"), required("mode"), ON_ERROR],
    ),
    (
        "tensor_fixed_shape",
        &[required("tensor"), required("type"), ON_ERROR],
    ),
    (
        "image_to_tensor",
        &[
            required("image"),
            optional("layout", "'CHW'"),
            optional("mean", "[]"),
            optional("std", "[]"),
        ],
    ),
    ("image_metadata", &[required("bytes")]),
    ("is_valid_image", &[required("bytes")]),
    (
        "text_chunk",
        &[
            required("text"),
            required("size"),
            optional("overlap", "0"),
            optional("unit", "'chars'"),
            optional("tokenizer", "''"),
        ],
    ),
    (
        "text_normalize",
        &[required("text"), optional("lowercase", "false")],
    ),
    ("token_count", &[required("text"), required("tokenizer")]),
    ("file_read", &[required("file"), ON_ERROR]),
    ("url_download", &[required("url"), ON_ERROR]),
    ("audio_decode", &[required("bytes"), ON_ERROR]),
    (
        "audio_resample",
        &[required("audio"), required("rate"), ON_ERROR],
    ),
    ("audio_split", &[required("audio"), required("seconds")]),
    ("audio_duration", &[required("audio")]),
    ("cosine_similarity", &[required("a"), required("b")]),
    ("l2_distance", &[required("a"), required("b")]),
    ("inner_product", &[required("a"), required("b")]),
    ("vector_normalize", &[required("vector")]),
];

/// The parameters of a built-in function, in order; `None` for other functions.
pub fn parameters(function: &str) -> Option<&'static [Parameter]> {
    PARAMETERS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(function))
        .map(|(_, parameters)| *parameters)
}

/// Every built-in function with its parameters, in the table's order: what the Python
/// front's functions and expression namespaces are generated from.
pub fn all() -> &'static [(&'static str, &'static [Parameter])] {
    PARAMETERS
}

/// Every function that takes `on_error`, for `try_` variants and documentation.
pub fn takes_on_error(function: &str) -> bool {
    parameters(function).is_some_and(|parameters| parameters.contains(&ON_ERROR))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Python front generates a function and a namespace method for each row of the
    /// table: a built-in missing from it would be missing from Python.
    #[test]
    fn every_built_in_function_has_its_parameters() {
        let mut missing = Vec::new();
        for function in crate::all_functions() {
            let name = function.name();
            let base = name.strip_prefix("try_").unwrap_or(name);
            if name != "raise_error" && parameters(base).is_none() {
                missing.push(name.to_string());
            }
        }
        assert!(missing.is_empty(), "not in PARAMETERS: {missing:?}");
    }
}
