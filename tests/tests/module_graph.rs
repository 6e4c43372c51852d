//! No import circles between the modules of a crate, for every crate of the workspace.
//!
//! Each crate is read from its root file, following `mod` declarations. "Module A refers to module B" when a `use`
//! or a path in A's code (`crate::…`, `super::…`, `self::…`, or a path starting with a child module or with a name
//! that a `use` brought in) resolves into B: the path is made absolute and cut to the longest module it names. A
//! module's own descendants count, itself does not, and `mod x;` declarations are not references. A circle is a
//! set of more than one module that all reach each other. Test-only code (`#[cfg(test)]` items, `tests.rs` files)
//! is left out. The scanner is small and hand-written: comments, strings and character literals are skipped,
//! `use` trees are expanded, and names brought in by glob imports are not followed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};

/// The crates checked: name as reported, root file relative to the workspace.
const CRATES: &[(&str, &str)] = &[
    ("engine", "engine/src/lib.rs"),
    ("engine-cli", "engine/src/bin/engine-cli/main.rs"),
    ("engine-format", "engine/format/src/lib.rs"),
    ("engine-tools", "tools/src/lib.rs"),
    ("engine-ptx", "ptx/src/lib.rs"),
];

#[test]
fn no_module_circles() {
    let circles = workspace_circles();
    assert!(circles.is_empty(), "import circles between modules:\n{}", report(&circles));
}

#[test]
fn the_scanner_sees_references_and_nothing_else() {
    let files: HashMap<PathBuf, &str> = [
        (
            "lib.rs",
            "//! crate::d::y in a comment is no reference\n\
             mod a;\npub mod b;\nmod c;\npub(crate) mod d;\n#[cfg(test)]\nmod tests;\npub use a::A;\n",
        ),
        (
            "a.rs",
            "use crate::b::{self, B as Bee};\npub struct A;\n\
             fn f<'x>(s: &'x str) -> char { let _ = (\"crate::d\", r#\"super::d\"#, s); b::g(); '\"' }\n",
        ),
        ("b.rs", "pub struct B;\npub fn g() { super::c::h(); }\n"),
        ("c.rs", "pub fn h() { let _: Option<crate::a::A> = None; /* self::d */ }\n"),
        (
            "d/mod.rs",
            "pub mod inner;\npub fn y() {}\n#[cfg(test)]\nuse inner::Z;\n\
             #[cfg(test)]\nmod tests {\n    use crate::c::h;\n}\nmod e { pub fn f() { self::g(); super::y(); } fn g() {} }\n",
        ),
        ("d/inner.rs", "use super::super::d;\npub struct Z;\nfn f() { d::y(); ::c::h(); }\n"),
    ]
    .into_iter()
    .map(|(p, s)| (Path::new("synthetic").join(p), s))
    .collect();
    let g = Graph::scan("synthetic", Path::new("synthetic/lib.rs"), &|p| files.get(p).map(|s| s.to_string()));

    let name = |m: &Module| if m.is_empty() { "crate".to_string() } else { m.join("::") };
    let edges: BTreeSet<(String, String)> = g.edges.keys().map(|(a, b)| (name(a), name(b))).collect();
    let expect: BTreeSet<(String, String)> =
        [("crate", "a"), ("a", "b"), ("b", "c"), ("c", "a"), ("d::inner", "d"), ("d::e", "d")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
    assert_eq!(edges, expect);
    let circles = g.circles();
    assert_eq!(circles.len(), 1);
    assert_eq!(circles[0].modules, [["a"], ["b"], ["c"]].map(|m| m.map(String::from).to_vec()));
    let text = report(&circles);
    assert!(text.contains("a -> b -> c -> a") && text.contains("at synthetic/c.rs:1: crate::a::A"), "{text}");
}

/// A module: its path from the crate root (empty for the root).
type Module = Vec<String>;

/// Every circle of every crate of the workspace.
fn workspace_circles() -> Vec<Circle> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let read = |p: &Path| std::fs::read_to_string(workspace.join(p)).ok();
    CRATES.iter().flat_map(|(krate, file)| Graph::scan(krate, Path::new(file), &read).circles()).collect()
}

