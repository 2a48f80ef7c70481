//! MQTT topic router: topic filters mapped to integer targets, matched through a trie.
//!
//! The semantics are MQTT 3.1.1 / 5.0 exactly, and identical to the pure-Python twin
//! `edgenode._pure.router` (the executable specification, including every error message):
//!
//! - `+` matches exactly one level, including an empty one; `#` matches the rest of the
//!   topic including the parent level (`a/#` matches `a`); empty levels are levels.
//! - A topic whose first level starts with `$` is not matched by a filter whose first
//!   level is a wildcard, but is matched by filters such as `$SYS/#`.
//!
//! Design for speed (matching is bound by memory reads, so the hot structures are small
//! and flat): nodes live in one arena (`Vec<Node>`, 20 bytes each, `u32` indices, freed
//! slots reused) with their target lists apart, read only when a node has targets. Level
//! strings are interned in an open-addressing table that keeps each level's full hash and
//! first 16 bytes in its slot, so matching hashes each topic level once and compares it
//! without a pointer chase; exact children are then found by integers: a node's only
//! child is kept in the node, others in one open-addressing table of 12-byte
//! (parent, level, child) slots. Matching splits the topic on the byte `/` and walks its
//! levels iteratively (no recursion, so a topic of 10,000 levels is harmless) with
//! reusable scratch buffers: no allocation per match once the buffers have grown. A small
//! bounded cache answers topics seen again since the last change.
//!
//! This module has no PyO3 dependency; `py_router` is its thin Python binding.

use std::fmt;

/// The MQTT limit on the UTF-8 length of a topic name or topic filter.
pub const MAX_TOPIC_BYTES: usize = 65535;
/// Error messages quote at most this many characters of the offending input.
pub const QUOTE_MAX_CHARS: usize = 64;
/// Targets are integers in `0..TARGET_LIMIT` (they must fit a signed 64-bit integer).
pub const TARGET_LIMIT: u64 = 1 << 63;

/// Which kind of string is being validated; it names the input in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// A topic filter (subscriptions: may contain `+` and `#`).
    Filter,
    /// A topic name (publications: no wildcards).
    Name,
}

impl TopicKind {
    fn label(self) -> &'static str {
        match self {
            TopicKind::Filter => "topic filter",
            TopicKind::Name => "topic name",
        }
    }
}

/// An invalid topic or topic filter; the message names the problem and quotes the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicError {
    message: String,
}

impl TopicError {
    /// The message, byte-identical to the pure-Python twin's.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn new(kind: TopicKind, quoted: &str, problem: &str) -> Self {
        TopicError {
            message: format!("invalid {} {}: {}", kind.label(), quoted, problem),
        }
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TopicError {}

/// Quote a string given as code points (which may include lone surrogates, as a Python
/// `str` can): at most [`QUOTE_MAX_CHARS`] characters between double quotes, `"` and `\`
/// backslash-escaped, control characters as `\xNN`, surrogates as `\uNNNN`, and `...`
/// after the closing quote when the input was longer.
pub fn quote_code_points(code_points: &[u32]) -> String {
    let mut out = String::with_capacity(QUOTE_MAX_CHARS + 8);
    out.push('"');
    for &cp in code_points.iter().take(QUOTE_MAX_CHARS) {
        match char::from_u32(cp) {
            Some(ch @ ('"' | '\\')) => {
                out.push('\\');
                out.push(ch);
            }
            Some(ch) if cp >= 0x20 && !(0x7f..0xa0).contains(&cp) => out.push(ch),
            Some(_) => out.push_str(&format!("\\x{cp:02x}")),
            // Only lone surrogates are not chars; a Python str can hold them.
            None => out.push_str(&format!("\\u{cp:04x}")),
        }
    }
    out.push('"');
    if code_points.len() > QUOTE_MAX_CHARS {
        out.push_str("...");
    }
    out
}

fn quote(text: &str) -> String {
    let code_points: Vec<u32> = text
        .chars()
        .take(QUOTE_MAX_CHARS + 1)
        .map(u32::from)
        .collect();
    quote_code_points(&code_points)
}

/// The character (code point) index of byte offset `byte` in `text`, as Python counts.
fn char_index(text: &str, byte: usize) -> usize {
    text[..byte].chars().count()
}

/// The error for a Python string that holds a lone surrogate and so has no UTF-8 form.
/// `code_points` is the whole string; the binding layer obtains it from Python.
pub fn unencodable_error(kind: TopicKind, code_points: &[u32]) -> TopicError {
    let (index, cp) = code_points
        .iter()
        .enumerate()
        .find(|(_, &cp)| (0xd800..0xe000).contains(&cp))
        .map_or((0, 0), |(i, &cp)| (i, cp));
    TopicError::new(
        kind,
        &quote_code_points(code_points),
        &format!("not encodable as UTF-8 (lone surrogate U+{cp:04X} at character {index})"),
    )
}

/// Checks shared by filters and names: empty, too long, NUL.
fn check_common(kind: TopicKind, text: &str) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::new(kind, "\"\"", "must not be empty"));
    }
    if text.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::new(
            kind,
            &quote(text),
            &format!(
                "{} UTF-8 bytes, more than the MQTT limit of {MAX_TOPIC_BYTES}",
                text.len()
            ),
        ));
    }
    if let Some(pos) = text.bytes().position(|b| b == 0) {
        return Err(TopicError::new(
            kind,
            &quote(text),
            &format!(
                "contains NUL (U+0000) at character {}",
                char_index(text, pos)
            ),
        ));
    }
    Ok(())
}

/// Raise nothing if `filter` is a valid MQTT topic filter, else say what is wrong.
pub fn validate_filter(filter: &str) -> Result<(), TopicError> {
    check_common(TopicKind::Filter, filter)?;
    let last = filter.split('/').count() - 1;
    for (index, level) in filter.split('/').enumerate() {
        let problem = if level.contains('#') {
            if level != "#" {
                Some("'#' must occupy a whole level")
            } else if index != last {
                Some("'#' must be the last level")
            } else {
                None
            }
        } else if level.contains('+') && level != "+" {
            Some("'+' must occupy a whole level")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(TopicError::new(TopicKind::Filter, &quote(filter), problem));
        }
    }
    Ok(())
}

