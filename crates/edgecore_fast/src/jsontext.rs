//! JSON text as Python's `json` module reads and writes it, without Python.
//!
//! [`parse`] accepts exactly the texts `json.loads` accepts (NaN and Infinity refused),
//! with three deliberate refusals that the caller words (see `edgenode._pure.devtwin`):
//! nesting deeper than `max_depth`, a `\uXXXX` escape leaving a lone surrogate, and an
//! integer of more than [`MAX_INT_DIGITS`] digits (Python's own limit). Objects keep
//! their keys in order; a duplicate key keeps the last value at the first key's
//! position, as a `dict` does. Integers outside `i64` are kept as their exact text.
//!
//! [`write`] produces the bytes of `json.dumps(value, separators=(",", ":"),
//! ensure_ascii=False).encode()`: floats as Python's `repr`, control characters as
//! `\u00xx` (lower-case hex) except the short escapes `\b \f \n \r \t`.

use std::collections::HashMap;
use std::fmt::Write as _;

#[cfg(test)]
use crate::twin::float_repr_len;
use crate::twin::{int_len, json_string_len};

/// Python's default `sys.get_int_max_str_digits()`: longer integers are not JSON to it.
pub const MAX_INT_DIGITS: usize = 4300;
/// Objects up to this many members are searched linearly; larger ones through a map.
const LINEAR_LOOKUP: usize = 16;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer outside `i64`, as its canonical decimal text.
    BigInt(Box<str>),
    Float(f64),
    Str(String),
    Array(Vec<Value>),
    Object(Object),
}

/// Members in insertion order, keys unique.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Object(pub Vec<(String, Value)>);

impl Object {
    pub fn new() -> Self {
        Object(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Append a member whose key is known not to be there yet.
    pub fn push(&mut self, key: impl Into<String>, value: Value) {
        self.0.push((key.into(), value));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// A key lookup that stays cheap for large objects.
    pub fn index(&self) -> Index<'_> {
        if self.0.len() <= LINEAR_LOOKUP {
            Index::Linear(self)
        } else {
            Index::Hashed(
                self,
                self.0
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (k.as_str(), i))
                    .collect(),
            )
        }
    }
}

/// Position of keys in an [`Object`].
pub enum Index<'a> {
    Linear(&'a Object),
    Hashed(&'a Object, HashMap<&'a str, usize>),
}

impl<'a> Index<'a> {
    pub fn position(&self, key: &str) -> Option<usize> {
        match self {
            Index::Linear(object) => object.0.iter().position(|(k, _)| k == key),
            Index::Hashed(_, map) => map.get(key).copied(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        let object = match self {
            Index::Linear(object) | Index::Hashed(object, _) => *object,
        };
        self.position(key).map(|i| &object.0[i].1)
    }
}

impl Value {
    /// The JSON name of the type, as error messages say it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::BigInt(_) | Value::Float(_) => "number",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }

    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(object) => Some(object),
            _ => None,
        }
    }
}

// ------------------------------------------------------------------ equality ----

/// Python's exact `int == float`: only an integral float can equal an integer.
fn int_eq_float(int: i64, float: f64) -> bool {
    // 2^63 as f64 is exact; every integral float in [-2^63, 2^63) converts exactly.
    float.fract() == 0.0
        && (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&float)
        && float as i64 == int
}

fn bigint_eq_float(text: &str, float: f64) -> bool {
    // `{:.0}` prints the exact value of an integral float.
    float.is_finite() && float.fract() == 0.0 && format!("{float:.0}") == text
}

/// JSON equality: same types (`true` is not `1`) except numbers, compared by value.
pub fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (Value::BigInt(x), Value::BigInt(y)) => x == y,
        (Value::Int(i), Value::Float(f)) | (Value::Float(f), Value::Int(i)) => int_eq_float(*i, *f),
        (Value::BigInt(t), Value::Float(f)) | (Value::Float(f), Value::BigInt(t)) => {
            bigint_eq_float(t, *f)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Object(x), Value::Object(y)) => same_object(x, y),
        _ => false,
    }
}

pub fn same_object(x: &Object, y: &Object) -> bool {
    if x.len() != y.len() {
        return false;
    }
    let index = y.index();
    x.iter()
        .all(|(k, v)| index.get(k).is_some_and(|w| same(v, w)))
}

// ------------------------------------------------------------------- parsing ----

/// Why [`parse`] refused a text (the caller words it as Python would).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Syntax(usize),
    TooDeep,
    LoneSurrogate,
    IntTooLong,
}