struct Circle {
    krate: String,
    /// Sorted.
    modules: Vec<Module>,
    /// One way around, first module repeated at the end.
    cycle: Vec<Module>,
    /// Every reference between two of the modules: from, to, where.
    edges: Vec<(Module, Module, String)>,
}

fn report(circles: &[Circle]) -> String {
    let name = |k: &str, m: &Module| if m.is_empty() { k.to_string() } else { m.join("::") };
    let mut out = String::new();
    for c in circles {
        let cycle: Vec<String> = c.cycle.iter().map(|m| name(&c.krate, m)).collect();
        out += &format!("{}: {}\n", c.krate, cycle.join(" -> "));
        for (a, b, at) in &c.edges {
            out += &format!("    {} -> {}  at {at}\n", name(&c.krate, a), name(&c.krate, b));
        }
    }
    out
}

/// The modules of one crate and the references between them.
struct Graph {
    krate: String,
    modules: BTreeSet<Module>,
    /// (from, to) → where the first such reference is, as `file:line: path`.
    edges: BTreeMap<(Module, Module), String>,
}

/// What a `use` brings in, or a path in code, found in `module` at `at`.
struct PathRef {
    module: Module,
    segments: Vec<String>,
    /// For a `use`: the name it binds (`None` for `_` and globs); `None` for a path in code.
    binds: Option<String>,
    is_use: bool,
    at: String,
}

impl Graph {
    /// `read` gives the text of a file, by the same kind of path as `root` (the crate's root file).
    fn scan(krate: &str, root: &Path, read: &dyn Fn(&Path) -> Option<String>) -> Graph {
        let mut modules = BTreeSet::new();
        let mut refs = Vec::new();
        // (module, its file, whether the file is a mod.rs-like one whose children live next to it).
        let mut files = vec![(Module::new(), root.to_path_buf(), true)];
        while let Some((module, file, owns_dir)) = files.pop() {
            let src = read(&file).unwrap_or_else(|| panic!("{krate}: cannot read {}", file.display()));
            let dir = if owns_dir { file.parent().unwrap().to_path_buf() } else { file.with_extension("") };
            let scanned = scan_file(&lex(&src), &module, &file.display().to_string());
            modules.extend(scanned.inline_modules);
            refs.extend(scanned.refs);
            modules.insert(module.clone());
            for (parent, name) in scanned.child_files {
                let sub = dir.join(parent[module.len()..].iter().collect::<PathBuf>());
                let mut child = parent.clone();
                child.push(name.clone());
                let flat = sub.join(format!("{name}.rs"));
                let nested = sub.join(&name).join("mod.rs");
                if read(&flat).is_some() {
                    files.push((child, flat, false));
                } else if read(&nested).is_some() {
                    files.push((child, nested, true));
                } else {
                    panic!(
                        "{krate}: `mod {name};` in {}: neither {} nor {}",
                        file.display(),
                        flat.display(),
                        nested.display()
                    );
                }
            }
        }

        let mut g = Graph { krate: krate.to_string(), modules, edges: BTreeMap::new() };
        // `use`s first, in order, so that the names they bind are known when code paths are resolved.
        let mut bound: HashMap<(Module, String), Vec<String>> = HashMap::new();
        refs.sort_by_key(|r| !r.is_use);
        for r in &refs {
            let Some(path) = g.resolve(&r.module, &r.segments, &bound) else { continue };
            if let Some(name) = &r.binds {
                bound.insert((r.module.clone(), name.clone()), path.clone());
            }
            let to = g.longest_module(&path);
            if to != r.module {
                g.edges.entry((r.module.clone(), to)).or_insert_with(|| format!("{}: {}", r.at, r.segments.join("::")));
            }
        }
        g
    }

