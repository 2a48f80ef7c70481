//! The twin engine's pure-Rust half: limits, error messages and the byte arithmetic of
//! the compact JSON encoding.
//!
//! `py_twin` walks Python dicts and lists directly (converting them would cost more than
//! the walk) and leans on this module for everything that needs no Python: the limit
//! constants, the exact text of every error (identical to `edgenode._pure.twin`, the
//! specification), paths such as `a.b[2]`, and the number of bytes a string, an integer
//! or a float takes in `json.dumps(doc, separators=(",", ":"), ensure_ascii=False)`.

use std::fmt::{self, Write};

/// Deepest nesting of objects and arrays; the top-level object is level 1.
pub const MAX_DEPTH: usize = 32;
/// Largest compact UTF-8 JSON encoding of a document, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 65536;
/// Longest object key, in UTF-8 bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// How many characters of an over-long key an error message shows.
const KEY_SHOWN_CHARS: usize = 32;

/// One step of the path to a value: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

/// What is wrong with a document, patch, meta or `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The top level is not an object; `what` names the argument.
    NotObject {
        what: &'static str,
        type_name: String,
    },
    NotJson {
        type_name: String,
    },
    /// `repr` is Python's: `nan`, `inf` or `-inf`.
    NotFinite {
        repr: &'static str,
    },
    KeyNotString {
        type_name: String,
    },
    KeyTooLong {
        key: String,
    },
    TooDeep,
    TooLarge {
        size: usize,
    },
    ResultTooLarge {
        size: usize,
    },
    StringNotUtf8,
    KeyNotUtf8,
    IntTooLarge,
    NowNotNumber {
        type_name: String,
    },
    NowNotFinite {
        repr: &'static str,
    },
    NowOutOfRange,
}

/// A [`Problem`] and where it is: `path` lists segments innermost first, as a walk
/// unwinding from the bad value pushes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub problem: Problem,
    pub path: Vec<Segment>,
}

impl Fault {
    pub fn new(problem: Problem) -> Self {
        Fault {
            problem,
            path: Vec::new(),
        }
    }

    /// True for `TwinLimitError`, false for a plain `TwinError`.
    pub fn is_limit(&self) -> bool {
        matches!(
            self.problem,
            Problem::KeyTooLong { .. }
                | Problem::TooDeep
                | Problem::TooLarge { .. }
                | Problem::ResultTooLarge { .. }
        )
    }

    /// The message, word for word the one of the pure-Python twin.
    pub fn message(&self) -> String {
        let path = format_path(&self.path);
        match &self.problem {
            Problem::NotObject { what, type_name } => {
                format!("{what} must be a JSON object, not {type_name}")
            }
            Problem::NotJson { type_name } => {
                format!("value at \"{path}\" is not a JSON value: {type_name}")
            }
            Problem::NotFinite { repr } => {
                format!("value at \"{path}\" is not a finite number: {repr}")
            }
            Problem::KeyNotString { type_name } => {
                let place = if path.is_empty() {
                    "the top-level object".to_owned()
                } else {
                    format!("the object at \"{path}\"")
                };
                format!("key of {place} is not a string: {type_name}")
            }
            Problem::KeyTooLong { key } => {
                let mut shown: String = key.chars().take(KEY_SHOWN_CHARS).collect();
                if key.chars().nth(KEY_SHOWN_CHARS).is_some() {
                    shown.push('…');
                }
                format!("key \"{shown}\" exceeds MAX_KEY_BYTES={MAX_KEY_BYTES} bytes")
            }
            Problem::TooDeep => format!("twin document exceeds MAX_DEPTH={MAX_DEPTH} levels"),
            Problem::TooLarge { size } => format!(
                "twin document is {size} bytes, over MAX_DOCUMENT_BYTES={MAX_DOCUMENT_BYTES}"
            ),
            Problem::ResultTooLarge { size } => format!(
                "merge result is {size} bytes, over MAX_DOCUMENT_BYTES={MAX_DOCUMENT_BYTES}"
            ),
            Problem::StringNotUtf8 => {
                format!("string at \"{path}\" is not valid UTF-8 (lone surrogate)")
            }
            Problem::KeyNotUtf8 => format!("key at \"{path}\" is not valid UTF-8 (lone surrogate)"),
            Problem::IntTooLarge => format!("integer at \"{path}\" is too large to encode as JSON"),
            Problem::NowNotNumber { type_name } => {
                format!("now must be a finite number of seconds, not {type_name}")
            }
            Problem::NowNotFinite { repr } => {
                format!("now must be a finite number of seconds, not {repr}")
            }
            Problem::NowOutOfRange => {
                "now must be a finite number of seconds, not an int this large".to_owned()
            }
        }
    }
}