/// Raise nothing if `topic` is a valid MQTT topic name, else say what is wrong.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    check_common(TopicKind::Name, topic)?;
    if let Some(pos) = topic.bytes().position(|b| b == b'+' || b == b'#') {
        let wildcard = topic.as_bytes()[pos] as char;
        return Err(TopicError::new(
            TopicKind::Name,
            &quote(topic),
            &format!(
                "wildcard '{wildcard}' at character {} is not allowed in a topic name",
                char_index(topic, pos)
            ),
        ));
    }
    Ok(())
}

/// The hot-path check: true when `topic` is certainly valid (one branch-free pass).
#[inline]
fn topic_is_clean(topic: &str) -> bool {
    let bytes = topic.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_TOPIC_BYTES {
        return false;
    }
    // No early exit and a byte accumulator, so the compiler vectorises the scan.
    bytes.iter().fold(0u8, |bad, &b| {
        bad | u8::from(b == 0) | u8::from(b == b'+') | u8::from(b == b'#')
    }) == 0
}

/// The multiplier of FxHash (rustc's hasher): a multiply-rotate hash, much cheaper than
/// SipHash for the short level strings looked up on every match. Not DoS-resistant, which
/// is acceptable: filters come from the node's own configuration, and a topic only looks
/// keys up.
const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// Bytes of a level kept in its slot of the level table, compared as two words.
const HEAD_BYTES: usize = 16;

/// The 1 to 7 bytes of `rest` as a little-endian word, zero-padded: two overlapping
/// 4-byte reads (or three single bytes), no loop and no call to `memcpy`.
#[inline]
fn tail_word(rest: &[u8]) -> u64 {
    let n = rest.len();
    debug_assert!(n < 8);
    if n >= 4 {
        let low = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let high = u32::from_le_bytes([rest[n - 4], rest[n - 3], rest[n - 2], rest[n - 1]]);
        u64::from(low) | u64::from(high) << (8 * (n - 4))
    } else if n > 0 {
        u64::from(rest[0])
            | u64::from(rest[n / 2]) << (8 * (n / 2))
            | u64::from(rest[n - 1]) << (8 * (n - 1))
    } else {
        0
    }
}

/// A level string as the level table looks it up: its hash and its first
/// [`HEAD_BYTES`] bytes as two little-endian words (zero-padded), both from one pass.
struct Probe {
    hash: u64,
    head: [u64; 2],
}

impl Probe {
    #[inline]
    fn new(bytes: &[u8]) -> Self {
        let add = |hash: u64, word: u64| (hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
        let mut hash = (bytes.len() as u64).wrapping_mul(FX_SEED);
        let mut head = [0u64; 2];
        let mut chunks = bytes.chunks_exact(8);
        for (at, chunk) in (&mut chunks).enumerate() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let word = u64::from_le_bytes(word);
            if at < 2 {
                head[at] = word;
            }
            hash = add(hash, word);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let word = tail_word(rest);
            if bytes.len() < HEAD_BYTES {
                head[bytes.len() / 8] = word;
            }
            hash = add(hash, word);
        }
        Probe { hash, head }
    }
}

/// Index of a node in the arena; `NO_NODE` marks an absent `+` child.
type NodeId = u32;
const NO_NODE: NodeId = NodeId::MAX;
const ROOT: NodeId = 0;
/// Interned id of a level string.
type LevelId = u32;

/// One trie node: the filters whose levels so far lead here. Only what the walk reads
/// for every node it passes (20 bytes, so that the arena of a large trie stays in the
/// CPU's cache); the target lists are in [`TopicRouter::ends`], read only when `has` says
/// a list is not empty.
struct Node {
    /// The `+` child, or `NO_NODE`.
    plus: NodeId,
    /// How many exact-level children this node has.
    exact_children: u32,
    /// The only exact child, kept in the node itself (most nodes of a trie are links of
    /// a chain, which then need no hash lookup); `(_, NO_NODE)` when the exact children
    /// are in [`TopicRouter::edges`] (or there are none).
    only_child: (LevelId, NodeId),
    /// `HAS_TARGETS` and `HAS_HASH_TARGETS`: which of the node's target lists are not empty.
    has: u32,
}

const HAS_TARGETS: u32 = 1;
const HAS_HASH_TARGETS: u32 = 2;

impl Node {
    fn new() -> Self {
        Node {
            plus: NO_NODE,
            exact_children: 0,
            only_child: (0, NO_NODE),
            has: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.exact_children == 0 && self.plus == NO_NODE && self.has == 0
    }
}

/// The targets of the filters that end at a node.
#[derive(Default)]
struct Ends {
    /// Targets of filters that end at this node (sorted, unique).
    targets: Vec<u64>,
    /// Targets of filters that continue with a final `#` (sorted, unique).
    hash_targets: Vec<u64>,
}

impl Ends {
    fn has(&self) -> u32 {
        let mut has = 0;
        if !self.targets.is_empty() {
            has |= HAS_TARGETS;
        }
        if !self.hash_targets.is_empty() {
            has |= HAS_HASH_TARGETS;
        }
        has
    }
}

/// The exact child of `node` (whose id is `id`) for the interned `level`, or `NO_NODE`.
#[inline]
fn exact_child(node: &Node, id: NodeId, level: LevelId, edges: &Edges) -> NodeId {
    if node.only_child.1 != NO_NODE {
        if node.only_child.0 == level {
            node.only_child.1
        } else {
            NO_NODE
        }
    } else if node.exact_children != 0 {
        edges.get(id, level)
    } else {
        NO_NODE
    }
}

/// One slot of [`Edges`]: the exact-level edge from `parent` labelled `level` leads to
/// `child`; `child == NO_NODE` marks a free slot.
#[derive(Clone, Copy)]
struct Edge {
    parent: NodeId,
    level: LevelId,
    child: NodeId,
}

const FREE_EDGE: Edge = Edge {
    parent: 0,
    level: 0,
    child: NO_NODE,
};

/// The exact-level children of every node that has more than one: (parent, level) ->
/// child in one open-addressing table (linear probing, at most half full, deletion by
/// shifting back). A lookup reads one 12-byte slot, usually in one cache line, where a
/// general hash map reads a control group and then a bucket: this table is the walk's
/// main memory traffic.
struct Edges {
    slots: Vec<Edge>,
    len: usize,
    /// `64 - log2(slots.len())`: the slot of a key is the top bits of its hash.
    shift: u32,
}

impl Edges {
    const MIN_SLOTS: usize = 16;