struct Parser<'a> {
    text: &'a [u8],
    at: usize,
    max_depth: usize,
}

type Parsed<T> = Result<T, ParseError>;

/// Parse a whole JSON text; see the module docs.
pub fn parse(text: &str, max_depth: usize) -> Parsed<Value> {
    let mut parser = Parser {
        text: text.as_bytes(),
        at: 0,
        max_depth,
    };
    parser.skip_ws();
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.at != parser.text.len() {
        return Err(ParseError::Syntax(parser.at));
    }
    Ok(value)
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn fail<T>(&self) -> Parsed<T> {
        Err(ParseError::Syntax(self.at))
    }

    fn literal(&mut self, word: &[u8], value: Value) -> Parsed<Value> {
        if self.text[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(value)
        } else {
            self.fail()
        }
    }

    fn value(&mut self, depth: usize) -> Parsed<Value> {
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => self.fail(),
        }
    }

    fn object(&mut self, depth: usize) -> Parsed<Value> {
        if depth > self.max_depth {
            return Err(ParseError::TooDeep);
        }
        self.at += 1;
        let mut members: Vec<(String, Value)> = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Object(Object(members)));
        }
        loop {
            if self.peek() != Some(b'"') {
                return self.fail();
            }
            let key = self.string()?;
            self.skip_ws();
            if self.peek() != Some(b':') {
                return self.fail();
            }
            self.at += 1;
            self.skip_ws();
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_ws();
                }
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Value::Object(dedupe(members)));
                }
                _ => return self.fail(),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Parsed<Value> {
        if depth > self.max_depth {
            return Err(ParseError::TooDeep);
        }
        self.at += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => {
                    self.at += 1;
                    self.skip_ws();
                }
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::Array(items));
                }
                _ => return self.fail(),
            }
        }
    }

    fn hex4(&mut self) -> Parsed<u32> {
        let digits = self
            .text
            .get(self.at..self.at + 4)
            .ok_or(ParseError::Syntax(self.at))?;
        let mut code = 0u32;
        for &digit in digits {
            let nibble = (digit as char)
                .to_digit(16)
                .ok_or(ParseError::Syntax(self.at))?;
            code = code * 16 + nibble;
        }
        self.at += 4;
        Ok(code)
    }

    /// A string starting at the opening quote.
    fn string(&mut self) -> Parsed<String> {
        self.at += 1;
        let mut out = String::new();
        loop {
            let start = self.at;
            while let Some(byte) = self.peek() {
                if byte == b'"' || byte == b'\\' || byte < 0x20 {
                    break;
                }
                self.at += 1;
            }
            // The text is a str and the run stops only at ASCII bytes: valid UTF-8.
            out.push_str(
                std::str::from_utf8(&self.text[start..self.at])
                    .map_err(|_| ParseError::Syntax(start))?,
            );
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.at += 1;
                    let escaped = self.peek().ok_or(ParseError::Syntax(self.at))?;
                    self.at += 1;
                    match escaped {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let code = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&code) {
                                if self.text[self.at..].starts_with(b"\\u") {
                                    self.at += 2;
                                    let low = self.hex4()?;
                                    if !(0xDC00..0xE000).contains(&low) {
                                        return Err(ParseError::LoneSurrogate);
                                    }
                                    0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                                } else {
                                    return Err(ParseError::LoneSurrogate);
                                }
                            } else {
                                code
                            };
                            out.push(char::from_u32(code).ok_or(ParseError::LoneSurrogate)?);
                        }
                        _ => return Err(ParseError::Syntax(self.at - 1)),
                    }
                }
                _ => return self.fail(), // end of text or a raw control character
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Parsed<Value> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let int_digits = match self.peek() {
            Some(b'0') => {
                self.at += 1;
                1
            }
            Some(b'1'..=b'9') => self.digits(),
            _ => return self.fail(),
        };
        let mut is_float = false;
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return self.fail();
            }
            is_float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return self.fail();
            }
            is_float = true;
        }
        // Only ASCII digits, signs, '.' and 'e' were consumed.
        let text = std::str::from_utf8(&self.text[start..self.at])
            .map_err(|_| ParseError::Syntax(start))?;
        if is_float {
            // Rust's parse, like Python's float(), rounds correctly (overflow: inf).
            return text
                .parse::<f64>()
                .map(Value::Float)
                .map_err(|_| ParseError::Syntax(start));
        }
        if int_digits > MAX_INT_DIGITS {
            return Err(ParseError::IntTooLong);
        }
        match text.parse::<i64>() {
            Ok(int) => Ok(Value::Int(int)),
            Err(_) => Ok(Value::BigInt(text.into())),
        }
    }
}

