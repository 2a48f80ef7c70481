//! One device's twin on bytes: report payload -> parse -> limits -> merge -> stamp ->
//! delta -> the bytes to publish, to append to the outbox and to store.
//!
//! `edgenode._pure.devtwin` is the specification (same outcomes, messages and bytes);
//! `py_devtwin` binds this module. Parse errors are left to the binding to word (it asks
//! the specification, so both backends quote `json`'s messages); everything else is
//! decided and worded here.

use std::sync::Arc;

use crate::jsontext::{
    encoded_len, object_len, parse, same, same_object, write, write_float, write_int, write_object,
    write_str, Object, ParseError, Value,
};
use crate::twin::{Fault, Problem, Segment, MAX_DEPTH, MAX_DOCUMENT_BYTES, MAX_KEY_BYTES};

pub const TWIN_FORMAT: i64 = 1;
/// Payloads up to this size are parsed; larger ones are rejected unread.
pub const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;
/// Deepest nesting of a payload that is parsed.
pub const PARSE_MAX_DEPTH: usize = 64;
/// Deepest nesting of a stored document (ours are at most MAX_DEPTH + 2 deep).
const STORED_MAX_DEPTH: usize = 2 * PARSE_MAX_DEPTH;
pub const MAX_CLIENT_TOKEN_CHARS: usize = 64;
pub const MAX_REASON_CHARS: usize = 1024;

/// First allocation for a written document (it grows as needed).
const DOCUMENT_CAPACITY: usize = 8192;

pub const BAD_REQUEST: u16 = 400;
pub const FORBIDDEN: u16 = 403;
pub const TOO_LARGE: u16 = 413;

const UPDATE_FIELDS: [&str; 4] = ["reported", "clientToken", "ack", "desired"];
const ACK_FIELDS: [&str; 3] = ["version", "status", "reason"];
/// Sorted, as the message lists them.
const ACK_STATUSES: [&str; 3] = ["accepted", "in-progress", "rejected"];

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// The payload is not a readable JSON text: the binding words it (and finds the token).
    Unreadable(ParseError),
    Coded {
        code: u16,
        message: String,
        token: Option<String>,
    },
    /// `unknown field <repr>` (ack: `unknown ack field <repr>`): Python's `repr` of the key.
    UnknownField {
        key: String,
        ack: bool,
        token: Option<String>,
    },
}

fn coded(code: u16, message: impl Into<String>) -> Refusal {
    Refusal::Coded {
        code,
        message: message.into(),
        token: None,
    }
}

/// The outcome of an accepted mutation (see `ReportOutcome` in the specification).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    pub token: Option<String>,
    pub reply: Vec<u8>,
    pub changed: bool,
    pub ack_changed: bool,
    /// None: leave the retained delta; empty: clear it; else publish.
    pub delta: Option<Vec<u8>>,
    pub twin_uplink: Option<Vec<u8>>,
    pub ack_uplink: Option<Vec<u8>>,
    pub document: Option<Vec<u8>>,
}

/// The desired document and its timestamps, with their JSON text: they change rarely
/// (from the cloud), so reports share them and copy their bytes into each document.
#[derive(Debug, PartialEq)]
struct Desired {
    doc: Object,
    meta: Object,
    doc_json: Vec<u8>,
    meta_json: Vec<u8>,
}

