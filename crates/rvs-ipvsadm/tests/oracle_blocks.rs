//! Replays the recorded oracle cases (`shared/oracle/cases/{fmt,err}-*.sh`) against
//! [`rvs_ipvsadm::run`] with an in-memory table and compares every recorded `run ipvsadm ...`
//! block (stdout, stderr, kernel log, exit status) byte for byte.
//!
//! The `.sh` gives the order of all commands (including unrecorded setup such as
//! `ipvsadm -A ...` in `for` loops, heredocs for `-R`, files written with `printf`); the
//! `.out` gives the expected result of each `run` block, paired in order. A small shell
//! interpreter covers what the cases use. Traffic (`pick`, `conn`) cannot be replayed
//! offline: after the first traffic line, blocks whose output depends on connections or
//! counters (listings, `/proc`) are skipped and listed; everything else is still compared.

use rvs_ipvsadm::{MemBackend, Names, proc, run_with_names};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn cases_dir() -> PathBuf {
    if let Ok(d) = std::env::var("RVS_ORACLE_CASES") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/oracle/cases")
}

// ---------- .out blocks ----------

#[derive(Debug, Default, Clone)]
struct Block {
    cmd: String,
    stdout: String,
    stderr: String,
    kernel: Vec<String>,
    rc: i32,
}

fn parse_out(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut cur: Option<Block> = None;
    for line in text.split('\n') {
        if let Some(cmd) = line.strip_prefix("$ ") {
            cur = Some(Block {
                cmd: cmd.to_string(),
                ..Block::default()
            });
            continue;
        }
        let Some(b) = cur.as_mut() else { continue };
        if let Some(rc) = line.strip_prefix("rc=").and_then(|r| r.parse::<i32>().ok()) {
            b.rc = rc;
            blocks.push(cur.take().unwrap());
        } else if let Some(s) =
            line.strip_prefix("stderr: ")
                .or(if line == "stderr:" { Some("") } else { None })
        {
            b.stderr.push_str(s);
            b.stderr.push('\n');
        } else if let Some(k) = line.strip_prefix("kernel: ") {
            b.kernel.push(k.to_string());
        } else {
            b.stdout.push_str(line);
            b.stdout.push('\n');
        }
    }
    blocks
}

// ---------- a small shell ----------

#[derive(Clone, Debug, PartialEq)]
enum Part {
    Lit(String),
    Var(String),
}

#[derive(Clone, Debug, PartialEq)]
struct Word {
    parts: Vec<Part>,
    quoted: bool,
}