    /// The absolute path `segments` means in `module`, or `None` if it leaves the crate (another crate, std).
    fn resolve(
        &self,
        module: &Module,
        segments: &[String],
        bound: &HashMap<(Module, String), Vec<String>>,
    ) -> Option<Vec<String>> {
        let (first, rest) = segments.split_first()?;
        let (mut path, rest) = match first.as_str() {
            "crate" => (Vec::new(), rest),
            "self" => (module.clone(), rest),
            "super" => {
                let ups = 1 + rest.iter().take_while(|s| *s == "super").count();
                (module.get(..module.len().checked_sub(ups)?)?.to_vec(), &rest[ups - 1..])
            }
            name => {
                let child: Module = module.iter().cloned().chain([name.to_string()]).collect();
                if self.modules.contains(&child) {
                    (child, rest)
                } else {
                    (bound.get(&(module.clone(), name.to_string()))?.clone(), rest)
                }
            }
        };
        path.extend(rest.iter().cloned());
        Some(path)
    }

    fn longest_module(&self, path: &[String]) -> Module {
        (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| self.modules.contains(m)).unwrap_or_default()
    }

    /// The strongly connected sets of more than one module (Tarjan), each with one cycle through it.
    fn circles(&self) -> Vec<Circle> {
        let nodes: Vec<&Module> = self.modules.iter().collect();
        let index: HashMap<&Module, usize> = nodes.iter().enumerate().map(|(i, m)| (*m, i)).collect();
        let mut succ = vec![Vec::new(); nodes.len()];
        for (a, b) in self.edges.keys() {
            succ[index[a]].push(index[b]);
        }
        let mut t = Tarjan {
            succ: &succ,
            index: vec![None; nodes.len()],
            low: vec![0; nodes.len()],
            on_stack: vec![false; nodes.len()],
            stack: Vec::new(),
            next: 0,
            sets: Vec::new(),
        };
        for v in 0..nodes.len() {
            if t.index[v].is_none() {
                t.visit(v);
            }
        }
        let mut out = Vec::new();
        for mut set in t.sets.into_iter().filter(|s| s.len() > 1) {
            set.sort();
            let members: BTreeSet<usize> = set.iter().copied().collect();
            let cycle = shortest_cycle(set[0], &succ, &members).into_iter().map(|i| nodes[i].clone()).collect();
            let edges = self
                .edges
                .iter()
                .filter(|((a, b), _)| members.contains(&index[a]) && members.contains(&index[b]))
                .map(|((a, b), at)| (a.clone(), b.clone(), at.clone()))
                .collect();
            out.push(Circle {
                krate: self.krate.clone(),
                modules: set.iter().map(|&i| nodes[i].clone()).collect(),
                cycle,
                edges,
            });
        }
        out
    }
}

struct Tarjan<'a> {
    succ: &'a [Vec<usize>],
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    next: usize,
    sets: Vec<Vec<usize>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, v: usize) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for &w in &self.succ[v] {
            match self.index[w] {
                None => {
                    self.visit(w);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut set = Vec::new();
            loop {
                let w = self.stack.pop().unwrap();
                self.on_stack[w] = false;
                set.push(w);
                if w == v {
                    break;
                }
            }
            self.sets.push(set);
        }
    }
}

/// The shortest way from `start` back to itself through `members` (breadth first).
fn shortest_cycle(start: usize, succ: &[Vec<usize>], members: &BTreeSet<usize>) -> Vec<usize> {
    let mut came_from: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in succ[v].iter().filter(|w| members.contains(w)) {
            if w == start {
                let mut path = vec![start, v];
                while *path.last().unwrap() != start {
                    path.push(came_from[path.last().unwrap()]);
                }
                path.reverse();
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = came_from.entry(w) {
                e.insert(v);
                queue.push_back(w);
            }
        }
    }
    unreachable!("a strongly connected set has a cycle through each member")
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    Punct(char),
}

struct Token {
    tok: Tok,
    line: usize,
}

