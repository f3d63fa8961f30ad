//! Checks that need more than one key: value ranges, the wiring of
//! components by `inputs`, addresses two listeners would share, and paths
//! that must exist.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Range;
use std::path::Path;

use toml::de::DeValue;

use super::diagnostic::KeyPath;
use super::document::{Node, Reporter};
use shipper_components::config::Checks;

/// Reports errors about keys under one table, finding their lines in the
/// document.
#[derive(Debug)]
pub struct Checker<'r, 'a, 'i> {
    reporter: &'r mut Reporter<'a>,
    root: &'r Node<'i>,
    base: KeyPath,
}

impl<'r, 'a, 'i> Checker<'r, 'a, 'i> {
    pub fn new(reporter: &'r mut Reporter<'a>, root: &'r Node<'i>, base: KeyPath) -> Self {
        Checker {
            reporter,
            root,
            base,
        }
    }

    /// An error about `keys` under this checker's table (`&[]`: the table).
    pub fn error(&mut self, keys: &[&str], message: impl Into<String>) {
        let (path, span) = self.locate(keys);
        self.reporter.error(&path, &span, message);
    }

    /// A warning about `keys` under this checker's table.
    pub fn warning(&mut self, keys: &[&str], message: impl Into<String>) {
        let (path, span) = self.locate(keys);
        self.reporter.warning(&path, &span, message);
    }

    fn locate(&self, keys: &[&str]) -> (KeyPath, Range<usize>) {
        let mut path = self.base.clone();
        for key in keys {
            path = path.join(key);
        }
        let span = span_of(self.root, path.keys());
        (path, span)
    }
}

impl Checks for Checker<'_, '_, '_> {
    fn report(&mut self, error: bool, keys: &[&str], message: String) {
        if error {
            Checker::error(self, keys, message);
        } else {
            Checker::warning(self, keys, message);
        }
    }
}

/// The span to point at for `path`: the value of the deepest entry that
/// exists along it (the key, for a table, whose own span is its header).
pub fn span_of(root: &Node<'_>, path: &[String]) -> Range<usize> {
    let mut node = root;
    let mut span = root.span().start..root.span().start;
    for key in path {
        let DeValue::Table(table) = node.get_ref() else {
            break;
        };
        let Some((found_key, child)) = table.iter().find(|(k, _)| k.get_ref() == key) else {
            break;
        };
        span = match child.get_ref() {
            DeValue::Table(_) => found_key.span(),
            _ => child.span(),
        };
        node = child;
    }
    span
}

/// A source, transform or sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Source,
    Transform,
    Sink,
}

impl Kind {
    /// The top-level table of this kind.
    pub fn section(self) -> &'static str {
        match self {
            Kind::Source => "sources",
            Kind::Transform => "transforms",
            Kind::Sink => "sinks",
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            Kind::Source => "source",
            Kind::Transform => "transform",
            Kind::Sink => "sink",
        }
    }
}

/// What the document says about a component's `inputs`.
#[derive(Debug, Clone)]
pub enum Inputs {
    /// No `inputs` key.
    Missing,
    /// `inputs` is there but not an array of strings (deserialization
    /// reports that).
    Invalid,
    /// Each name with its span.
    Names(Vec<(String, Range<usize>)>),
}

/// A component as the wiring checks see it, read from the document so that
/// wiring is checked even where a component's other keys are wrong.
#[derive(Debug, Clone)]
pub struct Component {
    pub kind: Kind,
    pub name: String,
    /// Span of the component's name in the document.
    pub span: Range<usize>,
    pub inputs: Inputs,
}

impl Component {
    pub fn from_node(kind: Kind, name: &str, span: Range<usize>, node: &Node<'_>) -> Self {
        let inputs = match node.get_ref() {
            DeValue::Table(table) => match table.iter().find(|(k, _)| k.get_ref() == "inputs") {
                None => Inputs::Missing,
                Some((_, value)) => match value.get_ref() {
                    DeValue::Array(items) => items
                        .iter()
                        .map(|item| item.get_ref().as_str().map(|s| (s.to_owned(), item.span())))
                        .collect::<Option<Vec<_>>>()
                        .map_or(Inputs::Invalid, Inputs::Names),
                    _ => Inputs::Invalid,
                },
            },
            _ => Inputs::Invalid,
        };
        Component {
            kind,
            name: name.to_owned(),
            span,
            inputs,
        }
    }