    fn new() -> Self {
        Edges {
            slots: vec![FREE_EDGE; Self::MIN_SLOTS],
            len: 0,
            shift: 64 - Self::MIN_SLOTS.trailing_zeros(),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn home(&self, parent: NodeId, level: LevelId) -> usize {
        let key = (u64::from(parent) << 32) | u64::from(level);
        (key.wrapping_mul(FX_SEED) >> self.shift) as usize
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// The child of `parent` for `level`, or `NO_NODE`.
    #[inline]
    fn get(&self, parent: NodeId, level: LevelId) -> NodeId {
        let mask = self.mask();
        let mut index = self.home(parent, level);
        loop {
            let edge = self.slots[index];
            if edge.child == NO_NODE || (edge.parent == parent && edge.level == level) {
                return edge.child;
            }
            index = (index + 1) & mask;
        }
    }

    /// Add an edge that is not in the table.
    fn insert(&mut self, parent: NodeId, level: LevelId, child: NodeId) {
        if (self.len + 1) * 2 > self.slots.len() {
            let grown = vec![FREE_EDGE; self.slots.len() * 2];
            let old = std::mem::replace(&mut self.slots, grown);
            self.shift -= 1;
            self.len = 0;
            for edge in old.into_iter().filter(|edge| edge.child != NO_NODE) {
                self.insert(edge.parent, edge.level, edge.child);
            }
        }
        let mask = self.mask();
        let mut index = self.home(parent, level);
        while self.slots[index].child != NO_NODE {
            index = (index + 1) & mask;
        }
        self.slots[index] = Edge {
            parent,
            level,
            child,
        };
        self.len += 1;
    }

    /// Remove the edge, which is in the table; the slots after it that probed past it
    /// move back, so that no lookup stops early at the hole.
    fn remove(&mut self, parent: NodeId, level: LevelId) {
        let mask = self.mask();
        let mut hole = self.home(parent, level);
        while {
            let edge = self.slots[hole];
            edge.parent != parent || edge.level != level
        } {
            debug_assert!(self.slots[hole].child != NO_NODE, "removed edge is present");
            hole = (hole + 1) & mask;
        }
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let edge = self.slots[next];
            if edge.child == NO_NODE {
                break;
            }
            let home = self.home(edge.parent, edge.level);
            // The slot may move to the hole unless its home lies cyclically in (hole, next].
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.slots[hole] = edge;
                hole = next;
            }
        }
        self.slots[hole] = FREE_EDGE;
        self.len -= 1;
    }
}

/// One slot of the level table: `id` is the level's id plus one (0: a free slot); the
/// level's length and first bytes are kept here, so that a short level is compared
/// without reading its name elsewhere.
#[derive(Clone, Copy, Default)]
struct LevelSlot {
    hash: u64,
    id: u32,
    len: u32,
    head: [u64; 2],
}

/// The distinct level strings of all filters, each with an id and a use count, so that a
/// topic level is hashed once per match (not once per trie node it is looked up in),
/// and an unknown level ends every exact branch at once. An open-addressing table
/// (linear probing, at most half full, deletion by shifting back) of the full hashes and
/// ids; the bytes of a level are compared only when its whole hash matches.
struct Levels {
    slots: Vec<LevelSlot>,
    /// `64 - log2(slots.len())`.
    shift: u32,
    /// The bytes of each id (empty for a free id).
    names: Vec<Box<[u8]>>,
    /// Number of trie edges labelled with each id; 0 for a free id.
    uses: Vec<u32>,
    free: Vec<LevelId>,
    len: usize,
}

impl Default for Levels {
    fn default() -> Self {
        const MIN_SLOTS: usize = 16;
        Levels {
            slots: vec![LevelSlot::default(); MIN_SLOTS],
            shift: 64 - MIN_SLOTS.trailing_zeros(),
            names: Vec::new(),
            uses: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl Levels {
    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        (hash >> self.shift) as usize
    }

    /// The slot holding `level` (seen as `probe`), or the free slot that ends its probe.
    #[inline]
    fn find(&self, level: &[u8], probe: &Probe) -> usize {
        let mask = self.mask();
        let mut index = self.home(probe.hash);
        loop {
            let slot = &self.slots[index];
            if slot.id == 0
                || (slot.hash == probe.hash
                    && slot.len as usize == level.len()
                    && slot.head == probe.head
                    && (level.len() <= HEAD_BYTES || *self.names[slot.id as usize - 1] == *level))
            {
                return index;
            }
            index = (index + 1) & mask;
        }
    }

    #[inline]
    fn get(&self, level: &[u8]) -> Option<LevelId> {
        let id = self.slots[self.find(level, &Probe::new(level))].id;
        id.checked_sub(1)
    }

    fn acquire(&mut self, level: &str) -> LevelId {
        if let Some(id) = self.get(level.as_bytes()) {
            self.uses[id as usize] += 1;
            return id;
        }
        if (self.len + 1) * 2 > self.slots.len() {
            let grown = vec![LevelSlot::default(); self.slots.len() * 2];
            let old = std::mem::replace(&mut self.slots, grown);
            self.shift -= 1;
            let mask = self.mask();
            for slot in old.into_iter().filter(|slot| slot.id != 0) {
                let mut index = self.home(slot.hash);
                while self.slots[index].id != 0 {
                    index = (index + 1) & mask;
                }
                self.slots[index] = slot;
            }
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.uses.push(0);
                self.names.push(Box::default());
                LevelId::try_from(self.uses.len() - 1).expect("level count fits u32")
            }
        };
        assert!(id < LevelId::MAX, "level count fits u32");
        self.uses[id as usize] = 1;
        self.names[id as usize] = Box::from(level.as_bytes());
        let probe = Probe::new(level.as_bytes());
        let index = self.find(level.as_bytes(), &probe);
        self.slots[index] = LevelSlot {
            hash: probe.hash,
            id: id + 1,
            // Levels are parts of a filter, at most MAX_TOPIC_BYTES long.
            len: u32::try_from(level.len()).expect("a level fits u32"),
            head: probe.head,
        };
        self.len += 1;
        id
    }

    fn release(&mut self, level: &str, id: LevelId) {
        self.uses[id as usize] -= 1;
        if self.uses[id as usize] != 0 {
            return;
        }
        let mask = self.mask();
        let mut hole = self.find(level.as_bytes(), &Probe::new(level.as_bytes()));
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let slot = self.slots[next];
            if slot.id == 0 {
                break;
            }
            let home = self.home(slot.hash);
            // The slot may move to the hole unless its home lies cyclically in (hole, next].
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.slots[hole] = slot;
                hole = next;
            }
        }
        self.slots[hole] = LevelSlot::default();
        self.names[id as usize] = Box::default();
        self.len -= 1;
        self.free.push(id);
    }
}

/// Buffers reused by every match, so that matching allocates nothing once they grew.
#[derive(Default)]
struct Scratch {
    found: Vec<u64>,
    frontier: Vec<NodeId>,
    next: Vec<NodeId>,
}

/// Number of slots of the cache of recent results (a power of two).
pub const CACHE_SLOTS: usize = 1024;
/// Only topics up to this size are cached, which bounds the cache's memory.
pub const CACHE_MAX_TOPIC_BYTES: usize = 256;
/// Only results of up to this many targets are cached, for the same reason.
pub const CACHE_MAX_TARGETS: usize = 32;

/// What a miss of the result cache reads of a slot (kept apart from the slot's topic and
/// result, so that the tags of all slots take 24 KiB): valid while its generation is the
/// router's.
#[derive(Default, Clone, Copy)]
struct CacheTag {
    generation: u64,
    /// Hash of the slot's topic, compared before the topic itself.
    hash: u64,
    /// Hash of the last topic that missed here: a topic is stored on its second miss,
    /// so that a stream of distinct topics costs no copying.
    seen: u64,
}

/// One slot of the result cache: a topic and its targets.
#[derive(Default)]
struct CacheSlot {
    topic: String,
    found: Vec<u64>,
}

/// A direct-mapped cache of recent topic -> result, for the topics devices publish again
/// and again (admitted when seen twice in a row for their slot). Every change to the filters starts a new generation, which invalidates all
/// slots at once; a slot is overwritten by the next topic that hashes to it. Bounded:
/// about `CACHE_SLOTS * (CACHE_MAX_TOPIC_BYTES + 8 * CACHE_MAX_TARGETS)` bytes of data.
struct Cache {
    tags: Vec<CacheTag>,
    slots: Vec<CacheSlot>,
    /// Starts at 1, so that the default slot (generation 0) is empty.
    generation: u64,
}

impl Cache {
    fn new() -> Self {
        let mut slots = Vec::with_capacity(CACHE_SLOTS);
        slots.resize_with(CACHE_SLOTS, CacheSlot::default);
        Cache {
            tags: vec![CacheTag::default(); CACHE_SLOTS],
            slots,
            generation: 1,
        }
    }