/// Rust source → identifiers, `::` and single punctuation characters; comments, literals and lifetimes dropped.
fn lex(src: &str) -> Vec<Token> {
    let s: Vec<char> = src.chars().collect();
    let at = |i: usize| s.get(i).copied().unwrap_or('\0');
    let is_ident_start = |c: char| c.is_alphabetic() || c == '_';
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    // Skips a quoted literal whose body starts at `i` and ends with `close` followed by `hashes` `#`s; raw literals
    // have no escapes.
    let skip_quoted = |mut i: usize, close: char, hashes: usize, raw: bool, line: &mut usize| -> usize {
        while i < s.len() {
            match s[i] {
                '\\' if !raw => i += 1,
                '\n' => *line += 1,
                c if c == close && (1..=hashes).all(|k| at(i + k) == '#') => return i + 1 + hashes,
                _ => {}
            }
            i += 1;
        }
        i
    };
    while i < s.len() {
        let c = s[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < s.len() && s[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < s.len() {
                if s[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if s[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(s[i] == '\n');
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_quoted(i + 1, '"', 0, false, &mut line);
        } else if c == '\'' {
            if at(i + 1) == '\\' {
                i = skip_quoted(i + 3, '\'', 0, false, &mut line);
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                // A lifetime or label: not a path.
                i += 1;
                while is_ident(at(i)) {
                    i += 1;
                }
            }
        } else if is_ident_start(c) {
            let start = i;
            while is_ident(at(i)) {
                i += 1;
            }
            let word: String = s[start..i].iter().collect();
            let hashes = (0..).take_while(|&k| at(i + k) == '#').count();
            match word.as_str() {
                "r" | "br" | "cr" if at(i + hashes) == '"' => {
                    i = skip_quoted(i + hashes + 1, '"', hashes, true, &mut line);
                }
                "b" | "c" if at(i) == '"' => i = skip_quoted(i + 1, '"', 0, false, &mut line),
                "b" if at(i) == '\'' => i = skip_quoted(i + 1, '\'', 0, false, &mut line),
                "r" if hashes == 1 && is_ident_start(at(i + 1)) => {
                    // A raw identifier, `r#type`.
                    let start = i + 1;
                    i = start;
                    while is_ident(at(i)) {
                        i += 1;
                    }
                    out.push(Token { tok: Tok::Ident(s[start..i].iter().collect()), line });
                }
                _ => out.push(Token { tok: Tok::Ident(word), line }),
            }
        } else if c.is_ascii_digit() {
            while is_ident(at(i)) {
                i += 1;
            }
        } else if c == ':' && at(i + 1) == ':' {
            out.push(Token { tok: Tok::PathSep, line });
            i += 2;
        } else {
            out.push(Token { tok: Tok::Punct(c), line });
            i += 1;
        }
    }
    out
}

struct FileScan {
    /// `mod name;` declarations: the module declaring (the file's, or an inline one in it) and the name.
    child_files: Vec<(Module, String)>,
    inline_modules: Vec<Module>,
    refs: Vec<PathRef>,
}

/// The declarations, `use`s and paths of one file whose module is `module`.
fn scan_file(toks: &[Token], module: &Module, file: &str) -> FileScan {
    let mut scan = FileScan { child_files: Vec::new(), inline_modules: Vec::new(), refs: Vec::new() };
    let is = |i: usize, t: Tok| toks.get(i).is_some_and(|x| x.tok == t);
    let ident = |i: usize| match toks.get(i).map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s.clone()),
        _ => None,
    };
    // Inline modules open: (module, brace depth outside it).
    let mut open: Vec<(Module, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < toks.len() {
        let current = || open.last().map_or(module, |(m, _)| m).clone();
        let at = || format!("{file}:{}", toks[i].line);
        match &toks[i].tok {
            Tok::Punct('#') if is(i + 1, Tok::Punct('[')) => {
                let end = matching(toks, i + 1);
                let attr = &toks[i + 2..end];
                let test_only = attr.first().is_some_and(|t| t.tok == Tok::Ident("cfg".into()))
                    && attr.iter().any(|t| t.tok == Tok::Ident("test".into()))
                    && !attr.iter().any(|t| t.tok == Tok::Ident("not".into()));
                i = end + 1;
                if test_only {
                    while is(i, Tok::Punct('#')) && is(i + 1, Tok::Punct('[')) {
                        i = matching(toks, i + 1) + 1;
                    }
                    i = skip_item(toks, i);
                }
            }
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                depth -= 1;
                if open.last().is_some_and(|(_, d)| *d == depth) {
                    open.pop();
                }
                i += 1;
            }
            Tok::Ident(w) if w == "mod" && ident(i + 1).is_some() => {
                let name = ident(i + 1).unwrap();
                if is(i + 2, Tok::Punct('{')) {
                    let mut inner = current();
                    inner.push(name);
                    scan.inline_modules.push(inner.clone());
                    open.push((inner, depth));
                    depth += 1;
                } else if name != "tests" {
                    scan.child_files.push((current(), name));
                }
                i += 3;
            }
            Tok::Ident(w) if w == "use" => {
                let (module, at) = (current(), at());
                let mut uses = Vec::new();
                i = use_tree(toks, i + 1, Vec::new(), &mut uses);
                for (segments, binds) in uses {
                    scan.refs.push(PathRef { module: module.clone(), segments, binds, is_use: true, at: at.clone() });
                }
            }
            Tok::Ident(first) if is(i + 1, Tok::PathSep) && !(i > 0 && is(i - 1, Tok::PathSep)) => {
                let (module, at) = (current(), at());
                let mut segments = vec![first.clone()];
                i += 1;
                while is(i, Tok::PathSep) && ident(i + 1).is_some() {
                    segments.push(ident(i + 1).unwrap());
                    i += 2;
                }
                scan.refs.push(PathRef { module, segments, binds: None, is_use: false, at });
            }
            _ => i += 1,
        }
    }
    scan
}

/// The index of the bracket closing the one at `open`.
fn matching(toks: &[Token], open: usize) -> usize {
    let (o, c) = match toks[open].tok {
        Tok::Punct('[') => ('[', ']'),
        Tok::Punct('(') => ('(', ')'),
        _ => ('{', '}'),
    };
    let mut depth = 0;
    for (k, t) in toks.iter().enumerate().skip(open) {
        if t.tok == Tok::Punct(o) {
            depth += 1;
        } else if t.tok == Tok::Punct(c) {
            depth -= 1;
            if depth == 0 {
                return k;
            }
        }
    }
    toks.len() - 1
}

/// The index after the item starting at `i`: after its `;`, or after its `{ … }` body, whichever comes first.
fn skip_item(toks: &[Token], mut i: usize) -> usize {
    while i < toks.len() {
        match toks[i].tok {
            Tok::Punct(';') => return i + 1,
            Tok::Punct('{') => return matching(toks, i) + 1,
            Tok::Punct('(' | '[') => i = matching(toks, i) + 1,
            _ => i += 1,
        }
    }
    i
}

/// Expands the `use` tree at `i` under `prefix` into (path, name bound); returns the index after it.
fn use_tree(toks: &[Token], mut i: usize, prefix: Vec<String>, out: &mut Vec<(Vec<String>, Option<String>)>) -> usize {
    let mut path = prefix;
    if path.is_empty() && toks.get(i).is_some_and(|t| t.tok == Tok::PathSep) {
        // `use ::name`: always another crate.
        path.push("::".into());
        i += 1;
    }
    loop {
        match toks.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(s)) => {
                path.push(s.clone());
                i += 1;
                if toks.get(i).is_some_and(|t| t.tok == Tok::PathSep) {
                    i += 1;
                    continue;
                }
                break;
            }
            Some(Tok::Punct('*')) => {
                out.push((path, None));
                return i + 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                while i < toks.len() && toks[i].tok != Tok::Punct('}') {
                    i = use_tree(toks, i, path.clone(), out);
                    if toks.get(i).is_some_and(|t| t.tok == Tok::Punct(',')) {
                        i += 1;
                    }
                }
                return i + 1;
            }
            _ => return i + 1,
        }
    }
    if path.last().is_some_and(|s| s == "self") {
        path.pop();
    }
    let mut binds = path.last().cloned();
    if toks.get(i).is_some_and(|t| t.tok == Tok::Ident("as".into())) {
        binds = match toks.get(i + 1).map(|t| &t.tok) {
            Some(Tok::Ident(s)) if s != "_" => Some(s.clone()),
            _ => None,
        };
        i += 2;
    }
    out.push((path, binds));
    i
}