impl Desired {
    fn new(doc: Object, meta: Object) -> Arc<Self> {
        let mut doc_json = Vec::new();
        write_object(&mut doc_json, &doc);
        let mut meta_json = Vec::new();
        write_object(&mut meta_json, &meta);
        Arc::new(Desired {
            doc,
            meta,
            doc_json,
            meta_json,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
struct State {
    desired: Arc<Desired>,
    reported: Object,
    desired_version: i64,
    reported_version: i64,
    reported_meta: Object,
    ack: Value,
    state: Value,
    delta_sent: Value,
}

impl State {
    fn empty() -> Self {
        State {
            desired: Desired::new(Object::new(), Object::new()),
            reported: Object::new(),
            desired_version: 0,
            reported_version: 0,
            reported_meta: Object::new(),
            ack: Value::Null,
            state: Value::Null,
            delta_sent: Value::Null,
        }
    }

    fn document(&self) -> Vec<u8> {
        let mut reported = Vec::with_capacity(DOCUMENT_CAPACITY / 4);
        write_object(&mut reported, &self.reported);
        self.document_with(&reported)
    }

    /// The stored document, given the JSON text of `reported`.
    fn document_with(&self, reported: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(DOCUMENT_CAPACITY);
        out.extend_from_slice(b"{\"format\":1,\"desired\":");
        out.extend_from_slice(&self.desired.doc_json);
        out.extend_from_slice(b",\"reported\":");
        out.extend_from_slice(reported);
        out.extend_from_slice(b",\"version\":{\"desired\":");
        write_int(&mut out, self.desired_version);
        out.extend_from_slice(b",\"reported\":");
        write_int(&mut out, self.reported_version);
        out.extend_from_slice(b"},\"metadata\":{\"desired\":");
        out.extend_from_slice(&self.desired.meta_json);
        out.extend_from_slice(b",\"reported\":");
        write_object(&mut out, &self.reported_meta);
        out.extend_from_slice(b"},\"ack\":");
        write(&mut out, &self.ack);
        out.extend_from_slice(b",\"state\":");
        write(&mut out, &self.state);
        out.extend_from_slice(b",\"delta_sent\":");
        write(&mut out, &self.delta_sent);
        out.push(b'}');
        out
    }

    /// `{"version": desired_version, "delta": ...}` or None when the delta is empty.
    fn delta_message(&self) -> Option<Value> {
        let current = delta(&self.desired.doc, &self.reported);
        if current.is_empty() {
            return None;
        }
        let mut message = Object::new();
        message.push("version", Value::Int(self.desired_version));
        message.push("delta", Value::Object(current));
        Some(Value::Object(message))
    }

    /// Set `delta_sent`; the retained message to publish (empty: clear) if it moved.
    fn update_delta(&mut self) -> Option<Vec<u8>> {
        let message = self.delta_message();
        match (&message, &self.delta_sent) {
            (None, Value::Null) => return None,
            (Some(new), sent) if !matches!(sent, Value::Null) && same(new, sent) => return None,
            _ => {}
        }
        let bytes = match &message {
            None => Vec::new(),
            Some(value) => {
                let mut out = Vec::new();
                write(&mut out, value);
                out
            }
        };
        self.delta_sent = message.unwrap_or(Value::Null);
        Some(bytes)
    }
}

// -------------------------------------------------------------- twin engine ----

/// The structure walk of `edgenode._pure.twin._check_structure` on a parsed value
/// (every parsed value is JSON; only depth, key length and non-finite floats remain).
fn check_walk(value: &Value, depth: usize) -> Result<(), Fault> {
    match value {
        Value::Object(object) => {
            if depth > MAX_DEPTH {
                return Err(Fault::new(Problem::TooDeep));
            }
            for (key, item) in object.iter() {
                if key.len() > MAX_KEY_BYTES {
                    return Err(Fault::new(Problem::KeyTooLong { key: key.clone() }));
                }
                check_walk(item, depth + 1).map_err(|mut fault| {
                    fault.path.push(Segment::Key(key.clone()));
                    fault
                })?;
            }
            Ok(())
        }
        Value::Array(items) => {
            if depth > MAX_DEPTH {
                return Err(Fault::new(Problem::TooDeep));
            }
            for (index, item) in items.iter().enumerate() {
                check_walk(item, depth + 1).map_err(|mut fault| {
                    fault.path.push(Segment::Index(index));
                    fault
                })?;
            }
            Ok(())
        }
        Value::Float(float) if !float.is_finite() => Err(Fault::new(Problem::NotFinite {
            repr: crate::twin::non_finite_repr(*float),
        })),
        _ => Ok(()),
    }
}

/// `_check(patch, ...)` of the twin engine: structure, then size.
fn check(object: &Object) -> Result<(), Fault> {
    for (key, item) in object.iter() {
        if key.len() > MAX_KEY_BYTES {
            return Err(Fault::new(Problem::KeyTooLong { key: key.clone() }));
        }
        check_walk(item, 2).map_err(|mut fault| {
            fault.path.push(Segment::Key(key.clone()));
            fault
        })?;
    }
    let size = object_len(object);
    if size > MAX_DOCUMENT_BYTES {
        return Err(Fault::new(Problem::TooLarge { size }));
    }
    Ok(())
}

/// `MergePatch({}, patch)`: a copy without null members, recursively.
fn without_nulls(patch: &Object) -> Object {
    Object(
        patch
            .0
            .iter()
            .filter(|(_, v)| !matches!(v, Value::Null))
            .map(|(k, v)| {
                let value = match v {
                    Value::Object(inner) => Value::Object(without_nulls(inner)),
                    other => other.clone(),
                };
                (k.clone(), value)
            })
            .collect(),
    )
}

/// RFC 7386 merge of `patch` into `doc`, in place (same key order as the engine's copy).
fn merge_into(doc: &mut Object, patch: &Object) {
    for (key, change) in patch.iter() {
        let position = doc.0.iter().position(|(k, _)| k == key);
        match (position, change) {
            (Some(at), Value::Null) => {
                doc.0.remove(at);
            }
            (None, Value::Null) => {}
            (Some(at), Value::Object(inner)) => match &mut doc.0[at].1 {
                Value::Object(existing) => merge_into(existing, inner),
                slot => *slot = Value::Object(without_nulls(inner)),
            },
            (Some(at), other) => doc.0[at].1 = other.clone(),
            (None, Value::Object(inner)) => {
                doc.push(key.clone(), Value::Object(without_nulls(inner)))
            }
            (None, other) => doc.push(key.clone(), other.clone()),
        }
    }
}

/// `merge_patch(doc, patch)` of the twin engine for a checked `doc`.
fn merge_patch(doc: &Object, patch: &Object) -> Result<Object, Fault> {
    check(patch)?;
    merged(doc, patch)
}

/// The merge of a checked `patch` into `doc`, with the engine's result size limit.
fn merged(doc: &Object, patch: &Object) -> Result<Object, Fault> {
    let mut merged = doc.clone();
    merge_into(&mut merged, patch);
    let size = object_len(&merged);
    if size > MAX_DOCUMENT_BYTES {
        return Err(Fault::new(Problem::ResultTooLarge { size }));
    }
    Ok(merged)
}

/// True if merging `patch` into `doc` gives something other than `doc` (by JSON
/// equality): `!same(merge(doc, patch), doc)` without building the merge.
fn patch_changes(doc: &Object, patch: &Object) -> bool {
    let index = doc.index();
    patch
        .iter()
        .any(|(key, change)| match (index.get(key), change) {
            (None, Value::Null) => false,
            (Some(Value::Object(inner)), Value::Object(nested)) => patch_changes(inner, nested),
            // A deleted key, a new key (even `{}`), an object over a non-object.
            (Some(_), Value::Null) | (None, _) | (Some(_), Value::Object(_)) => true,
            (Some(have), _) => !same(have, change),
        })
}

/// What `reported` still lacks of `desired` (PRODUCT.md "Device twins").
fn delta(desired: &Object, reported: &Object) -> Object {
    let index = reported.index();
    let mut out = Object::new();
    for (key, want) in desired.iter() {
        match index.get(key) {
            None => out.push(key.clone(), want.clone()),
            Some(have) => match (want, have) {
                (Value::Object(w), Value::Object(h)) => {
                    let nested = delta(w, h);
                    if !nested.is_empty() {
                        out.push(key.clone(), Value::Object(nested));
                    }
                }
                _ => {
                    if !same(want, have) {
                        out.push(key.clone(), want.clone());
                    }
                }
            },
        }
    }
    out
}

/// The smallest merge patch turning `old` into `new`.
fn diff_patch(old: &Object, new: &Object) -> Object {
    let new_index = new.index();
    let old_index = old.index();
    let mut patch = Object::new();
    for (key, _) in old.iter() {
        if new_index.position(key).is_none() {
            patch.push(key.clone(), Value::Null);
        }
    }
    for (key, value) in new.iter() {
        match old_index.get(key) {
            None => patch.push(key.clone(), value.clone()),
            Some(before) => match (value, before) {
                (Value::Object(v), Value::Object(b)) => {
                    let nested = diff_patch(b, v);
                    if !nested.is_empty() {
                        patch.push(key.clone(), Value::Object(nested));
                    }
                }
                _ => {
                    if !same(before, value) {
                        patch.push(key.clone(), value.clone());
                    }
                }
            },
        }
    }
    patch
}

/// The engine's `_stamp`, in place.
fn stamp_into(meta: &mut Object, patch: &Object, now: f64) {
    for (key, change) in patch.iter() {
        let position = meta.0.iter().position(|(k, _)| k == key);
        match (position, change) {
            (Some(at), Value::Null) => {
                meta.0.remove(at);
            }
            (None, Value::Null) => {}
            (Some(at), Value::Object(inner)) => {
                let slot = &mut meta.0[at].1;
                if !matches!(slot, Value::Object(_)) {
                    *slot = Value::Object(Object::new());
                }
                if let Value::Object(existing) = slot {
                    stamp_into(existing, inner, now);
                }
            }
            (Some(at), _) => meta.0[at].1 = Value::Float(now),
            (None, Value::Object(inner)) => {
                let mut fresh = Object::new();
                stamp_into(&mut fresh, inner, now);
                meta.push(key.clone(), Value::Object(fresh));
            }
            (None, _) => meta.push(key.clone(), Value::Float(now)),
        }
    }
}

/// `stamp(meta, patch, now)` of the engine (meta is ours, so only the patch is checked).
fn stamp(meta: &Object, patch: &Object, now: f64) -> Result<Object, Fault> {
    check(patch)?;
    let mut out = meta.clone();
    stamp_into(&mut out, patch, now);
    Ok(out)
}

fn same_ack(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => ACK_FIELDS.iter().all(|field| {
            same(
                x.get(field).unwrap_or(&Value::Null),
                y.get(field).unwrap_or(&Value::Null),
            )
        }),
        (Value::Null, Value::Null) => true,
        _ => false,
    }
}

// ---------------------------------------------------------------- the twin ----

/// Why a stored document cannot be loaded (ValueError in Python).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadDocument(pub String);

fn bad(message: impl Into<String>) -> BadDocument {
    BadDocument(message.into())
}

fn load(stored: &[u8]) -> Result<State, BadDocument> {
    let text = std::str::from_utf8(stored).map_err(|_| bad("stored twin is not JSON"))?;
    let doc = parse(text, STORED_MAX_DEPTH).map_err(|_| bad("stored twin is not JSON"))?;
    let Value::Object(doc) = doc else {
        return Err(bad("not a twin document of format 1"));
    };
    if !doc
        .get("format")
        .is_some_and(|format| same(format, &Value::Int(TWIN_FORMAT)))
    {
        return Err(bad("not a twin document of format 1"));
    }
    let (Some(Value::Object(version)), Some(Value::Object(metadata))) =
        (doc.get("version"), doc.get("metadata"))
    else {
        return Err(bad("version and metadata must be objects"));
    };
    let object = |value: Option<&Value>, name: &str| match value {
        Some(Value::Object(object)) => Ok(object.clone()),
        _ => Err(bad(format!("{name} is not an object"))),
    };
    let desired = object(doc.get("desired"), "desired")?;
    let reported = object(doc.get("reported"), "reported")?;
    let desired_meta = object(metadata.get("desired"), "desired_meta")?;
    let reported_meta = object(metadata.get("reported"), "reported_meta")?;
    let desired = Desired::new(desired, desired_meta);
    let number = |name: &str| match version.get(name) {
        Some(Value::Int(n)) if *n >= 0 => Ok(*n),
        _ => Err(bad("versions are not integers")),
    };
    let field = |name: &str| doc.get(name).cloned().unwrap_or(Value::Null);
    Ok(State {
        desired,
        reported,
        desired_version: number("desired")?,
        reported_version: number("reported")?,
        reported_meta,
        ack: field("ack"),
        state: field("state"),
        delta_sent: field("delta_sent"),
    })
}

/// Step 1, 2 and the parse of the specification's `read_payload`.
fn read(payload: &[u8]) -> Result<Value, Refusal> {
    // Too large or not UTF-8: unreadable too, as the specification still looks for a
    // clientToken in the raw bytes of such payloads.
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(Refusal::Unreadable(ParseError::Syntax(0)));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|error| Refusal::Unreadable(ParseError::Syntax(error.valid_up_to())))?;
    parse(text, PARSE_MAX_DEPTH).map_err(Refusal::Unreadable)
}

fn read_object(payload: &[u8]) -> Result<Object, Refusal> {
    match read(payload)? {
        Value::Object(object) => Ok(object),
        other => Err(coded(
            BAD_REQUEST,
            format!("payload must be a JSON object, not {}", other.type_name()),
        )),
    }
}

fn read_token(doc: &Object) -> Result<Option<String>, Refusal> {
    match doc.get("clientToken") {
        None => Ok(None),
        Some(Value::Str(token))
            if !token.is_empty() && token.chars().count() <= MAX_CLIENT_TOKEN_CHARS =>
        {
            Ok(Some(token.clone()))
        }
        Some(_) => Err(coded(
            BAD_REQUEST,
            format!("clientToken must be a string of 1 to {MAX_CLIENT_TOKEN_CHARS} characters"),
        )),
    }
}

fn refuse_fault(fault: Fault) -> Refusal {
    coded(
        if fault.is_limit() {
            TOO_LARGE
        } else {
            BAD_REQUEST
        },
        fault.message(),
    )
}

/// An error of `set_desired`: the desired document is unreadable, or the engine's fault.
#[derive(Debug, Clone, PartialEq)]
pub enum DesiredError {
    Unreadable,
    Fault(Fault),
}

pub struct DeviceTwin {
    device: String,
    current: State,
    pending: Option<State>,
}

impl DeviceTwin {
    /// The twin of `device`, from its stored document if there is one.
    pub fn new(device: &str, stored: Option<&[u8]>) -> Result<Self, BadDocument> {
        let current = match stored {
            None => State::empty(),
            Some(bytes) => load(bytes)?,
        };
        Ok(DeviceTwin {
            device: device.to_owned(),
            current,
            pending: None,
        })
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn desired_version(&self) -> i64 {
        self.current.desired_version
    }

    pub fn reported_version(&self) -> i64 {
        self.current.reported_version
    }

    pub fn document(&self) -> Vec<u8> {
        self.current.document()
    }

    pub fn commit(&mut self) {
        if let Some(state) = self.pending.take() {
            self.current = state;
        }
    }

    pub fn delta_message(&self) -> Option<Vec<u8>> {
        self.current.delta_message().map(|message| {
            let mut out = Vec::new();
            write(&mut out, &message);
            out
        })
    }

    pub fn view(&self, now: f64, token: Option<&str>) -> Vec<u8> {
        let s = &self.current;
        let mut out = Vec::with_capacity(DOCUMENT_CAPACITY);
        out.extend_from_slice(b"{\"desired\":");
        out.extend_from_slice(&s.desired.doc_json);
        out.extend_from_slice(b",\"reported\":");
        write_object(&mut out, &s.reported);
        out.extend_from_slice(b",\"delta\":");
        write_object(&mut out, &delta(&s.desired.doc, &s.reported));
        out.extend_from_slice(b",\"version\":{\"desired\":");
        write_int(&mut out, s.desired_version);
        out.extend_from_slice(b",\"reported\":");
        write_int(&mut out, s.reported_version);
        out.extend_from_slice(b"},\"metadata\":{\"desired\":");
        out.extend_from_slice(&s.desired.meta_json);
        out.extend_from_slice(b",\"reported\":");
        write_object(&mut out, &s.reported_meta);
        out.extend_from_slice(b"},\"ack\":");
        write(&mut out, &s.ack);
        out.extend_from_slice(b",\"state\":");
        write(&mut out, &s.state);
        out.extend_from_slice(b",\"timestamp\":");
        write_float(&mut out, now);
        if let Some(token) = token {
            out.extend_from_slice(b",\"clientToken\":");
            write_str(&mut out, token);
        }
        out.push(b'}');
        out
    }

    /// Prepare the device state; the document to store, None if unchanged.
    pub fn set_state(&mut self, value: &str, now: f64) -> Option<Vec<u8>> {
        self.pending = None;
        if let Value::Object(state) = &self.current.state {
            if state
                .get("value")
                .is_some_and(|v| same(v, &Value::Str(value.to_owned())))
            {
                return None;
            }
        }
        let mut new = self.current.clone();
        let mut state = Object::new();
        state.push("value", Value::Str(value.to_owned()));
        state.push("timestamp", Value::Float(now));
        new.state = Value::Object(state);
        let document = new.document();
        self.pending = Some(new);
        Some(document)
    }

    /// Prepare a new desired document (JSON object bytes), replaced or merged in.
    ///
    /// `version`: the desired version the hub gave this document. It becomes the twin's
    /// desired version when it is greater than the current one (also for an unchanged
    /// document: one number names one document everywhere); otherwise a changed document
    /// takes the current version + 1, so versions never go backwards.
    pub fn set_desired(
        &mut self,
        desired: &[u8],
        now: f64,
        merge: bool,
        version: Option<i64>,
    ) -> Result<Outcome, DesiredError> {
        self.pending = None;
        let patch = read_object(desired).map_err(|_| DesiredError::Unreadable)?;
        let old = &self.current;
        let base = if merge {
            old.desired.doc.clone()
        } else {
            Object::new()
        };
        let new_desired = merge_patch(&base, &patch).map_err(DesiredError::Fault)?;
        let changed = !same_object(&new_desired, &old.desired.doc);
        let adopted = version.filter(|v| *v > old.desired_version);
        if !changed && adopted.is_none() {
            return Ok(Outcome::default());
        }
        let desired_meta = if changed {
            let diff = diff_patch(&old.desired.doc, &new_desired);
            stamp(&old.desired.meta, &diff, now).map_err(DesiredError::Fault)?
        } else {
            old.desired.meta.clone()
        };
        let mut new = State {
            desired: Desired::new(new_desired, desired_meta),
            // Saturating: a version of 2**63 - 1 (only ever a hostile one) stays there.
            desired_version: adopted.unwrap_or(old.desired_version.saturating_add(1)),
            ..old.clone()
        };
        let delta = new.update_delta();
        let document = new.document();
        self.pending = Some(new);
        Ok(Outcome {
            changed: true,
            delta,
            document: Some(document),
            ..Outcome::default()
        })
    }

    /// Prepare a device report (`twin/update` payload bytes).
    pub fn apply_report(&mut self, payload: &[u8], now: f64) -> Result<Outcome, Refusal> {
        self.pending = None;
        let doc = read_object(payload)?;
        let token = read_token(&doc)?;
        self.apply(&doc, token.clone(), now)
            .map_err(|refusal| match refusal {
                Refusal::Coded { code, message, .. } => Refusal::Coded {
                    code,
                    message,
                    token,
                },
                Refusal::UnknownField { key, ack, .. } => Refusal::UnknownField { key, ack, token },
                other => other,
            })
    }

    fn apply(&mut self, doc: &Object, token: Option<String>, now: f64) -> Result<Outcome, Refusal> {
        if doc.contains("desired") {
            return Err(coded(
                FORBIDDEN,
                "desired is owned by the cloud; a device writes reported",
            ));
        }
        if let Some(key) = doc
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !UPDATE_FIELDS.contains(&k.as_str()))
            .min()
        {
            return Err(Refusal::UnknownField {
                key: key.clone(),
                ack: false,
                token: None,
            });
        }
        let patch_value = doc.get("reported");
        let ack_value = doc.get("ack");
        if patch_value.is_none() && ack_value.is_none() {
            return Err(coded(BAD_REQUEST, "an update needs reported or ack"));
        }
        let empty = Object::new();
        let patch = match patch_value {
            None => &empty,
            Some(Value::Object(patch)) => patch,
            Some(other) => {
                return Err(coded(
                    BAD_REQUEST,
                    format!("reported must be a JSON object, not {}", other.type_name()),
                ))
            }
        };
        let old = &self.current;
        let new_ack = match ack_value {
            Some(ack) => Some(check_ack(ack, old.desired_version, now)?),
            None => None,
        };
        check(patch).map_err(refuse_fault)?;
        // A report that changes nothing (common: devices repeat their values) costs no copy.
        let new_reported = if patch_changes(&old.reported, patch) {
            Some(merged(&old.reported, patch).map_err(refuse_fault)?)
        } else {
            None
        };
        let changed = new_reported.is_some();
        let ack_changed = new_ack.as_ref().is_some_and(|ack| !same_ack(ack, &old.ack));
        let mut accepted = Vec::with_capacity(64);
        let reported_version = old.reported_version + i64::from(changed);
        accepted.extend_from_slice(b"{\"version\":");
        write_int(&mut accepted, reported_version);
        if let Some(token) = &token {
            accepted.extend_from_slice(b",\"clientToken\":");
            write_str(&mut accepted, token);
        }
        accepted.extend_from_slice(b",\"timestamp\":");
        write_float(&mut accepted, now);
        accepted.push(b'}');
        if !changed && !ack_changed {
            return Ok(Outcome {
                token,
                reply: accepted,
                ..Outcome::default()
            });
        }
        let mut delta = None;
        let mut new = if let Some(new_reported) = new_reported {
            let diff = diff_patch(&old.reported, &new_reported);
            let reported_meta = stamp(&old.reported_meta, &diff, now).map_err(refuse_fault)?;
            let mut new = State {
                reported: new_reported,
                reported_version,
                reported_meta,
                ..old.clone_small()
            };
            delta = new.update_delta();
            new
        } else {
            old.clone()
        };
        if ack_changed {
            if let Some(ack) = new_ack {
                new.ack = ack;
            }
        }
        let mut reported_json = Vec::with_capacity(DOCUMENT_CAPACITY / 4);
        write_object(&mut reported_json, &new.reported);
        let mut twin_uplink = Vec::with_capacity(DOCUMENT_CAPACITY / 2);
        twin_uplink.extend_from_slice(b"{\"device\":");
        write_str(&mut twin_uplink, &self.device);
        twin_uplink.extend_from_slice(b",\"reported\":");
        twin_uplink.extend_from_slice(&reported_json);
        twin_uplink.extend_from_slice(b",\"version\":");
        write_int(&mut twin_uplink, new.reported_version);
        twin_uplink.extend_from_slice(b",\"ack\":");
        write(&mut twin_uplink, &new.ack);
        twin_uplink.extend_from_slice(b",\"timestamp\":");
        write_float(&mut twin_uplink, now);
        twin_uplink.push(b'}');
        let ack_uplink = ack_changed.then(|| {
            let mut out = Vec::with_capacity(128);
            out.extend_from_slice(b"{\"device\":");
            write_str(&mut out, &self.device);
            out.extend_from_slice(b",\"ack\":");
            write(&mut out, &new.ack);
            out.extend_from_slice(b",\"timestamp\":");
            write_float(&mut out, now);
            out.push(b'}');
            out
        });
        let document = new.document_with(&reported_json);
        self.pending = Some(new);
        Ok(Outcome {
            token,
            reply: accepted,
            changed,
            ack_changed,
            delta,
            twin_uplink: Some(twin_uplink),
            ack_uplink,
            document: Some(document),
        })
    }
}

impl State {
    /// A copy without the reported document and its timestamps (the caller supplies
    /// new ones); the desired side is shared.
    fn clone_small(&self) -> State {
        State {
            desired: Arc::clone(&self.desired),
            reported: Object::new(),
            desired_version: self.desired_version,
            reported_version: self.reported_version,
            reported_meta: Object::new(),
            ack: self.ack.clone(),
            state: self.state.clone(),
            delta_sent: self.delta_sent.clone(),
        }
    }
}

fn check_ack(ack: &Value, desired_version: i64, now: f64) -> Result<Value, Refusal> {
    let Value::Object(ack) = ack else {
        return Err(coded(
            BAD_REQUEST,
            format!("ack must be a JSON object, not {}", ack.type_name()),
        ));
    };
    if let Some(key) = ack
        .iter()
        .map(|(k, _)| k)
        .filter(|k| !ACK_FIELDS.contains(&k.as_str()))
        .min()
    {
        return Err(Refusal::UnknownField {
            key: key.clone(),
            ack: true,
            token: None,
        });
    }
    let version = match ack.get("version") {
        Some(version @ (Value::Int(_) | Value::BigInt(_))) => version,
        _ => return Err(coded(BAD_REQUEST, "ack.version must be an integer")),
    };
    let in_range = matches!(version, Value::Int(v) if (1..=desired_version).contains(v));
    if !in_range {
        let mut shown = Vec::new();
        write(&mut shown, version);
        return Err(coded(
            BAD_REQUEST,
            format!(
                "ack.version {} is not a desired version (the desired version is {desired_version})",
                String::from_utf8_lossy(&shown)
            ),
        ));
    }
    let status = match ack.get("status") {
        Some(Value::Str(status)) if ACK_STATUSES.contains(&status.as_str()) => status,
        _ => {
            return Err(coded(
                BAD_REQUEST,
                format!("ack.status must be one of {}", ACK_STATUSES.join(", ")),
            ))
        }
    };
    let mut result = Object::new();
    result.push("version", version.clone());
    result.push("status", Value::Str(status.clone()));
    if let Some(reason) = ack.get("reason") {
        match reason {
            Value::Str(text) if text.chars().count() <= MAX_REASON_CHARS => {
                result.push("reason", reason.clone());
            }
            _ => {
                return Err(coded(
                    BAD_REQUEST,
                    format!("ack.reason must be a string of at most {MAX_REASON_CHARS} characters"),
                ))
            }
        }
    }
    result.push("timestamp", Value::Float(now));
    Ok(Value::Object(result))
}

/// Bytes of `value` as compact JSON (for tests and the binding).
pub fn to_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(value));
    write(&mut out, value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    fn coded_of(result: Result<Outcome, Refusal>) -> (u16, String) {
        match result {
            Err(Refusal::Coded { code, message, .. }) => (code, message),
            other => panic!("not a coded refusal: {other:?}"),
        }
    }

    #[test]
    fn a_report_is_merged_stamped_and_serialized() {
        let mut twin = DeviceTwin::new("lamp", None).unwrap();
        let outcome = twin
            .apply_report(
                br#"{"reported":{"power":"on","n":1},"clientToken":"t"}"#,
                100.0,
            )
            .unwrap();
        assert_eq!(
            text(&outcome.reply),
            r#"{"version":1,"clientToken":"t","timestamp":100.0}"#
        );
        assert!(outcome.changed && !outcome.ack_changed);
        assert_eq!(outcome.delta, None);
        assert_eq!(
            text(outcome.twin_uplink.as_deref().unwrap()),
            r#"{"device":"lamp","reported":{"power":"on","n":1},"version":1,"ack":null,"timestamp":100.0}"#
        );
        let document = outcome.document.unwrap();
        assert_eq!(twin.reported_version(), 0, "prepared, not committed");
        twin.commit();
        assert_eq!(twin.reported_version(), 1);
        assert_eq!(twin.document(), document);
        assert_eq!(
            text(&document),
            concat!(
                r#"{"format":1,"desired":{},"reported":{"power":"on","n":1},"#,
                r#""version":{"desired":0,"reported":1},"metadata":{"desired":{},"#,
                r#""reported":{"power":100.0,"n":100.0}},"ack":null,"state":null,"delta_sent":null}"#
            )
        );
        // The same values again (numbers by value) change nothing.
        let again = twin
            .apply_report(br#"{"reported":{"n":1.0}}"#, 200.0)
            .unwrap();
        assert!(!again.changed && again.document.is_none());
        assert_eq!(text(&again.reply), r#"{"version":1,"timestamp":200.0}"#);
        // A reloaded twin is the same twin.
        let reloaded = DeviceTwin::new("lamp", Some(&document)).unwrap();
        assert_eq!(reloaded.document(), document);
    }

    #[test]
    fn desired_changes_produce_the_delta_and_reports_clear_it() {
        let mut twin = DeviceTwin::new("lamp", None).unwrap();
        let outcome = twin
            .set_desired(br#"{"power":"on","level":3}"#, 1.0, false, None)
            .unwrap();
        assert_eq!(
            text(outcome.delta.as_deref().unwrap()),
            r#"{"version":1,"delta":{"power":"on","level":3}}"#
        );
        twin.commit();
        let report = twin
            .apply_report(br#"{"reported":{"power":"on","level":3.0}}"#, 2.0)
            .unwrap();
        assert_eq!(report.delta.as_deref(), Some(&b""[..]));
        twin.commit();
        assert_eq!(twin.delta_message(), None);
        let ack = twin
            .apply_report(br#"{"ack":{"version":1,"status":"accepted"}}"#, 3.0)
            .unwrap();
        assert!(ack.ack_changed && !ack.changed);
        assert_eq!(
            text(ack.ack_uplink.as_deref().unwrap()),
            r#"{"device":"lamp","ack":{"version":1,"status":"accepted","timestamp":3.0},"timestamp":3.0}"#
        );
    }

    #[test]
    fn the_hubs_desired_version_is_adopted_but_never_goes_backwards() {
        let mut twin = DeviceTwin::new("lamp", None).unwrap();
        let first = twin
            .set_desired(br#"{"power":"on"}"#, 1.0, false, Some(40))
            .unwrap();
        assert_eq!(
            text(first.delta.as_deref().unwrap()),
            r#"{"version":40,"delta":{"power":"on"}}"#
        );
        twin.commit();
        // The same document under a newer number: only the version moves.
        let renumbered = twin
            .set_desired(br#"{"power":"on"}"#, 2.0, false, Some(45))
            .unwrap();
        assert!(renumbered.changed);
        assert_eq!(
            text(renumbered.delta.as_deref().unwrap()),
            r#"{"version":45,"delta":{"power":"on"}}"#
        );
        twin.commit();
        assert_eq!(twin.desired_version(), 45);
        // The same document and an older or equal number: nothing.
        let same = twin
            .set_desired(br#"{"power":"on"}"#, 3.0, false, Some(45))
            .unwrap();
        assert!(!same.changed && same.document.is_none());
        // A new document with an older number: the next version, not backwards.
        let older = twin
            .set_desired(br#"{"power":"off"}"#, 4.0, false, Some(7))
            .unwrap();
        assert!(older.changed);
        twin.commit();
        assert_eq!(twin.desired_version(), 46);
    }

    #[test]
    fn bad_reports_are_refused_with_the_messages_of_the_specification() {
        let mut twin = DeviceTwin::new("lamp", None).unwrap();
        assert_eq!(
            coded_of(twin.apply_report(br#"{"desired":{}}"#, 1.0)),
            (
                403,
                "desired is owned by the cloud; a device writes reported".into()
            )
        );
        assert_eq!(
            coded_of(twin.apply_report(b"[1]", 1.0)),
            (400, "payload must be a JSON object, not array".into())
        );
        assert!(matches!(
            twin.apply_report(b"\xff{}", 1.0),
            Err(Refusal::Unreadable(ParseError::Syntax(0)))
        ));
        assert!(matches!(
            twin.apply_report(b"{nope", 1.0),
            Err(Refusal::Unreadable(ParseError::Syntax(_)))
        ));
        assert_eq!(
            coded_of(twin.apply_report(br#"{"reported":{"x":1e400}}"#, 1.0)),
            (400, "value at \"x\" is not a finite number: inf".into())
        );
        let deep = format!(
            "{{\"reported\":{}1{}}}",
            "{\"k\":".repeat(MAX_DEPTH + 1),
            "}".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(
            coded_of(twin.apply_report(deep.as_bytes(), 1.0)),
            (413, "twin document exceeds MAX_DEPTH=32 levels".into())
        );
        let big = format!(
            "{{\"reported\":{{\"x\":\"{}\"}}}}",
            "a".repeat(MAX_DOCUMENT_BYTES)
        );
        assert_eq!(coded_of(twin.apply_report(big.as_bytes(), 1.0)).0, 413);
        assert_eq!(
            coded_of(twin.apply_report(br#"{"ack":{"version":1,"status":"accepted"}}"#, 1.0)),
            (
                400,
                "ack.version 1 is not a desired version (the desired version is 0)".into()
            )
        );
        assert!(matches!(
            twin.apply_report(br#"{"reported":{},"zz":1,"extra":2,"clientToken":"t"}"#, 1.0),
            Err(Refusal::UnknownField { key, ack: false, token: Some(t) }) if key == "extra" && t == "t"
        ));
        assert_eq!(
            twin.document(),
            DeviceTwin::new("lamp", None).unwrap().document()
        );
    }

    #[test]
    fn stored_documents_that_are_not_ours_are_refused() {
        assert_eq!(
            DeviceTwin::new("x", Some(b"[]")).err(),
            Some(BadDocument("not a twin document of format 1".into()))
        );
        assert_eq!(
            DeviceTwin::new("x", Some(b"{")).err(),
            Some(BadDocument("stored twin is not JSON".into()))
        );
    }
}