/// Innermost-first segments -> `a.b[2]` (keys joined by dots, indices in brackets).
pub fn format_path(innermost_first: &[Segment]) -> String {
    let mut out = String::new();
    for (position, segment) in innermost_first.iter().rev().enumerate() {
        match segment {
            Segment::Index(index) => {
                // Writing to a String cannot fail.
                let _ = write!(out, "[{index}]");
            }
            Segment::Key(key) => {
                if position > 0 {
                    out.push('.');
                }
                out.push_str(key);
            }
        }
    }
    out
}

/// Python's `repr` of a non-finite float.
pub fn non_finite_repr(value: f64) -> &'static str {
    if value.is_nan() {
        "nan"
    } else if value > 0.0 {
        "inf"
    } else {
        "-inf"
    }
}

/// Extra bytes the JSON escape of each byte adds: `"`, `\` and `\b \f \n \r \t` become two
/// characters, other control characters `\u00XX` (six); everything else is copied raw.
const ESCAPE_EXTRA: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = 5;
        byte += 1;
    }
    table[0x08] = 1;
    table[0x09] = 1;
    table[0x0a] = 1;
    table[0x0c] = 1;
    table[0x0d] = 1;
    table[b'"' as usize] = 1;
    table[b'\\' as usize] = 1;
    table
};

/// Bytes of `text` as a JSON string, quotes included, as Python's json writes it with
/// `ensure_ascii=False`.
pub fn json_string_len(text: &str) -> usize {
    let extra: usize = text
        .bytes()
        .map(|byte| usize::from(ESCAPE_EXTRA[usize::from(byte)]))
        .sum();
    text.len() + extra + 2
}

/// Bytes of the decimal form of `value`.
pub fn int_len(value: i64) -> usize {
    let mut magnitude = value.unsigned_abs();
    let mut digits = 1;
    while magnitude >= 10 {
        magnitude /= 10;
        digits += 1;
    }
    digits + usize::from(value < 0)
}

/// A fixed stack buffer for one formatted float (no allocation on the hot path).
struct FloatText {
    bytes: [u8; 40],
    len: usize,
}