    fn path(&self) -> KeyPath {
        KeyPath::root().join(self.kind.section()).join(&self.name)
    }

    fn names(&self) -> &[(String, Range<usize>)] {
        match &self.inputs {
            Inputs::Names(names) => names,
            _ => &[],
        }
    }
}

/// Checks names and the wiring: every input exists and is a source or a
/// transform, every transform and sink has inputs, transforms form no
/// cycle, and (a warning) every source and transform has a reader.
pub fn check_graph(components: &[Component], reporter: &mut Reporter<'_>) {
    let mut by_name: BTreeMap<&str, &Component> = BTreeMap::new();
    let mut in_order: Vec<&Component> = components.iter().collect();
    in_order.sort_by_key(|c| c.span.start);
    for component in &in_order {
        if let Err(reason) = check_name(&component.name) {
            reporter.error(&component.path(), &component.span, reason);
        }
        match by_name.get(component.name.as_str()) {
            Some(first) => reporter.error(
                &component.path(),
                &component.span,
                format!(
                    "the name `{}` is already used by {} `{}` (line {}); names are unique across sources, transforms and sinks",
                    component.name,
                    first.kind.noun(),
                    first.name,
                    reporter.line_of(&first.span)
                ),
            ),
            None => {
                by_name.insert(&component.name, component);
            }
        }
    }

    let mut read: BTreeSet<&str> = BTreeSet::new();
    for component in &in_order {
        if component.kind == Kind::Source {
            continue;
        }
        let path = component.path().join("inputs");
        match &component.inputs {
            Inputs::Missing => reporter.error(
                &path,
                &component.span,
                format!(
                    "missing required key `inputs`: a {} reads from at least one source or transform",
                    component.kind.noun()
                ),
            ),
            Inputs::Names(names) if names.is_empty() => reporter.error(
                &path,
                &component.span,
                format!(
                    "`inputs` is empty: a {} reads from at least one source or transform",
                    component.kind.noun()
                ),
            ),
            _ => {}
        }
        for (input, span) in component.names() {
            read.insert(input);
            match by_name.get(input.as_str()).map(|c| c.kind) {
                None => reporter.error(
                    &path,
                    span,
                    format!("`{input}` is not the name of a source or transform"),
                ),
                Some(Kind::Sink) => reporter.error(
                    &path,
                    span,
                    format!("`{input}` is a sink; inputs name sources and transforms"),
                ),
                Some(_) => {}
            }
        }
    }

    // A duplicate name already has its error; leave it out of the graph.
    let unique: Vec<&Component> = in_order
        .iter()
        .copied()
        .filter(|c| {
            by_name
                .get(c.name.as_str())
                .is_some_and(|first| std::ptr::eq(*first, *c))
        })
        .collect();
    check_cycles(&unique, reporter);

    for component in &in_order {
        if component.kind != Kind::Sink
            && !read.contains(component.name.as_str())
            && by_name
                .get(component.name.as_str())
                .is_some_and(|c| std::ptr::eq(*c, *component))
        {
            reporter.warning(
                &component.path(),
                &component.span,
                format!(
                    "nothing reads from this {}: no transform or sink names `{}` in its inputs",
                    component.kind.noun(),
                    component.name
                ),
            );
        }
    }
}

/// Component names become cursor file names and chunk tags.
fn check_name(name: &str) -> Result<(), String> {
    shipper_core::log::validate_cursor_name(name).map_err(|_| {
        format!("invalid name `{name}`: names are 1-128 characters of A-Z a-z 0-9 _ . - and do not start with a dot")
    })
}