    fn hash(topic: &str) -> u64 {
        Probe::new(topic.as_bytes()).hash
    }

    fn slot_of(hash: u64) -> usize {
        (hash >> (64 - CACHE_SLOTS.trailing_zeros())) as usize
    }

    fn invalidate(&mut self) {
        self.generation += 1;
    }
}

/// MQTT topic filters mapped to integer targets.
pub struct TopicRouter {
    /// The arena; `ROOT` is the root, freed slots are listed in `free`.
    nodes: Vec<Node>,
    /// The target lists of every node, indexed as `nodes`.
    ends: Vec<Ends>,
    free: Vec<NodeId>,
    /// Exact-level children of the nodes that have more than one.
    edges: Edges,
    levels: Levels,
    pairs: usize,
    scratch: Scratch,
    cache: Cache,
}

impl Default for TopicRouter {
    fn default() -> Self {
        Self::new()
    }
}

/// Split a (valid) filter into the levels that form its trie path and whether it ends
/// with `#` (which is not a node: its targets sit on the parent node).
fn filter_path(filter: &str) -> (Option<&str>, bool) {
    if filter == "#" {
        (None, true)
    } else if let Some(path) = filter.strip_suffix("/#") {
        (Some(path), true)
    } else {
        (Some(filter), false)
    }
}

fn check_target(target: u64) {
    assert!(target < TARGET_LIMIT, "target {target} is not below 2**63");
}

impl TopicRouter {
    /// An empty router.
    pub fn new() -> Self {
        TopicRouter {
            nodes: vec![Node::new()],
            ends: vec![Ends::default()],
            free: Vec::new(),
            edges: Edges::new(),
            levels: Levels::default(),
            pairs: 0,
            scratch: Scratch::default(),
            cache: Cache::new(),
        }
    }

    /// Number of (filter, target) pairs.
    pub fn len(&self) -> usize {
        self.pairs
    }

    /// True when no pair is stored.
    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    fn alloc(&mut self) -> NodeId {
        if let Some(id) = self.free.pop() {
            return id;
        }
        let id = NodeId::try_from(self.nodes.len()).expect("trie node count fits u32");
        assert!(id != NO_NODE, "trie node count fits u32");
        self.nodes.push(Node::new());
        self.ends.push(Ends::default());
        id
    }

    fn child(&self, node: NodeId, level: &str) -> NodeId {
        if level == "+" {
            return self.nodes[node as usize].plus;
        }
        match self.levels.get(level.as_bytes()) {
            Some(level) => exact_child(&self.nodes[node as usize], node, level, &self.edges),
            None => NO_NODE,
        }
    }