/// Keep the last value of a repeated key at the key's first position, as `dict` does.
fn dedupe(members: Vec<(String, Value)>) -> Object {
    if members.len() < 2 {
        return Object(members);
    }
    let mut out: Vec<(String, Value)> = Vec::with_capacity(members.len());
    if members.len() <= LINEAR_LOOKUP {
        for (key, value) in members {
            match out.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => out.push((key, value)),
            }
        }
    } else {
        let mut at: HashMap<String, usize> = HashMap::with_capacity(members.len());
        for (key, value) in members {
            match at.get(&key) {
                Some(&i) => out[i].1 = value,
                None => {
                    at.insert(key.clone(), out.len());
                    out.push((key, value));
                }
            }
        }
    }
    Object(out)
}

// ------------------------------------------------------------------- writing ----

/// A fixed stack buffer for formatted floats (no allocation on the hot path).
struct Buffer {
    bytes: [u8; 48],
    len: usize,
}

impl std::fmt::Write for Buffer {
    fn write_str(&mut self, text: &str) -> std::fmt::Result {
        let end = self.len + text.len();
        if end > self.bytes.len() {
            return Err(std::fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Shortest round-trip digits of a finite, non-negative float and its decimal exponent
/// (value = d.ddd * 10^exponent), ties broken as Python's repr breaks them.
fn shortest_digits(value: f64, digits: &mut [u8; 24]) -> (usize, i32) {
    let mut text = Buffer {
        bytes: [0; 48],
        len: 0,
    };
    // At most 17 digits, a point, `e` and a 4-character exponent: always fits.
    let _ = write!(text, "{value:e}");
    let text = &text.bytes[..text.len];
    let e_at = text.iter().position(|&b| b == b'e').unwrap_or(text.len());
    let mut count = 0;
    for &byte in &text[..e_at] {
        if byte.is_ascii_digit() {
            digits[count] = byte;
            count += 1;
        }
    }
    let exponent: i32 = std::str::from_utf8(&text[(e_at + 1).min(text.len())..])
        .ok()
        .and_then(|exp| exp.parse().ok())
        .unwrap_or(0);
    fix_tie(value, digits, count, exponent);
    (count, exponent)
}

/// Rust and Python both print the shortest digits that read back as `value`, but when
/// the value lies exactly halfway between two such candidates Rust rounds the last digit
/// up and Python (David Gay's dtoa) to even. Only values with a short exact decimal
/// expansion can be halfway: at most 26 fractional bits and below 1e41; and only when
/// the shortest form has at least 16 digits (half a unit in the 15th digit is more than
/// half the spacing of floats, so a 15-digit candidate that reads back is exact).
fn fix_tie(value: f64, digits: &mut [u8; 24], count: usize, exponent: i32) {
    const FRACTION_BITS: f64 = 67_108_864.0; // 2^26
    const MIN_TIE_DIGITS: usize = 16;
    if count < MIN_TIE_DIGITS
        || digits[count - 1] % 2 == 0
        || value >= 1e41
        || (value * FRACTION_BITS).fract() != 0.0
    {
        return;
    }
    let mut exact = String::with_capacity(128);
    // Enough precision to print the exact value of any such float.
    let _ = write!(exact, "{value:.80e}");
    let Some((mantissa, exact_exponent)) = exact.split_once('e') else {
        return;
    };
    if exact_exponent.parse::<i32>().ok() != Some(exponent) {
        return;
    }
    let exact_digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let significant = exact_digits
        .iter()
        .rposition(|&d| d != b'0')
        .map_or(0, |last| last + 1);
    if significant != count + 1 || exact_digits[count] != b'5' {
        return;
    }
    // Halfway between the exact digits truncated (down) and one unit above (up). The
    // other candidate only counts if it reads back as `value` too (around a power of two
    // the spacing of floats below is half the spacing above).
    let mut other = [0u8; 24];
    other[..count].copy_from_slice(&exact_digits[..count]);
    if other[..count] == digits[..count] {
        // Rust kept the odd lower candidate; the upper one is even unless it carries
        // (a 9 going to 0, which would not be the shortest).
        if digits[count - 1] == b'9' {
            return;
        }
        other[count - 1] += 1;
    }
    if reads_back(&other[..count], exponent, value) {
        digits[..count].copy_from_slice(&other[..count]);
    }
}

/// True if the decimal `d.ddd e exponent` parses to `value`.
fn reads_back(digits: &[u8], exponent: i32, value: f64) -> bool {
    let mut text = String::with_capacity(32);
    text.push(char::from(digits[0]));
    text.push('.');
    text.extend(digits[1..].iter().map(|&d| char::from(d)));
    let _ = write!(text, "e{exponent}");
    text.parse::<f64>().ok() == Some(value)
}

/// Recently written floats and their text: a twin's per-key timestamps repeat a few
/// `now` values many times, and formatting a float costs far more than copying it.
const FLOAT_CACHE_SLOTS: usize = 256;

#[derive(Clone, Copy)]
struct CachedFloat {
    bits: u64,
    len: u8,
    text: [u8; 27],
}

thread_local! {
    static FLOAT_CACHE: std::cell::RefCell<[CachedFloat; FLOAT_CACHE_SLOTS]> =
        const { std::cell::RefCell::new([CachedFloat { bits: u64::MAX, len: 0, text: [0; 27] }; FLOAT_CACHE_SLOTS]) };
}

/// Python's `repr` of a float (see [`crate::twin::float_repr_len`] for the layout).
pub fn write_float(out: &mut Vec<u8>, value: f64) {
    with_float_text(value, |text| out.extend_from_slice(text));
}

/// Bytes of [`write_float`]'s text.
pub fn float_len(value: f64) -> usize {
    with_float_text(value, <[u8]>::len)
}

fn with_float_text<R>(value: f64, use_text: impl FnOnce(&[u8]) -> R) -> R {
    let bits = value.to_bits();
    // Fibonacci hashing: the top bits of the product mix every bit of the float.
    let slot = (bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % FLOAT_CACHE_SLOTS;
    FLOAT_CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        let entry = &mut cache[slot];
        if entry.bits != bits || entry.len == 0 {
            let mut text = Vec::with_capacity(32);
            format_float(&mut text, value);
            // Python's repr of a float is at most 24 bytes ("-2.2250738585072014e-308").
            let len = text.len().min(entry.text.len());
            entry.bits = bits;
            entry.len = len as u8;
            entry.text[..len].copy_from_slice(&text[..len]);
        }
        use_text(&entry.text[..usize::from(entry.len)])
    })
}

fn format_float(out: &mut Vec<u8>, value: f64) {
    if !value.is_finite() {
        // json.dumps(allow_nan=True) spelling; callers never store non-finite numbers.
        out.extend_from_slice(if value.is_nan() {
            b"NaN"
        } else if value > 0.0 {
            b"Infinity"
        } else {
            b"-Infinity"
        });
        return;
    }
    if value.is_sign_negative() {
        out.push(b'-');
    }
    let mut buffer = [0u8; 24];
    let (count, exponent) = shortest_digits(value.abs(), &mut buffer);
    let digits = &buffer[..count];
    let decpt = exponent + 1;
    if !(-3..=16).contains(&decpt) {
        out.push(digits[0]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exponent < 0 { b'-' } else { b'+' });
        let magnitude = exponent.unsigned_abs();
        if magnitude < 10 {
            out.push(b'0');
        }
        write_int(out, i64::from(magnitude));
    } else if decpt <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', decpt.unsigned_abs() as usize));
        out.extend_from_slice(digits);
    } else {
        let point = decpt as usize;
        if point < digits.len() {
            out.extend_from_slice(&digits[..point]);
            out.push(b'.');
            out.extend_from_slice(&digits[point..]);
        } else {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', point - digits.len()));
            out.extend_from_slice(b".0");
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// A JSON string as Python writes it with `ensure_ascii=False`.
pub fn write_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let short: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        start = i + 1;
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

pub fn write_int(out: &mut Vec<u8>, value: i64) {
    let mut buffer = [0u8; 20];
    let mut at = buffer.len();
    let mut magnitude = value.unsigned_abs();
    loop {
        at -= 1;
        buffer[at] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if value < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buffer[at..]);
}

/// Compact JSON of `value`.
pub fn write(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(int) => write_int(out, *int),
        Value::BigInt(text) => out.extend_from_slice(text.as_bytes()),
        Value::Float(float) => write_float(out, *float),
        Value::Str(text) => write_str(out, text),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(out, item);
            }
            out.push(b']');
        }
        Value::Object(object) => write_object(out, object),
    }
}

pub fn write_object(out: &mut Vec<u8>, object: &Object) {
    out.push(b'{');
    for (i, (key, value)) in object.0.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        write(out, value);
    }
    out.push(b'}');
}

/// Bytes [`write`] would produce, without writing.
pub fn encoded_len(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(true) => 4,
        Value::Bool(false) => 5,
        Value::Int(int) => int_len(*int),
        Value::BigInt(text) => text.len(),
        Value::Float(float) => float_len(*float),
        Value::Str(text) => json_string_len(text),
        Value::Array(items) => {
            2 + items.len().saturating_sub(1) + items.iter().map(encoded_len).sum::<usize>()
        }
        Value::Object(object) => object_len(object),
    }
}