impl Word {
    fn plain(&self) -> Option<&str> {
        match (self.quoted, self.parts.as_slice()) {
            (false, [Part::Lit(s)]) => Some(s),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    W(Word),
    Op(&'static str),
    Heredoc(String),
    Newline,
}

fn tokenize(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut i = 0;
    let mut toks = Vec::new();
    let mut pending_heredocs: Vec<String> = Vec::new();
    let mut cur: Option<Word> = None;
    fn lit(w: &mut Word, ch: char) {
        if let Some(Part::Lit(s)) = w.parts.last_mut() {
            s.push(ch);
        } else {
            w.parts.push(Part::Lit(ch.to_string()));
        }
    }
    fn read_var(c: &[char], i: &mut usize, w: &mut Word) {
        // at '$'
        *i += 1;
        if *i >= c.len() {
            lit(w, '$');
            return;
        }
        if c[*i] == '{' {
            let start = *i + 1;
            while *i < c.len() && c[*i] != '}' {
                *i += 1;
            }
            let inner: String = c[start..(*i).min(c.len())].iter().collect();
            *i += 1;
            let name: String = inner
                .chars()
                .take_while(|x| x.is_alphanumeric() || *x == '_')
                .collect();
            w.parts.push(Part::Var(name));
        } else if c[*i] == '(' {
            let mut depth = 0;
            let start = *i;
            while *i < c.len() {
                if c[*i] == '(' {
                    depth += 1;
                } else if c[*i] == ')' {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                *i += 1;
            }
            let raw: String = c[start..(*i).min(c.len())].iter().collect();
            *i += 1;
            w.parts.push(Part::Lit(format!("${raw})")));
        } else if c[*i].is_alphanumeric() || c[*i] == '_' {
            let start = *i;
            while *i < c.len() && (c[*i].is_alphanumeric() || c[*i] == '_') {
                *i += 1;
            }
            w.parts.push(Part::Var(c[start..*i].iter().collect()));
        } else {
            // $!, $$, $?, $*, $@
            w.parts.push(Part::Var(c[*i].to_string()));
            *i += 1;
        }
    }
    let flush = |cur: &mut Option<Word>, toks: &mut Vec<Tok>| {
        if let Some(w) = cur.take() {
            toks.push(Tok::W(w));
        }
    };
    while i < c.len() {
        let ch = c[i];
        match ch {
            ' ' | '\t' => {
                flush(&mut cur, &mut toks);
                i += 1;
            }
            '\\' if i + 1 < c.len() && c[i + 1] == '\n' => i += 2,
            '\n' => {
                flush(&mut cur, &mut toks);
                toks.push(Tok::Newline);
                i += 1;
                for delim in std::mem::take(&mut pending_heredocs) {
                    let mut body = String::new();
                    loop {
                        if i >= c.len() {
                            break;
                        }
                        let start = i;
                        while i < c.len() && c[i] != '\n' {
                            i += 1;
                        }
                        let line: String = c[start..i].iter().collect();
                        i += 1;
                        if line == delim {
                            break;
                        }
                        body.push_str(&line);
                        body.push('\n');
                    }
                    toks.push(Tok::Heredoc(body));
                }
            }
            '#' if cur.is_none() => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '\'' => {
                let w = cur.get_or_insert(Word {
                    parts: vec![],
                    quoted: false,
                });
                w.quoted = true;
                if !matches!(w.parts.last(), Some(Part::Lit(_))) {
                    w.parts.push(Part::Lit(String::new()));
                }
                i += 1;
                while i < c.len() && c[i] != '\'' {
                    lit(w, c[i]);
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                let w = cur.get_or_insert(Word {
                    parts: vec![],
                    quoted: false,
                });
                w.quoted = true;
                if !matches!(w.parts.last(), Some(Part::Lit(_))) {
                    w.parts.push(Part::Lit(String::new()));
                }
                i += 1;
                while i < c.len() && c[i] != '"' {
                    if c[i] == '\\' && i + 1 < c.len() && matches!(c[i + 1], '"' | '\\' | '$' | '`')
                    {
                        lit(w, c[i + 1]);
                        i += 2;
                    } else if c[i] == '$' {
                        read_var(&c, &mut i, w);
                    } else {
                        lit(w, c[i]);
                        i += 1;
                    }
                }
                i += 1;
            }
            '\\' => {
                let w = cur.get_or_insert(Word {
                    parts: vec![],
                    quoted: false,
                });
                w.quoted = true;
                if i + 1 < c.len() {
                    lit(w, c[i + 1]);
                }
                i += 2;
            }
            '$' => {
                let w = cur.get_or_insert(Word {
                    parts: vec![],
                    quoted: false,
                });
                read_var(&c, &mut i, w);
            }
            ';' | '&' | '|' | '(' | ')' => {
                // `2>` style fd numbers are dropped with the redirection below
                flush(&mut cur, &mut toks);
                let two: String = c[i..(i + 2).min(c.len())].iter().collect();
                let op: &'static str = match (ch, two.as_str()) {
                    (_, "&&") => "&&",
                    (_, "||") => "||",
                    (_, ";;") => ";;",
                    (';', _) => ";",
                    ('&', _) => "&",
                    ('|', _) => "|",
                    ('(', _) => "(",
                    _ => ")",
                };
                i += op.len();
                toks.push(Tok::Op(op));
            }
            '<' | '>' => {
                if cur
                    .as_ref()
                    .and_then(Word::plain)
                    .is_some_and(|s| s.chars().all(|x| x.is_ascii_digit()))
                {
                    cur = None;
                }
                flush(&mut cur, &mut toks);
                let two: String = c[i..(i + 2).min(c.len())].iter().collect();
                if two == "<<" {
                    i += 2;
                    while i < c.len() && c[i] == ' ' {
                        i += 1;
                    }
                    let start = i;
                    while i < c.len() && !c[i].is_whitespace() {
                        i += 1;
                    }
                    let d: String = c[start..i]
                        .iter()
                        .filter(|x| **x != '\'' && **x != '"')
                        .collect();
                    pending_heredocs.push(d);
                } else if two == ">>" {
                    toks.push(Tok::Op(">>"));
                    i += 2;
                } else if two == ">&" {
                    toks.push(Tok::Op(">&"));
                    i += 2;
                } else {
                    toks.push(Tok::Op(if ch == '<' { "<" } else { ">" }));
                    i += 1;
                }
            }
            _ => {
                let w = cur.get_or_insert(Word {
                    parts: vec![],
                    quoted: false,
                });
                lit(w, ch);
                i += 1;
            }
        }
    }
    flush(&mut cur, &mut toks);
    toks
}

#[derive(Clone, Debug)]
enum Node {
    Simple {
        words: Vec<Word>,
        stdin_file: Option<Word>,
        stdout_file: Option<Word>,
        heredoc: Option<String>,
    },
    For {
        var: String,
        items: Vec<Word>,
        body: Vec<Node>,
    },
    /// while/if/case/function bodies: not interpreted.
    Skipped,
}

fn is_kw(t: &Tok, kw: &str) -> bool {
    matches!(t, Tok::W(w) if w.plain() == Some(kw))
}

/// Parse commands until one of `ends` (a keyword at command position) or the end.
fn parse_list(t: &[Tok], pos: &mut usize, ends: &[&str]) -> Vec<Node> {
    let mut nodes = Vec::new();
    loop {
        while *pos < t.len()
            && matches!(
                t[*pos],
                Tok::Newline | Tok::Op(";") | Tok::Op("&") | Tok::Heredoc(_)
            )
        {
            *pos += 1;
        }
        if *pos >= t.len() {
            return nodes;
        }
        if ends.iter().any(|e| is_kw(&t[*pos], e)) {
            return nodes;
        }
        if is_kw(&t[*pos], "for") {
            *pos += 1;
            let var = match t.get(*pos) {
                Some(Tok::W(w)) => w.plain().unwrap_or_default().to_string(),
                _ => String::new(),
            };
            *pos += 1;
            let mut items = Vec::new();
            if is_kw(&t[(*pos).min(t.len() - 1)], "in") {
                *pos += 1;
                while let Some(Tok::W(w)) = t.get(*pos) {
                    items.push(w.clone());
                    *pos += 1;
                }
            }
            while *pos < t.len() && !is_kw(&t[*pos], "do") {
                *pos += 1;
            }
            *pos += 1;
            let body = parse_list(t, pos, &["done"]);
            *pos += 1;
            nodes.push(Node::For { var, items, body });
            continue;
        }
        let opener = ["while", "until", "if", "case", "{"]
            .iter()
            .find(|k| is_kw(&t[*pos], k));
        let is_func = matches!(
            (t.get(*pos + 1), t.get(*pos + 2)),
            (Some(Tok::Op("(")), Some(Tok::Op(")")))
        );
        if opener.is_some() || is_func {
            skip_compound(t, pos);
            nodes.push(Node::Skipped);
            continue;
        }
        // a pipeline: keep the first simple command
        let mut words = Vec::new();
        let (mut stdin_file, mut stdout_file, mut heredoc) = (None, None, None);
        let mut first = true;
        while *pos < t.len() {
            match &t[*pos] {
                Tok::W(w) => {
                    if first {
                        words.push(w.clone());
                    }
                    *pos += 1;
                }
                Tok::Op("<") => {
                    if let (Some(Tok::W(w)), true) = (t.get(*pos + 1), first) {
                        stdin_file = Some(w.clone());
                    }
                    *pos += 2;
                }
                Tok::Op(">") | Tok::Op(">>") | Tok::Op(">&") => {
                    if let (Some(Tok::W(w)), true) = (t.get(*pos + 1), first) {
                        stdout_file = Some(w.clone());
                    }
                    *pos += 2;
                }
                Tok::Op("|") | Tok::Op("&&") | Tok::Op("||") => {
                    first = false;
                    *pos += 1;
                }
                Tok::Op(_) | Tok::Newline => break,
                Tok::Heredoc(_) => break,
            }
        }
        // a heredoc belongs to the command on the line it was announced on
        let mut k = *pos;
        while k < t.len() && !matches!(t[k], Tok::Newline) {
            k += 1;
        }
        if let (Some(Tok::Heredoc(b)), false) = (t.get(k + 1), words.is_empty()) {
            heredoc = Some(b.clone());
        }
        nodes.push(Node::Simple {
            words,
            stdin_file,
            stdout_file,
            heredoc,
        });
    }
}

fn skip_compound(t: &[Tok], pos: &mut usize) {
    let mut depth = 0i32;
    while *pos < t.len() {
        if let Tok::W(w) = &t[*pos] {
            match w.plain() {
                Some("while" | "until" | "for" | "if" | "case" | "{") => depth += 1,
                Some("done" | "fi" | "esac" | "}") => {
                    depth -= 1;
                    if depth <= 0 {
                        *pos += 1;
                        return;
                    }
                }
                _ => {}
            }
        }
        *pos += 1;
    }
}

// ---------- execution ----------

struct Runner<'a> {
    case: String,
    vars: HashMap<String, String>,
    files: HashMap<String, String>,
    names: Names,
    backend: MemBackend,
    blocks: std::vec::IntoIter<Block>,
    traffic: bool,
    compared: usize,
    skipped: Vec<String>,
    failures: &'a mut Vec<String>,
    broken: bool,
}

fn printf_unescape(s: &str) -> String {
    let mut o = String::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('n') => o.push('\n'),
                Some('t') => o.push('\t'),
                Some('\\') => o.push('\\'),
                Some(x) => {
                    o.push('\\');
                    o.push(x);
                }
                None => o.push('\\'),
            }
        } else {
            o.push(c);
        }
    }
    o
}