    /// Record `child` as the exact child of `parent` for `level`.
    fn link(&mut self, parent: NodeId, level: LevelId, child: NodeId) {
        let node = &mut self.nodes[parent as usize];
        if node.exact_children == 0 {
            node.only_child = (level, child);
        } else {
            if node.only_child.1 != NO_NODE {
                // A second child: both move to the map.
                let (only_level, only) = node.only_child;
                node.only_child = (0, NO_NODE);
                self.edges.insert(parent, only_level, only);
            }
            self.edges.insert(parent, level, child);
        }
        node.exact_children += 1;
    }

    /// Forget the exact child of `parent` for `level`.
    fn unlink(&mut self, parent: NodeId, level: LevelId) {
        let node = &mut self.nodes[parent as usize];
        if node.only_child.1 != NO_NODE {
            node.only_child = (0, NO_NODE);
        } else {
            self.edges.remove(parent, level);
        }
        node.exact_children -= 1;
    }

    /// Add the pair; `Ok(false)` if it was already there.
    ///
    /// # Panics
    /// If `target` is not below 2**63 (the binding checks this first).
    pub fn add(&mut self, filter: &str, target: u64) -> Result<bool, TopicError> {
        validate_filter(filter)?;
        check_target(target);
        let (path, ends_with_hash) = filter_path(filter);
        let mut node = ROOT;
        for level in path.into_iter().flat_map(|path| path.split('/')) {
            let existing = self.child(node, level);
            node = if existing != NO_NODE {
                existing
            } else {
                let child = self.alloc();
                if level == "+" {
                    self.nodes[node as usize].plus = child;
                } else {
                    let id = self.levels.acquire(level);
                    self.link(node, id, child);
                }
                child
            };
        }
        let ends = &mut self.ends[node as usize];
        let targets = if ends_with_hash {
            &mut ends.hash_targets
        } else {
            &mut ends.targets
        };
        match targets.binary_search(&target) {
            Ok(_) => Ok(false),
            Err(at) => {
                targets.insert(at, target);
                self.nodes[node as usize].has = ends.has();
                self.pairs += 1;
                self.cache.invalidate();
                Ok(true)
            }
        }
    }

    /// Remove the pair; `Ok(false)` if it was not there. Nodes left empty are freed.
    pub fn remove(&mut self, filter: &str, target: u64) -> Result<bool, TopicError> {
        validate_filter(filter)?;
        let (path, ends_with_hash) = filter_path(filter);
        // The path walked, as (parent, level taken), to prune empty nodes afterwards.
        let mut walked: Vec<(NodeId, &str)> = Vec::new();
        let mut node = ROOT;
        for level in path.into_iter().flat_map(|path| path.split('/')) {
            let child = self.child(node, level);
            if child == NO_NODE {
                return Ok(false);
            }
            walked.push((node, level));
            node = child;
        }
        let ends = &mut self.ends[node as usize];
        let targets = if ends_with_hash {
            &mut ends.hash_targets
        } else {
            &mut ends.targets
        };
        match targets.binary_search(&target) {
            Err(_) => return Ok(false),
            Ok(at) => {
                targets.remove(at);
                self.nodes[node as usize].has = ends.has();
                self.pairs -= 1;
                self.cache.invalidate();
            }
        }
        while let Some((parent, level)) = walked.pop() {
            if !self.nodes[node as usize].is_empty() {
                break;
            }
            // Release the memory of the emptied node, and recycle its slot.
            self.nodes[node as usize] = Node::new();
            self.ends[node as usize] = Ends::default();
            self.free.push(node);
            if level == "+" {
                self.nodes[parent as usize].plus = NO_NODE;
            } else {
                let id = self
                    .levels
                    .get(level.as_bytes())
                    .expect("an edge's level is interned");
                self.unlink(parent, id);
                self.levels.release(level, id);
            }
            node = parent;
        }
        Ok(true)
    }

    /// Targets whose filter matches `topic`, each once, ascending (a view of an internal
    /// buffer, valid until the next call).
    pub fn match_topic(&mut self, topic: &str) -> Result<&[u64], TopicError> {
        if !topic_is_clean(topic) {
            validate_topic(topic)?;
        }
        if topic.len() > CACHE_MAX_TOPIC_BYTES {
            self.collect(topic);
            return Ok(&self.scratch.found);
        }
        let hash = Cache::hash(topic);
        let index = Cache::slot_of(hash);
        let generation = self.cache.generation;
        let tag = &self.cache.tags[index];
        if tag.generation != generation
            || tag.hash != hash
            || self.cache.slots[index].topic != topic
        {
            self.collect(topic);
            let found = &self.scratch.found;
            let tag = &mut self.cache.tags[index];
            if found.len() > CACHE_MAX_TARGETS || tag.seen != hash {
                tag.seen = hash;
                return Ok(found);
            }
            tag.generation = generation;
            tag.hash = hash;
            let slot = &mut self.cache.slots[index];
            slot.topic.clear();
            slot.topic.push_str(topic);
            slot.found.clear();
            slot.found.extend_from_slice(found);
        }
        Ok(&self.cache.slots[index].found)
    }

    /// Like [`TopicRouter::match_topic`], returning an owned vector.
    pub fn matches(&mut self, topic: &str) -> Result<Vec<u64>, TopicError> {
        self.match_topic(topic).map(<[u64]>::to_vec)
    }

