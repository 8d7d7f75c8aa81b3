//! Many patterns compiled into one index, so that matching an event does
//! not loop over every pattern.
//!
//! The field paths of all patterns form a trie. Matching walks the event
//! once along that trie (fields no pattern names are skipped whole, and a
//! key with dots takes one step per part) and collects its leaves. Each
//! alternative of each pattern is *anchored* on one of its conditions whose
//! matchers are exact values, lowercase values or prefixes: the anchor's
//! values sit in hash maps on the trie node of its path. A leaf looks
//! itself up in its node's maps, which yields the few alternatives it could
//! satisfy; only those are checked in full.
//! The anchor of an alternative is the condition whose values are shared
//! by the fewest other alternatives, so 10,000 rules that all name the
//! same `source` but different `detail-type`s anchor on the `detail-type`.
//! Alternatives with no exact-valued condition (only `numeric`, say) are
//! checked for every event.

use std::hash::Hasher;

use rustc_hash::FxHashMap;
use serde_json::Value;

use super::{Condition, Matcher, Pattern};

/// Compiled patterns, each with what it stands for (a rule, a target).
pub struct PatternSet<T> {
    owners: Vec<T>,
    alternatives: Vec<Alternative>,
    nodes: Vec<Node>,
    /// The alternatives anchored on each value, in runs named by the nodes' maps.
    anchored: Vec<u32>,
    /// Alternatives checked for every event.
    unanchored: Vec<u32>,
}

struct Alternative {
    owner: u32,
    /// (trie node of the path, condition).
    conditions: Vec<(u32, Condition)>,
}

/// One field path, with the anchors of alternatives on it. Anchor values
/// are keyed by their hash: a collision only adds a candidate, and every
/// candidate is checked in full.
#[derive(Default)]
struct Node {
    children: FxHashMap<Box<str>, u32>,
    /// Value hash → a range of `PatternSet::anchored`.
    values: FxHashMap<u64, (u32, u32)>,
    /// Hash of the lowercased text → a range of `PatternSet::anchored`.
    lowercase: FxHashMap<u64, (u32, u32)>,
    prefixes: FxHashMap<u64, (u32, u32)>,
    /// The distinct lengths of the prefixes, ascending.
    prefix_lengths: Vec<usize>,
}

/// What an anchor value is, to count how many alternatives share it.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Text(Box<str>),
    Number(u64),
    Literal(String),
    Lowercase(Box<str>),
    Prefix(Box<str>),
}

/// Per-thread buffers for [`PatternSet::matching_with`], reused between events.
#[derive(Default)]
pub struct Scratch {
    candidates: Vec<u32>,
    owners: Vec<u32>,
}

fn number_key(n: f64) -> u64 {
    if n == 0.0 { 0 } else { n.to_bits() }
}

fn keys(condition: &Condition) -> Option<Vec<Key>> {
    condition
        .matchers
        .iter()
        .map(|m| match m {
            Matcher::Equals(Value::String(s)) => Some(Key::Text(s.as_str().into())),
            Matcher::Equals(v @ Value::Number(_)) => v.as_f64().map(|n| Key::Number(number_key(n))),
            Matcher::Equals(v @ (Value::Bool(_) | Value::Null)) => Some(Key::Literal(v.to_string())),
            Matcher::IgnoreCase(s) => Some(Key::Lowercase(s.as_str().into())),
            Matcher::Prefix(p, false) => Some(Key::Prefix(p.as_str().into())),
            _ => None,
        })
        .collect()
}

impl<T> PatternSet<T> {
    pub fn new(patterns: impl IntoIterator<Item = (Pattern, T)>) -> PatternSet<T> {
        let mut set = PatternSet {
            owners: Vec::new(),
            alternatives: Vec::new(),
            nodes: vec![Node::default()],
            anchored: Vec::new(),
            unanchored: Vec::new(),
        };
        for (pattern, owner) in patterns {
            let o = set.owners.len() as u32;
            set.owners.push(owner);
            for conditions in pattern.alternatives {
                let conditions = conditions.into_iter().map(|c| (set.node(&c.path), c)).collect();
                set.alternatives.push(Alternative { owner: o, conditions });
            }
        }
        // How many alternatives could anchor on each (node, value).
        let mut shared: FxHashMap<(u32, Key), usize> = FxHashMap::default();
        for alt in &set.alternatives {
            for (node, c) in &alt.conditions {
                for key in keys(c).unwrap_or_default() {
                    *shared.entry((*node, key)).or_default() += 1;
                }
            }
        }
        let mut anchors: FxHashMap<(u32, Key), Vec<u32>> = FxHashMap::default();
        for a in 0..set.alternatives.len() {
            let best = set.alternatives[a]
                .conditions
                .iter()
                .filter_map(|(node, c)| keys(c).map(|k| (*node, k)))
                .min_by_key(|(node, keys)| {
                    let worst = keys.iter().map(|k| shared[&(*node, k.clone())]).max().unwrap_or(0);
                    (worst, keys.len())
                });
            match best {
                Some((node, keys)) => {
                    for key in keys {
                        anchors.entry((node, key)).or_default().push(a as u32);
                    }
                }
                None => set.unanchored.push(a as u32),
            }
        }
        for ((node, key), alternatives) in anchors {
            set.anchor(node, key, &alternatives);
        }
        set
    }

    /// The trie node of `path`, made if new.
    fn node(&mut self, path: &[String]) -> u32 {
        let mut at = 0u32;
        for part in path {
            at = match self.nodes[at as usize].children.get(part.as_str()) {
                Some(&child) => child,
                None => {
                    let child = self.nodes.len() as u32;
                    self.nodes.push(Node::default());
                    self.nodes[at as usize].children.insert(part.as_str().into(), child);
                    child
                }
            };
        }
        at
    }