fn is_listing(args: &[String]) -> bool {
    if args.is_empty() {
        return true;
    }
    let a = &args[0];
    let list = a == "--list"
        || (a.starts_with('-')
            && !a.starts_with("--")
            && (a[1..].starts_with('L') || a[1..].starts_with('l')));
    list && !args.iter().any(|x| x == "--timeout" || x == "--daemon")
}

impl Runner<'_> {
    fn expand(&self, w: &Word) -> Option<String> {
        let mut s = String::new();
        for p in &w.parts {
            match p {
                Part::Lit(l) => s.push_str(l),
                Part::Var(v) => s.push_str(self.vars.get(v).map(String::as_str).unwrap_or("")),
            }
        }
        if s.is_empty() && !w.quoted {
            None
        } else {
            Some(s)
        }
    }

    fn exec(&mut self, nodes: &[Node]) {
        for n in nodes {
            if self.broken {
                return;
            }
            match n {
                Node::Skipped => {}
                Node::For { var, items, body } => {
                    let items: Vec<String> = items.iter().filter_map(|w| self.expand(w)).collect();
                    for it in items {
                        self.vars.insert(var.clone(), it);
                        self.exec(body);
                    }
                }
                Node::Simple {
                    words,
                    stdin_file,
                    stdout_file,
                    heredoc,
                } => {
                    let words: Vec<String> = words.iter().filter_map(|w| self.expand(w)).collect();
                    let stdin_file = stdin_file.as_ref().and_then(|w| self.expand(w));
                    let stdout_file = stdout_file.as_ref().and_then(|w| self.expand(w));
                    self.simple(words, stdin_file, stdout_file, heredoc.clone());
                }
            }
        }
    }

    fn run_ipvsadm(&mut self, args: &[String], stdin: &str) -> Block {
        let mut input = std::io::Cursor::new(stdin.as_bytes().to_vec());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let rc = run_with_names(
            args,
            &self.names,
            &mut input,
            &mut out,
            &mut err,
            &mut self.backend,
        );
        Block {
            cmd: String::new(),
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            kernel: self.backend.take_kernel_log(),
            rc,
        }
    }

    fn simple(
        &mut self,
        words: Vec<String>,
        stdin_file: Option<String>,
        stdout_file: Option<String>,
        heredoc: Option<String>,
    ) {
        if words.is_empty() {
            return;
        }
        if words
            .iter()
            .all(|w| w.contains('=') && !w.starts_with('-') && !w.starts_with('='))
        {
            for w in &words {
                if let Some((k, v)) = w.split_once('=') {
                    self.vars.insert(k.to_string(), v.to_string());
                }
            }
            return;
        }
        let (recorded, cmd) = if words[0] == "run" {
            (true, words[1..].to_vec())
        } else {
            (false, words.clone())
        };
        if cmd.is_empty() {
            return;
        }
        if cmd[0] == "pick" || cmd.iter().any(|w| w == "conn") {
            self.traffic = true;
        }
        let stdin = match (&heredoc, &stdin_file) {
            (Some(h), _) => h.clone(),
            (None, Some(f)) if f == "/dev/null" => String::new(),
            (None, Some(f)) => self.files.get(f).cloned().unwrap_or_default(),
            (None, None) => String::new(),
        };
        let mut supported = true;
        let result = match cmd[0].as_str() {
            "ipvsadm" => Some(self.run_ipvsadm(&cmd[1..], &stdin)),
            "printf" if cmd.len() >= 2 => {
                let text = printf_unescape(&cmd[1]);
                if let Some(f) = &stdout_file {
                    self.files.insert(f.clone(), text);
                    if f == "/etc/hosts" || f == "/etc/services" {
                        let h = self.files.get("/etc/hosts").cloned().unwrap_or_default();
                        let s = self.files.get("/etc/services").cloned().unwrap_or_default();
                        self.names = Names::from_strs(&h, &s);
                    }
                }
                None
            }
            "cat" if recorded && cmd.len() == 2 => {
                let snap = self.backend.table.snapshot(self.backend.conn_tab_size);
                let text = match cmd[1].as_str() {
                    "/proc/net/ip_vs" => Some(proc::ip_vs(&snap)),
                    "/proc/net/ip_vs_stats" => Some(proc::ip_vs_stats(&snap)),
                    "/proc/net/ip_vs_conn" => Some(proc::ip_vs_conn(&self.backend.conns)),
                    "/proc/net/ip_vs_conn_sync" => Some(proc::ip_vs_conn_sync(&self.backend.conns)),
                    _ => None,
                };
                supported = text.is_some();
                text.map(|t| Block {
                    stdout: t,
                    ..Block::default()
                })
            }
            "cmp" if cmd.len() == 3 => {
                let same = self.files.get(&cmd[1]) == self.files.get(&cmd[2]);
                Some(Block {
                    stdout: if same {
                        String::new()
                    } else {
                        format!("{} {} differ\n", cmd[1], cmd[2])
                    },
                    rc: i32::from(!same),
                    ..Block::default()
                })
            }
            _ => {
                supported = false;
                None
            }
        };
        if let (Some(f), Some(r)) = (&stdout_file, &result) {
            self.files.insert(f.clone(), r.stdout.clone());
        }
        if !recorded {
            return;
        }
        let shown = cmd.join(" ");
        let Some(expected) = self.blocks.next() else {
            self.failures.push(format!(
                "{}: no recorded block left for `{shown}`",
                self.case
            ));
            self.broken = true;
            return;
        };
        if expected.cmd != shown {
            self.failures.push(format!(
                "{}: lost track of the blocks: script runs `{shown}`, next block is `{}`",
                self.case, expected.cmd
            ));
            self.broken = true;
            return;
        }
        let depends_on_traffic = match cmd[0].as_str() {
            "ipvsadm" => is_listing(&cmd[1..]),
            "cat" => true,
            _ => false,
        };
        let Some(got) = result.filter(|_| supported) else {
            self.skipped
                .push(format!("{}: `{shown}` (not replayable offline)", self.case));
            return;
        };
        if self.traffic && depends_on_traffic {
            self.skipped
                .push(format!("{}: `{shown}` (depends on traffic)", self.case));
            return;
        }
        self.compared += 1;
        let mut diffs = Vec::new();
        if got.stdout != expected.stdout {
            diffs.push(format!(
                "stdout:\n--- expected\n{}--- got\n{}",
                expected.stdout, got.stdout
            ));
        }
        if got.stderr != expected.stderr {
            diffs.push(format!(
                "stderr:\n--- expected\n{}--- got\n{}",
                expected.stderr, got.stderr
            ));
        }
        if got.kernel != expected.kernel {
            diffs.push(format!(
                "kernel: expected {:?}, got {:?}",
                expected.kernel, got.kernel
            ));
        }
        if got.rc != expected.rc {
            diffs.push(format!("rc: expected {}, got {}", expected.rc, got.rc));
        }
        if !diffs.is_empty() {
            self.failures
                .push(format!("{}: `{shown}`\n{}", self.case, diffs.join("\n")));
        }
    }
}