    /// Walk the trie level by level, keeping the set of nodes the topic so far reaches.
    /// Every node has one path from the root, so the frontier never holds duplicates.
    fn collect(&mut self, topic: &str) {
        let Self {
            nodes,
            ends,
            edges,
            levels,
            scratch,
            ..
        } = self;
        let Scratch {
            found,
            frontier,
            next,
        } = scratch;
        found.clear();
        frontier.clear();
        // Split on the byte '/': it never occurs inside a multi-byte UTF-8 sequence.
        let mut topic_levels = topic.as_bytes().split(|&byte| byte == b'/');
        let first = topic_levels.next().unwrap_or(b"");
        let root = &nodes[ROOT as usize];
        if first.first() == Some(&b'$') {
            // MQTT 4.7.2: wildcards in the first level never match a `$` topic.
            if let Some(level) = levels.get(first) {
                let child = exact_child(root, ROOT, level, edges);
                if child != NO_NODE {
                    frontier.push(child);
                }
            }
        } else {
            if root.has & HAS_HASH_TARGETS != 0 {
                found.extend_from_slice(&ends[ROOT as usize].hash_targets);
            }
            descend(root, ROOT, levels.get(first), edges, frontier);
        }
        for level in topic_levels {
            if frontier.is_empty() {
                break;
            }
            let level = levels.get(level);
            next.clear();
            for &id in frontier.iter() {
                let node = &nodes[id as usize];
                if node.has & HAS_HASH_TARGETS != 0 {
                    push_all(found, &ends[id as usize].hash_targets);
                }
                descend(node, id, level, edges, next);
            }
            std::mem::swap(frontier, next);
        }
        for &id in frontier.iter() {
            if nodes[id as usize].has != 0 {
                let node_ends = &ends[id as usize];
                push_all(found, &node_ends.targets);
                // `a/#` matches `a`: '#' also covers the parent level.
                push_all(found, &node_ends.hash_targets);
            }
        }
        if found.len() > 1 {
            found.sort_unstable();
            found.dedup();
        }
    }
}

/// `into.extend_from_slice(targets)` for the short lists of a trie node, without the
/// call to `memcpy` that a copy of unknown length makes.
#[inline]
fn push_all(into: &mut Vec<u64>, targets: &[u64]) {
    into.reserve(targets.len());
    for &target in targets {
        into.push(target);
    }
}

/// Push the children of `node` that a topic level (interned as `level`, `None` when no
/// filter has that level, so no exact child can match) leads to.
#[inline]
fn descend(node: &Node, id: NodeId, level: Option<LevelId>, edges: &Edges, into: &mut Vec<NodeId>) {
    if let Some(level) = level {
        let child = exact_child(node, id, level, edges);
        if child != NO_NODE {
            into.push(child);
        }
    }
    if node.plus != NO_NODE {
        into.push(node.plus);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: compare level by level, no trie.
    fn reference_matches(filter: &str, topic: &str) -> bool {
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        if topic.starts_with('$') && (f[0] == "+" || f[0] == "#") {
            return false;
        }
        for (i, level) in f.iter().enumerate() {
            if *level == "#" {
                return true;
            }
            match t.get(i) {
                None => return false,
                Some(tl) if *level == "+" || level == tl => {}
                Some(_) => return false,
            }
        }
        f.len() == t.len()
    }

    fn matches_one(filter: &str, topic: &str) -> bool {
        let mut router = TopicRouter::new();
        router.add(filter, 7).unwrap();
        router.matches(topic).unwrap() == vec![7]
    }

    const CASES: &[(&str, &str, bool)] = &[
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("sport/#", "sport", true),
        ("#", "sport", true),
        ("#", "/", true),
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player1/tracking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("+", "", false),
        ("a//b", "a//b", true),
        ("a/+/b", "a//b", true),
        ("a/", "a", false),
        ("a/+", "a/", true),
        ("#", "$SYS/x", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("$SYS/#", "$SYS", true),
        (
            "$edge/devices/+/twin/update",
            "$edge/devices/d1/twin/update",
            true,
        ),
        ("a/$x", "a/$x", true),
        ("+/$x", "a/$x", true),
        ("a/b", "a/b/c", false),
        ("a/b/c", "a/b", false),
    ];

    #[test]
    fn spec_table_matches_both_trie_and_reference() {
        for &(filter, topic, expected) in CASES {
            if topic.is_empty() {
                continue;
            }
            assert_eq!(matches_one(filter, topic), expected, "{filter} vs {topic}");
            assert_eq!(
                reference_matches(filter, topic),
                expected,
                "ref {filter} vs {topic}"
            );
        }
    }

    #[test]
    fn duplicates_and_removal_leave_no_stale_state() {
        let mut router = TopicRouter::new();
        assert!(router.add("a/+/c", 1).unwrap());
        assert!(!router.add("a/+/c", 1).unwrap());
        assert!(router.add("a/#", 1).unwrap());
        assert!(router.add("a/b/c", 2).unwrap());
        assert_eq!(router.len(), 3);
        assert_eq!(router.matches("a/b/c").unwrap(), vec![1, 2]);
        assert!(router.remove("a/+/c", 1).unwrap());
        assert!(!router.remove("a/+/c", 1).unwrap());
        assert_eq!(router.matches("a/b/c").unwrap(), vec![1, 2]);
        assert!(router.remove("a/#", 1).unwrap());
        assert!(router.remove("a/b/c", 2).unwrap());
        assert!(router.is_empty());
        assert_eq!(router.matches("a/b/c").unwrap(), Vec::<u64>::new());
        // Every node but the root was pruned and is free for reuse.
        assert_eq!(router.free.len(), router.nodes.len() - 1);
        assert!(router.nodes[ROOT as usize].is_empty());
        assert!(router.edges.is_empty());
        assert_eq!(router.levels.len, 0);
        assert!(router.levels.slots.iter().all(|slot| slot.id == 0));
        assert_eq!(router.levels.free.len(), router.levels.uses.len());
    }

    #[test]
    fn invalid_filters_and_topics_are_named_and_quoted() {
        let cases: &[(&str, &str)] = &[
            ("", "invalid topic filter \"\": must not be empty"),
            (
                "a/#/b",
                "invalid topic filter \"a/#/b\": '#' must be the last level",
            ),
            (
                "#x",
                "invalid topic filter \"#x\": '#' must occupy a whole level",
            ),
            (
                "a#",
                "invalid topic filter \"a#\": '#' must occupy a whole level",
            ),
            (
                "a+",
                "invalid topic filter \"a+\": '+' must occupy a whole level",
            ),
            (
                "+b/c",
                "invalid topic filter \"+b/c\": '+' must occupy a whole level",
            ),
            (
                "a\0b",
                "invalid topic filter \"a\\x00b\": contains NUL (U+0000) at character 1",
            ),
        ];
        for &(filter, message) in cases {
            assert_eq!(validate_filter(filter).unwrap_err().message(), message);
        }
        assert_eq!(
            validate_topic("é/+").unwrap_err().message(),
            "invalid topic name \"é/+\": wildcard '+' at character 2 is not allowed in a topic name"
        );
        let long = "a".repeat(MAX_TOPIC_BYTES + 1);
        let message = validate_topic(&long).unwrap_err().message().to_owned();
        assert_eq!(
            message,
            format!(
                "invalid topic name \"{}\"...: 65536 UTF-8 bytes, more than the MQTT limit of 65535",
                "a".repeat(QUOTE_MAX_CHARS)
            )
        );
        assert!(validate_topic(&long[1..]).is_ok());
        assert_eq!(
            unencodable_error(TopicKind::Name, &[0x61, 0xdc80]).message(),
            "invalid topic name \"a\\udc80\": not encodable as UTF-8 (lone surrogate U+DC80 at character 1)"
        );
        assert_eq!(
            quote("\"\\\u{7f}\u{9f}\u{a0}é"),
            "\"\\\"\\\\\\x7f\\x9f\u{a0}é\""
        );
    }

    #[test]
    fn very_deep_topics_and_filters_do_not_overflow_the_stack() {
        let mut router = TopicRouter::new();
        let deep = vec!["a"; 10_000].join("/");
        router.add(&deep, 1).unwrap();
        router.add("+/#", 2).unwrap();
        let deep_plus = vec!["+"; 10_000].join("/");
        router.add(&deep_plus, 3).unwrap();
        assert_eq!(router.matches(&deep).unwrap(), vec![1, 2, 3]);
        assert!(router.remove(&deep, 1).unwrap());
        assert!(router.remove(&deep_plus, 3).unwrap());
        assert_eq!(router.matches(&deep).unwrap(), vec![2]);
    }

    #[test]
    fn a_level_shared_by_several_filters_stays_interned_until_its_last_use() {
        let mut router = TopicRouter::new();
        router.add("a/x", 1).unwrap();
        router.add("b/x", 2).unwrap();
        router.add("x", 3).unwrap();
        assert!(router.remove("a/x", 1).unwrap());
        assert_eq!(router.matches("b/x").unwrap(), vec![2]);
        assert_eq!(router.matches("x").unwrap(), vec![3]);
        assert_eq!(router.matches("a/x").unwrap(), Vec::<u64>::new());
        assert!(router.remove("x", 3).unwrap());
        assert_eq!(router.matches("b/x").unwrap(), vec![2]);
        assert!(router.levels.get(b"x").is_some());
        assert!(router.remove("b/x", 2).unwrap());
        assert!(router.levels.get(b"x").is_none());
    }

    #[test]
    fn short_and_long_levels_both_match() {
        let mut router = TopicRouter::new();
        let inline = "i".repeat(22);
        let heap = "h".repeat(22 + 1);
        let accented = "é".repeat(22 / 2 + 1);
        for (target, level) in [&inline, &heap, &accented].into_iter().enumerate() {
            router.add(&format!("{level}/+"), target as u64).unwrap();
        }
        assert_eq!(router.matches(&format!("{inline}/z")).unwrap(), vec![0]);
        assert_eq!(router.matches(&format!("{heap}/z")).unwrap(), vec![1]);
        assert_eq!(router.matches(&format!("{accented}/z")).unwrap(), vec![2]);
        assert_eq!(
            router.matches(&format!("{heap}h/z")).unwrap(),
            Vec::<u64>::new()
        );
        assert!(router.remove(&format!("{heap}/+"), 1).unwrap());
        assert_eq!(
            router.matches(&format!("{heap}/z")).unwrap(),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn dollar_topics_reach_only_filters_that_name_their_first_level() {
        let mut router = TopicRouter::new();
        router.add("#", 1).unwrap();
        router.add("+/#", 2).unwrap();
        router.add("$SYS/#", 3).unwrap();
        router.add("$SYS/+", 4).unwrap();
        assert_eq!(router.matches("$SYS/load").unwrap(), vec![3, 4]);
        assert_eq!(router.matches("$SYS").unwrap(), vec![3]);
        assert_eq!(router.matches("$other").unwrap(), Vec::<u64>::new());
        assert_eq!(router.matches("SYS/load").unwrap(), vec![1, 2]);
    }

    #[test]
    fn the_tail_word_is_the_bytes_zero_padded() {
        let bytes: Vec<u8> = (1..=7u8).map(|b| b.wrapping_mul(37) | 0x80).collect();
        for n in 0..8 {
            let expected = bytes[..n]
                .iter()
                .enumerate()
                .fold(0u64, |word, (at, &byte)| word | u64::from(byte) << (8 * at));
            assert_eq!(tail_word(&bytes[..n]), expected, "{n} bytes");
        }
    }

    #[test]
    fn edges_spread_over_the_table_and_survive_removal_in_any_order() {
        // Keys differing only in the parent node must not share a home slot.
        let mut edges = Edges::new();
        for _ in 0..8 {
            let len = edges.slots.len();
            edges.slots = vec![FREE_EDGE; len * 2];
            edges.shift -= 1;
        }
        let distinct: std::collections::HashSet<usize> =
            (0..256u32).map(|parent| edges.home(parent, 7)).collect();
        assert!(distinct.len() > 200, "{} distinct homes", distinct.len());
        // Many colliding probes: insert, then remove in a scrambled order.
        let mut edges = Edges::new();
        let keys: Vec<(u32, u32)> = (0..2000u32).map(|i| (i % 37, i / 37)).collect();
        for (child, &(parent, level)) in keys.iter().enumerate() {
            edges.insert(parent, level, child as u32);
        }
        assert_eq!(edges.len(), keys.len());
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        let mut left: Vec<(usize, (u32, u32))> = keys.iter().copied().enumerate().collect();
        while !left.is_empty() {
            let (_, (parent, level)) = left.swap_remove(rng.below(left.len()));
            edges.remove(parent, level);
            assert_eq!(edges.get(parent, level), NO_NODE);
            for &(child, (parent, level)) in left.iter().take(50) {
                assert_eq!(edges.get(parent, level), child as u32);
            }
        }
        assert!(edges.is_empty());
        assert!(edges.slots.iter().all(|edge| edge.child == NO_NODE));
    }

    #[test]
    fn cached_results_never_outlive_a_change_to_the_filters() {
        let mut router = TopicRouter::new();
        router.add("a/+", 1).unwrap();
        assert_eq!(router.matches("a/b").unwrap(), vec![1]);
        assert_eq!(router.matches("a/b").unwrap(), vec![1]);
        router.add("a/b", 2).unwrap();
        assert_eq!(router.matches("a/b").unwrap(), vec![1, 2]);
        router.remove("a/+", 1).unwrap();
        assert_eq!(router.matches("a/b").unwrap(), vec![2]);
        // Unchanged filters (a duplicate add, an absent remove) keep the cache valid.
        let generation = router.cache.generation;
        assert!(!router.add("a/b", 2).unwrap());
        assert!(!router.remove("x", 2).unwrap());
        assert_eq!(router.cache.generation, generation);
        assert_eq!(router.matches("a/b").unwrap(), vec![2]);
    }

    #[test]
    fn topics_sharing_a_cache_slot_get_their_own_results() {
        let mut router = TopicRouter::new();
        router.add("t/+", 1).unwrap();
        router.add("t/0", 2).unwrap();
        let first = "t/0".to_owned();
        let slot = Cache::slot_of(Cache::hash(&first));
        let second = (1..100_000)
            .map(|i| format!("t/{i}"))
            .find(|topic| Cache::slot_of(Cache::hash(topic)) == slot)
            .expect("a colliding topic");
        for repeat in 1..4 {
            for _ in 0..repeat {
                assert_eq!(router.matches(&first).unwrap(), vec![1, 2]);
            }
            for _ in 0..repeat {
                assert_eq!(router.matches(&second).unwrap(), vec![1]);
            }
        }
        assert_eq!(router.cache.slots[slot].topic, second);
    }

    #[test]
    fn long_topics_and_large_results_bypass_the_cache() {
        let mut router = TopicRouter::new();
        for target in 0..(CACHE_MAX_TARGETS as u64 + 1) {
            router.add("#", target).unwrap();
        }
        let all: Vec<u64> = (0..=CACHE_MAX_TARGETS as u64).collect();
        let long = "x".repeat(CACHE_MAX_TOPIC_BYTES + 1);
        assert_eq!(router.matches("x").unwrap(), all);
        assert_eq!(router.matches(&long).unwrap(), all);
        assert!(router.cache.slots.iter().all(|slot| slot.topic.is_empty()));
        router.remove("#", 0).unwrap();
        assert_eq!(router.matches("x").unwrap(), all[1..].to_vec());
        assert_eq!(router.matches("x").unwrap(), all[1..].to_vec());
        assert!(router.cache.slots.iter().any(|slot| slot.topic == "x"));
    }

    #[test]
    fn children_move_between_the_node_and_the_map_without_loss() {
        let mut router = TopicRouter::new();
        router.add("p/a", 1).unwrap();
        assert!(router.edges.is_empty(), "a single child stays in its node");
        router.add("p/b", 2).unwrap();
        router.add("p/c", 3).unwrap();
        assert_eq!(
            router.edges.len(),
            3,
            "root->p stays inline; p's three go to the map"
        );
        for (topic, target) in [("p/a", 1), ("p/b", 2), ("p/c", 3)] {
            assert_eq!(router.matches(topic).unwrap(), vec![target]);
        }
        router.remove("p/a", 1).unwrap();
        router.remove("p/c", 3).unwrap();
        assert_eq!(router.matches("p/b").unwrap(), vec![2]);
        assert_eq!(router.matches("p/a").unwrap(), Vec::<u64>::new());
        router.add("p/d", 4).unwrap();
        assert_eq!(router.matches("p/d").unwrap(), vec![4]);
        assert_eq!(router.matches("p/b").unwrap(), vec![2]);
        router.remove("p/b", 2).unwrap();
        router.remove("p/d", 4).unwrap();
        assert!(router.is_empty());
        assert!(router.edges.is_empty());
    }

    /// A small deterministic generator, so the randomised test needs no dependency.
    struct XorShift(u64);
    impl XorShift {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn random_filter_sets_agree_with_the_reference() {
        const LEVELS: &[&str] = &["a", "b", "", "$x", "+", "#"];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _round in 0..200 {
            let mut router = TopicRouter::new();
            let mut pairs: Vec<(String, u64)> = Vec::new();
            for _op in 0..30 {
                let depth = 1 + rng.below(4);
                let mut levels: Vec<&str> = (0..depth).map(|_| LEVELS[rng.below(6)]).collect();
                levels.iter_mut().take(depth - 1).for_each(|l| {
                    if *l == "#" {
                        *l = "+";
                    }
                });
                let filter = levels.join("/");
                if filter.is_empty() {
                    continue;
                }
                let target = rng.below(4) as u64;
                let present = pairs.contains(&(filter.clone(), target));
                if rng.below(3) == 0 {
                    assert_eq!(router.remove(&filter, target).unwrap(), present);
                    pairs.retain(|p| *p != (filter.clone(), target));
                } else {
                    assert_eq!(router.add(&filter, target).unwrap(), !present);
                    if !present {
                        pairs.push((filter, target));
                    }
                }
                assert_eq!(router.len(), pairs.len());
                for _ in 0..5 {
                    let depth = 1 + rng.below(4);
                    let topic = (0..depth)
                        .map(|_| LEVELS[rng.below(4)])
                        .collect::<Vec<_>>()
                        .join("/");
                    if topic.is_empty() {
                        continue;
                    }
                    let mut expected: Vec<u64> = pairs
                        .iter()
                        .filter(|(f, _)| reference_matches(f, &topic))
                        .map(|(_, t)| *t)
                        .collect();
                    expected.sort_unstable();
                    expected.dedup();
                    assert_eq!(router.matches(&topic).unwrap(), expected, "{topic}");
                }
            }
        }
    }
}