impl Write for FloatText {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        if end > self.bytes.len() {
            return Err(fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Bytes of Python's `repr(value)` for a finite float.
///
/// Both Python and Rust print the shortest digit string that reads back as the same
/// float; Rust's `{:e}` gives those digits and the exponent, and this function lays them
/// out as Python's `float_repr_style = "short"` does: positional notation when the
/// decimal point position `decpt` (value = 0.d1d2... * 10^decpt) is in -3..=16, with
/// `.0` after integers, else `d.ddde+XX` with at least two exponent digits.
pub fn float_repr_len(value: f64) -> usize {
    let mut text = FloatText {
        bytes: [0; 40],
        len: 0,
    };
    // 17 digits, a sign, a point, `e` and a 4-character exponent always fit in 40 bytes.
    let _ = write!(text, "{value:e}");
    let text = &text.bytes[..text.len];
    let negative = text.first() == Some(&b'-');
    let exponent_at = text
        .iter()
        .position(|&byte| byte == b'e')
        .unwrap_or(text.len());
    let digits = text[..exponent_at]
        .iter()
        .filter(|byte| byte.is_ascii_digit())
        .count();
    let exponent: i64 = std::str::from_utf8(&text[(exponent_at + 1).min(text.len())..])
        .ok()
        .and_then(|exp| exp.parse().ok())
        .unwrap_or(0);
    let decpt = exponent + 1;
    let body = if decpt <= -4 || decpt > 16 {
        let exponent_digits = int_len(exponent.abs()).max(2);
        // d[.ddd]e±XX
        digits + usize::from(digits > 1) + 2 + exponent_digits
    } else if decpt <= 0 {
        // 0.000ddd
        2 + decpt.unsigned_abs() as usize + digits
    } else if (decpt as usize) < digits {
        // dd.ddd
        digits + 1
    } else {
        // ddd00.0
        decpt as usize + 2
    };
    body + usize::from(negative)
}

/// (value, `repr(value)` in CPython): test cases of the float layout, shared by the
/// modules that write or measure floats.
#[cfg(test)]
pub(crate) const PYTHON_FLOAT_REPRS: &[(f64, &str)] = &[
    (0.0, "0.0"),
    (-0.0, "-0.0"),
    (0.1, "0.1"),
    (1.0, "1.0"),
    (100.0, "100.0"),
    (-2.5, "-2.5"),
    (1e16, "1e+16"),
    (1.5e16, "1.5e+16"),
    (1e15, "1000000000000000.0"),
    (1234567890123456.0, "1234567890123456.0"),
    (123456789012345680.0, "1.2345678901234568e+17"),
    (1e-7, "1e-07"),
    (1e-5, "1e-05"),
    (0.0001, "0.0001"),
    (0.00012345, "0.00012345"),
    (1e22, "1e+22"),
    (1e100, "1e+100"),
    (-1.5e-300, "-1.5e-300"),
    (5e-324, "5e-324"),
    (f64::MAX, "1.7976931348623157e+308"),
    (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
    (0.30000000000000004, "0.30000000000000004"),
    (123.456, "123.456"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_lengths_match_python_repr() {
        let cases = PYTHON_FLOAT_REPRS;
        for &(value, repr) in cases {
            assert_eq!(
                float_repr_len(value),
                repr.len(),
                "repr({value:e}) is {repr}"
            );
        }
    }

    #[test]
    fn int_lengths_count_digits_and_sign() {
        assert_eq!(int_len(0), 1);
        assert_eq!(int_len(9), 1);
        assert_eq!(int_len(10), 2);
        assert_eq!(int_len(-10), 3);
        assert_eq!(int_len(i64::MAX), 19);
        assert_eq!(int_len(i64::MIN), 20);
    }

    #[test]
    fn strings_are_measured_as_python_json_escapes_them() {
        assert_eq!(json_string_len(""), 2);
        assert_eq!(json_string_len("abc"), 5);
        assert_eq!(json_string_len("a\"b\\c"), 9);
        assert_eq!(json_string_len("\n\r\t\u{8}\u{c}"), 12);
        assert_eq!(json_string_len("\u{0}\u{1f}"), 14);
        assert_eq!(json_string_len("\u{7f}"), 3);
        assert_eq!(json_string_len("é€😀"), 2 + 2 + 3 + 4);
    }

    #[test]
    fn paths_join_keys_with_dots_and_indices_in_brackets() {
        let innermost_first = vec![
            Segment::Index(2),
            Segment::Key("b".into()),
            Segment::Key("a".into()),
        ];
        assert_eq!(format_path(&innermost_first), "a.b[2]");
        assert_eq!(
            format_path(&[Segment::Key("x".into()), Segment::Key(String::new())]),
            ".x"
        );
        assert_eq!(format_path(&[]), "");
    }

    #[test]
    fn messages_name_the_limit_and_the_place() {
        let mut fault = Fault::new(Problem::NotJson {
            type_name: "set".into(),
        });
        fault.path = vec![
            Segment::Index(2),
            Segment::Key("b".into()),
            Segment::Key("a".into()),
        ];
        assert_eq!(
            fault.message(),
            "value at \"a.b[2]\" is not a JSON value: set"
        );
        assert!(!fault.is_limit());
        let deep = Fault::new(Problem::TooDeep);
        assert_eq!(deep.message(), "twin document exceeds MAX_DEPTH=32 levels");
        assert!(deep.is_limit());
        let large = Fault::new(Problem::TooLarge { size: 70000 });
        assert_eq!(
            large.message(),
            "twin document is 70000 bytes, over MAX_DOCUMENT_BYTES=65536"
        );
        let key = Fault::new(Problem::KeyTooLong {
            key: "é".repeat(200),
        });
        assert_eq!(
            key.message(),
            format!(
                "key \"{}…\" exceeds MAX_KEY_BYTES=256 bytes",
                "é".repeat(32)
            )
        );
        let short_key = Fault::new(Problem::KeyTooLong {
            key: "k".repeat(32),
        });
        assert!(short_key
            .message()
            .starts_with(&format!("key \"{}\" ", "k".repeat(32))));
        let top = Fault::new(Problem::KeyNotString {
            type_name: "int".into(),
        });
        assert_eq!(
            top.message(),
            "key of the top-level object is not a string: int"
        );
    }

    #[test]
    fn non_finite_values_print_like_python() {
        assert_eq!(non_finite_repr(f64::NAN), "nan");
        assert_eq!(non_finite_repr(f64::INFINITY), "inf");
        assert_eq!(non_finite_repr(f64::NEG_INFINITY), "-inf");
    }
}