pub fn object_len(object: &Object) -> usize {
    2 + object.len().saturating_sub(1)
        + object
            .0
            .iter()
            .map(|(k, v)| json_string_len(k) + 1 + encoded_len(v))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &Value) -> String {
        let mut out = Vec::new();
        write(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    fn float(value: f64) -> String {
        let mut out = Vec::new();
        write_float(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_are_written_as_python_repr() {
        let extra: &[(f64, &str)] = &[
            (1700000000.123, "1700000000.123"),
            // Halfway between two shortest candidates: Python keeps the even digit.
            (562_949_953_421_312.0 + 0.25, "562949953421312.2"),
            (562_949_953_421_312.0 + 0.75, "562949953421312.8"),
            (5.960464477539063e-08, "5.960464477539063e-08"),
        ];
        for &(value, repr) in crate::twin::PYTHON_FLOAT_REPRS.iter().chain(extra) {
            assert_eq!(float(value), repr);
            assert_eq!(float_repr_len(value), repr.len());
        }
    }

    #[test]
    fn text_round_trips_with_python_escapes() {
        let source =
            r#"{"a":[1,-2,3.5,true,false,null],"s":"x\"\\\n\u0001\u00e9\ud83d\ude00/","e":{}}"#;
        let value = parse(source, 64).unwrap();
        assert_eq!(
            text(&value),
            "{\"a\":[1,-2,3.5,true,false,null],\"s\":\"x\\\"\\\\\\n\\u0001é😀/\",\"e\":{}}"
        );
        assert_eq!(encoded_len(&value), text(&value).len());
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_at_the_first_position() {
        let value = parse(r#"{"a":1,"b":2,"a":3}"#, 64).unwrap();
        assert_eq!(text(&value), r#"{"a":3,"b":2}"#);
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        let source = format!("{{{},\"k0\":\"last\"}}", many.join(","));
        let value = parse(&source, 64).unwrap();
        assert!(text(&value).starts_with("{\"k0\":\"last\",\"k1\":1"));
    }

    #[test]
    fn big_integers_are_kept_exactly_and_compare_by_value() {
        let value = parse("[18446744073709551616,-0,100000000000000000000]", 64).unwrap();
        assert_eq!(
            text(&value),
            "[18446744073709551616,0,100000000000000000000]"
        );
        let Value::Array(items) = value else { panic!() };
        assert!(same(&items[2], &Value::Float(1e20)));
        assert!(!same(&items[0], &Value::Float(1.8e19)));
        assert!(same(&Value::Int(1), &Value::Float(1.0)));
        assert!(!same(&Value::Int(1), &Value::Bool(true)));
        assert!(!same(&Value::Int(i64::MAX), &Value::Float(i64::MAX as f64)));
    }

    #[test]
    fn what_python_refuses_is_refused() {
        for bad in [
            "",
            "nan",
            "NaN",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            "1e",
            "-",
            "\"\u{1}\"",
            "[",
            "{\"a\"}",
            "\"\\x\"",
            "\"\\u12\"",
            "\u{feff}{}",
            "{} x",
            "tru",
        ] {
            assert!(
                matches!(parse(bad, 64), Err(ParseError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert_eq!(parse("\"\\ud800\"", 64), Err(ParseError::LoneSurrogate));
        assert_eq!(parse("\"\\udc00\"", 64), Err(ParseError::LoneSurrogate));
        assert_eq!(parse(&"[".repeat(65), 64), Err(ParseError::TooDeep));
        assert!(parse(&format!("{}{}", "[".repeat(64), "]".repeat(64)), 64).is_ok());
        assert_eq!(parse(&"9".repeat(4301), 64), Err(ParseError::IntTooLong));
        assert!(parse(&"9".repeat(4300), 64).is_ok());
        assert_eq!(parse("1e400", 64), Ok(Value::Float(f64::INFINITY)));
        assert_eq!(parse(" \t\n\r{}\n", 64), Ok(Value::Object(Object::new())));
    }
}