fn script_body(sh: &str) -> Option<&str> {
    let marker = "# --- end of common preamble ---";
    let i = sh.find(marker)?;
    let mut body = &sh[i + marker.len()..];
    // the real-servers preamble only sets up the network
    let (rs, rs_end) = (
        "# --- real servers preamble ---",
        "# --- end of real servers preamble ---",
    );
    if let (Some(a), Some(b)) = (body.find(rs), body.find(rs_end))
        && a < b
    {
        body = &body[b + rs_end.len()..];
    }
    Some(body)
}

#[test]
fn oracle_fmt_and_err_blocks() {
    let dir = cases_dir();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("oracle cases not found at {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (n.starts_with("fmt-") || n.starts_with("err-")) && n.ends_with(".sh")
        })
        .collect();
    entries.sort();
    assert!(
        !entries.is_empty(),
        "no fmt-/err- cases in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    let mut compared = 0;
    for sh_path in &entries {
        let case = sh_path.file_stem().unwrap().to_string_lossy().into_owned();
        let sh = std::fs::read_to_string(sh_path).unwrap();
        let out = std::fs::read_to_string(sh_path.with_extension("out")).unwrap();
        let Some(body) = script_body(&sh) else {
            failures.push(format!("{case}: no common preamble marker"));
            continue;
        };
        let toks = tokenize(body);
        let mut pos = 0;
        let nodes = parse_list(&toks, &mut pos, &[]);
        let mut r = Runner {
            case: case.clone(),
            vars: HashMap::new(),
            files: HashMap::new(),
            names: Names::empty(),
            backend: MemBackend::new(),
            blocks: parse_out(&out).into_iter(),
            traffic: false,
            compared: 0,
            skipped: Vec::new(),
            failures: &mut failures,
            broken: false,
        };
        r.exec(&nodes);
        if !r.broken {
            let left: Vec<String> = r.blocks.by_ref().map(|b| b.cmd).collect();
            if !left.is_empty() {
                r.failures
                    .push(format!("{case}: blocks never reached: {left:?}"));
            }
        }
        compared += r.compared;
        skipped.extend(r.skipped);
    }
    println!(
        "oracle: {} cases, {compared} blocks compared, {} skipped",
        entries.len(),
        skipped.len()
    );
    for s in &skipped {
        println!("  skipped {s}");
    }
    for f in &failures {
        println!("MISMATCH {f}\n");
    }
    assert!(
        failures.is_empty(),
        "{} oracle block(s) differ (see output above)",
        failures.len()
    );
}

#[test]
fn shell_tokenizer_basics() {
    let t = tokenize("run ipvsadm -A -t '' -s rr\nfor i in 1 2; do run x $i; done\n");
    let mut pos = 0;
    let nodes = parse_list(&t, &mut pos, &[]);
    assert_eq!(nodes.len(), 2);
    match &nodes[0] {
        Node::Simple { words, .. } => {
            assert_eq!(words.len(), 7);
            assert!(words[4].quoted);
        }
        other => panic!("{other:?}"),
    }
    let t = tokenize("run ipvsadm -R <<'END'\n-A -t x\nEND\nrun ipvsadm -Ln\n");
    let mut pos = 0;
    let nodes = parse_list(&t, &mut pos, &[]);
    assert_eq!(nodes.len(), 2);
    match &nodes[0] {
        Node::Simple { heredoc, .. } => assert_eq!(heredoc.as_deref(), Some("-A -t x\n")),
        other => panic!("{other:?}"),
    }
}