    fn anchor(&mut self, node: u32, key: Key, alternatives: &[u32]) {
        let start = self.anchored.len() as u32;
        self.anchored.extend_from_slice(alternatives);
        let range = (start, alternatives.len() as u32);
        let n = &mut self.nodes[node as usize];
        let (map, hash) = match &key {
            Key::Text(s) => (&mut n.values, text_hash(s)),
            Key::Number(x) => (&mut n.values, number_hash(*x)),
            Key::Literal(text) => (&mut n.values, literal_hash(text)),
            Key::Lowercase(s) => (&mut n.lowercase, text_hash(s)),
            Key::Prefix(p) => {
                if !n.prefix_lengths.contains(&p.len()) {
                    n.prefix_lengths.push(p.len());
                    n.prefix_lengths.sort_unstable();
                }
                (&mut n.prefixes, text_hash(p))
            }
        };
        // Two keys with one hash share a run: join them.
        match map.get(&hash).copied() {
            Some((at, len)) => {
                let mut joined: Vec<u32> = self.anchored[at as usize..(at + len) as usize].to_vec();
                joined.extend_from_slice(alternatives);
                let start = self.anchored.len() as u32;
                self.anchored.extend_from_slice(&joined);
                map.insert(hash, (start, joined.len() as u32));
            }
            None => {
                map.insert(hash, range);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.owners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }

    /// What the patterns matching `event` stand for, in the order given.
    pub fn matching(&self, event: &Value) -> Vec<&T> {
        self.matching_with(event, &mut Scratch::default())
    }

    /// [`PatternSet::matching`], reusing `scratch`'s buffers.
    pub fn matching_with(&self, event: &Value, scratch: &mut Scratch) -> Vec<&T> {
        let mut leaves: Vec<(u32, &Value)> = Vec::new();
        self.walk(0, event, &mut leaves);
        leaves.sort_by_key(|(node, _)| *node);
        let candidates = &mut scratch.candidates;
        candidates.clear();
        for (node, value) in &leaves {
            self.candidates(&self.nodes[*node as usize], value, candidates);
        }
        candidates.extend_from_slice(&self.unanchored);
        candidates.sort_unstable();
        candidates.dedup();
        let owners = &mut scratch.owners;
        owners.clear();
        for &a in candidates.iter() {
            let alt = &self.alternatives[a as usize];
            let holds = alt.conditions.iter().all(|(node, c)| {
                let from = leaves.partition_point(|(n, _)| n < node);
                let to = from + leaves[from..].partition_point(|(n, _)| n == node);
                c.holds(leaves[from..to].iter().map(|(_, v)| *v))
            });
            if holds {
                owners.push(alt.owner);
            }
        }
        owners.sort_unstable();
        owners.dedup();
        owners.iter().map(|&o| &self.owners[o as usize]).collect()
    }

    /// Collects the leaves of `value` under trie node `node`.
    fn walk<'v>(&self, node: u32, value: &'v Value, leaves: &mut Vec<(u32, &'v Value)>) {
        match value {
            Value::Object(map) => {
                let children = &self.nodes[node as usize].children;
                if children.is_empty() {
                    return;
                }
                for (key, v) in map {
                    if let Some(child) = self.child(node, key) {
                        self.visit(child, v, leaves);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| self.walk(node, v, leaves)),
            _ => {}
        }
    }

    /// The trie node below `node` for the event key `key`, which takes as
    /// many steps as it has dot-separated parts (see [`super::after_key`]).
    fn child(&self, node: u32, key: &str) -> Option<u32> {
        key.split('.')
            .try_fold(node, |at, part| self.nodes[at as usize].children.get(part).copied())
    }

    fn visit<'v>(&self, node: u32, value: &'v Value, leaves: &mut Vec<(u32, &'v Value)>) {
        match value {
            Value::Object(_) => self.walk(node, value, leaves),
            Value::Array(items) => items.iter().for_each(|v| self.visit(node, v, leaves)),
            leaf => leaves.push((node, leaf)),
        }
    }

    /// The alternatives anchored on a value `leaf` may satisfy.
    fn candidates(&self, node: &Node, leaf: &Value, out: &mut Vec<u32>) {
        let mut add = |map: &FxHashMap<u64, (u32, u32)>, hash: u64| {
            if let Some(&(at, len)) = map.get(&hash) {
                out.extend_from_slice(&self.anchored[at as usize..(at + len) as usize]);
            }
        };
        match leaf {
            Value::String(s) => {
                add(&node.values, text_hash(s));
                if !node.lowercase.is_empty() {
                    add(&node.lowercase, text_hash(&s.to_lowercase()));
                }
                for &len in &node.prefix_lengths {
                    if len > s.len() {
                        break;
                    }
                    if s.is_char_boundary(len) {
                        add(&node.prefixes, text_hash(&s[..len]));
                    }
                }
            }
            Value::Number(_) => {
                if let Some(n) = leaf.as_f64() {
                    add(&node.values, number_hash(number_key(n)));
                }
            }
            other => add(&node.values, literal_hash(&other.to_string())),
        }
    }
}

fn text_hash(s: &str) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write_u8(b's');
    h.write(s.as_bytes());
    h.finish()
}

fn number_hash(bits: u64) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write_u8(b'n');
    h.write_u64(bits);
    h.finish()
}

fn literal_hash(text: &str) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write_u8(b'l');
    h.write(text.as_bytes());
    h.finish()
}