/// Reports each cycle among transforms once, at the first transform of the
/// cycle in name order.
fn check_cycles(components: &[&Component], reporter: &mut Reporter<'_>) {
    let transforms: BTreeMap<&str, &Component> = components
        .iter()
        .filter(|c| c.kind == Kind::Transform)
        .map(|c| (c.name.as_str(), *c))
        .collect();
    let edges = |name: &str| -> Vec<&str> {
        transforms[name]
            .names()
            .iter()
            .map(|(input, _)| input.as_str())
            .filter(|input| transforms.contains_key(input))
            .collect()
    };
    let mut reported: BTreeSet<&str> = BTreeSet::new();
    for &start in transforms.keys() {
        if reported.contains(start) {
            continue;
        }
        // Shortest way back to `start` along "reads from" edges.
        let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
        let mut queue = VecDeque::from([start]);
        let mut closed = None;
        while let Some(node) = queue.pop_front() {
            for next in edges(node) {
                if next == start {
                    closed = Some(node);
                    break;
                }
                if !came_from.contains_key(next) && !reported.contains(next) {
                    came_from.insert(next, node);
                    queue.push_back(next);
                }
            }
            if closed.is_some() {
                break;
            }
        }
        let Some(mut last) = closed else {
            continue;
        };
        let mut cycle = vec![start];
        while last != start {
            cycle.push(last);
            last = came_from[last];
        }
        cycle[1..].reverse();
        let first_hop = cycle.get(1).copied().unwrap_or(start);
        let span = transforms[start]
            .names()
            .iter()
            .find(|(input, _)| input == first_hop)
            .map_or(transforms[start].span.clone(), |(_, span)| span.clone());
        let mut chain: Vec<&str> = cycle.clone();
        chain.push(start);
        reporter.error(
            &transforms[start].path().join("inputs"),
            &span,
            format!(
                "transforms form a cycle: {} (each reads from the next)",
                chain.join(" -> ")
            ),
        );
        reported.extend(cycle);
    }
}

/// The data directory is created if missing, but its parent must exist.
pub fn check_data_dir(data_dir: &Path, check: &mut Checker<'_, '_, '_>) {
    let shown = data_dir.display();
    match std::fs::metadata(data_dir) {
        Ok(meta) if !meta.is_dir() => {
            check.error(
                &["data_dir"],
                format!("`{shown}` exists and is not a directory"),
            );
            return;
        }
        Ok(_) => return,
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            check.error(&["data_dir"], format!("cannot read `{shown}`: {error}"));
            return;
        }
        Err(_) => {}
    }
    let parent = match data_dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let parent_shown = parent.display();
    match std::fs::metadata(parent) {
        Ok(meta) if meta.is_dir() => {
            if let Err(error) = std::fs::read_dir(parent) {
                check.error(
                    &["data_dir"],
                    format!("cannot read `{parent_shown}`, where `{shown}` would be created: {error}"),
                );
            }
        }
        Ok(_) => check.error(
            &["data_dir"],
            format!("`{parent_shown}` is not a directory, so `{shown}` cannot be created in it"),
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => check.error(
            &["data_dir"],
            format!("parent directory `{parent_shown}` does not exist (shipper creates `{shown}` but not its parents)"),
        ),
        Err(error) => check.error(
            &["data_dir"],
            format!("cannot read `{parent_shown}`, where `{shown}` would be created: {error}"),
        ),
    }
}

pub use shipper_components::config::Listener;

/// Reports each listener that overlaps one before it in the file: `run`
/// would fail to bind it (or replace the other's socket file). Each entry
/// is the key of the address (a key the file may leave out, like
/// `admin.address`, counts as before everything) and what it listens on.
pub fn check_listeners(
    listeners: &[(KeyPath, Listener)],
    root: &Node<'_>,
    reporter: &mut Reporter<'_>,
) {
    let located: Vec<(&KeyPath, &Listener, Option<Range<usize>>)> = listeners
        .iter()
        .map(|(path, listener)| {
            let written = super::document::get(root.get_ref(), path.keys()).is_some();
            (path, listener, written.then(|| span_of(root, path.keys())))
        })
        .collect();
    let mut in_order: Vec<_> = located.iter().collect();
    in_order.sort_by_key(|(_, _, span)| span.as_ref().map_or(0, |span| span.start + 1));
    for (index, (path, listener, span)) in in_order.iter().enumerate() {
        let Some(span) = span else { continue };
        let Some((other_path, other, other_span)) = in_order[..index]
            .iter()
            .find(|(_, other, _)| listener.overlaps(other))
        else {
            continue;
        };
        let where_ = match other_span {
            Some(other_span) => format!("`{other_path}` (line {})", reporter.line_of(other_span)),
            None => format!("`{other_path}` (its default)"),
        };
        let consequence = match listener {
            Listener::Unix(_) => "the second would replace the first's socket file",
            _ => "the second would find the address in use",
        };
        let clash = if listener == other {
            format!("{listener} is where {where_} listens too")
        } else {
            format!("{listener} overlaps {other}, where {where_} listens")
        };
        reporter.error(path, span, format!("{clash}: {consequence}"));
    }
}
