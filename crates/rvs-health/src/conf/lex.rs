//! keepalived's configuration syntax: words, quoted strings, `#`/`!` comments, `{`/`}`
//! blocks, `\` line continuations and `include` with globs, turned into a tree of
//! statements that remember their file and line.

use super::{Diag, Diags, Loc};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// How deep `include` may nest (keepalived stops runaway recursion too).
const MAX_INCLUDE_DEPTH: usize = 32;
/// Longest line read, as keepalived's `MAXBUF`-sized buffers bound it.
const MAX_LINE: usize = 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Eol,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    at: Loc,
}

/// One configuration line (its words) and, for a block, what is inside its braces.
#[derive(Clone, Debug)]
pub struct Stmt {
    pub words: Vec<String>,
    pub at: Loc,
    pub block: Option<Vec<Stmt>>,
}

impl Stmt {
    pub fn keyword(&self) -> &str {
        self.words.first().map(String::as_str).unwrap_or("")
    }
    /// Word `i` (0 is the keyword), if present.
    pub fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
}

/// Read `path` and everything it includes into a statement tree.
pub fn read_tree(path: &Path, diags: &mut Diags) -> Option<Vec<Stmt>> {
    let text = match std::fs::read(path) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) => {
            diags.push(Diag::error(
                None,
                format!("Unable to read configuration file {} ({e})", path.display()),
            ));
            return None;
        }
    };
    let mut toks = Vec::new();
    lex_text(&text, path, 0, &mut toks, diags);
    Some(build(&toks, diags))
}

/// Parse configuration text (as if read from `name`; includes are relative to its folder).
pub fn parse_text(text: &str, name: &Path, diags: &mut Diags) -> Vec<Stmt> {
    let mut toks = Vec::new();
    lex_text(text, name, 0, &mut toks, diags);
    build(&toks, diags)
}

fn lex_text(text: &str, file: &Path, depth: usize, out: &mut Vec<Token>, diags: &mut Diags) {
    let fname: Rc<str> = Rc::from(file.display().to_string());
    let mut pending = String::new();
    let mut first_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        if pending.is_empty() {
            first_line = line_no;
        }
        let raw = if raw.len() > MAX_LINE {
            diags.push(Diag::error(
                Some(Loc::new(&fname, line_no)),
                "line too long - ignoring",
            ));
            ""
        } else {
            raw
        };
        // A backslash at the end continues the line on the next one.
        if let Some(head) = raw.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(raw);
        let line = std::mem::take(&mut pending);
        let at = Loc::new(&fname, first_line);
        let words = split_line(&line, &at, diags);
        if words.first().map(|w| w == &Tok::Word("include".into())) == Some(true)
            && words.len() >= 2
        {
            for w in &words[1..] {
                if let Tok::Word(pattern) = w {
                    include(pattern, file, depth, &at, out, diags);
                }
            }
            continue;
        }
        out.extend(words.into_iter().map(|tok| Token {
            tok,
            at: at.clone(),
        }));
        out.push(Token {
            tok: Tok::Eol,
            at: at.clone(),
        });
    }
}

fn include(
    pattern: &str,
    from: &Path,
    depth: usize,
    at: &Loc,
    out: &mut Vec<Token>,
    diags: &mut Diags,
) {
    if depth >= MAX_INCLUDE_DEPTH {
        diags.push(Diag::error(
            Some(at.clone()),
            format!("include nesting too deep - ignoring {pattern}"),
        ));
        return;
    }
    // Relative patterns are relative to the including file's folder, as in keepalived.
    let full: PathBuf = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        from.parent().unwrap_or(Path::new(".")).join(pattern)
    };
    let full_s = full.to_string_lossy().into_owned();
    let mut files: Vec<PathBuf> = match glob::glob(&full_s) {
        Ok(paths) => paths
            .filter_map(Result::ok)
            .filter(|p| p.is_file())
            .collect(),
        Err(e) => {
            diags.push(Diag::error(
                Some(at.clone()),
                format!("Invalid include pattern {pattern}: {e}"),
            ));
            return;
        }
    };
    files.sort();
    if files.is_empty() {
        // keepalived goes on without a missing include (unless include_check is set).
        diags.push(Diag::warning(
            Some(at.clone()),
            format!("Unable to find configuration file {full_s}"),
        ));
        return;
    }
    for f in files {
        match std::fs::read(&f) {
            Ok(t) => lex_text(&String::from_utf8_lossy(&t), &f, depth + 1, out, diags),
            Err(e) => diags.push(Diag::error(
                Some(at.clone()),
                format!("Unable to read configuration file {} ({e})", f.display()),
            )),
        }
    }
}

/// Split one line into words; `{` and `}` are tokens of their own, `"..."` keeps spaces,
/// and `#` or `!` at the start of a word starts a comment.
fn split_line(line: &str, at: &Loc, diags: &mut Diags) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                in_word = true;
                let mut closed = false;
                for q in chars.by_ref() {
                    if q == '"' {
                        closed = true;
                        break;
                    }
                    cur.push(q);
                }
                if !closed {
                    diags.push(Diag::error(
                        Some(at.clone()),
                        format!("Unmatched quote: '{}'", line.trim()),
                    ));
                }
            }
            '#' | '!' if !in_word => break,
            '{' | '}' => {
                if in_word {
                    out.push(Tok::Word(std::mem::take(&mut cur)));
                    in_word = false;
                }
                out.push(if c == '{' { Tok::Open } else { Tok::Close });
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(Tok::Word(std::mem::take(&mut cur)));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(Tok::Word(cur));
    }
    out
}

fn build(toks: &[Token], diags: &mut Diags) -> Vec<Stmt> {
    let mut pos = 0;
    let mut top = Vec::new();
    loop {
        let closed = build_level(toks, &mut pos, &mut top, diags);
        match closed {
            None => break,
            Some(at) => {
                diags.push(Diag::error(Some(at), "Extra '}' found"));
            }
        }
    }
    top
}

/// Statements up to the matching `}` (returns its location) or the end (returns None).
fn build_level(
    toks: &[Token],
    pos: &mut usize,
    out: &mut Vec<Stmt>,
    diags: &mut Diags,
) -> Option<Loc> {
    let mut words: Vec<String> = Vec::new();
    let mut at: Option<Loc> = None;
    let flush = |words: &mut Vec<String>, at: &mut Option<Loc>, out: &mut Vec<Stmt>| {
        if let Some(a) = at.take()
            && !words.is_empty()
        {
            out.push(Stmt {
                words: std::mem::take(words),
                at: a,
                block: None,
            });
        }
    };
    while *pos < toks.len() {
        let t = &toks[*pos];
        *pos += 1;
        match &t.tok {
            Tok::Word(w) => {
                if at.is_none() {
                    at = Some(t.at.clone());
                }
                words.push(w.clone());
            }
            Tok::Eol => flush(&mut words, &mut at, out),
            Tok::Open => {
                let mut children = Vec::new();
                let open_at = t.at.clone();
                let end = build_level(toks, pos, &mut children, diags);
                if end.is_none() {
                    diags.push(Diag::error(
                        Some(open_at.clone()),
                        "There is 1 missing '}' or extra '{'",
                    ));
                }
                if words.is_empty() {
                    // `{` on its own line opens the block of the statement before it.
                    match out.last_mut() {
                        Some(prev) if prev.block.is_none() => prev.block = Some(children),
                        _ => diags.push(Diag::error(Some(open_at), "Unexpected '{' - ignoring")),
                    }
                } else {
                    out.push(Stmt {
                        words: std::mem::take(&mut words),
                        at: at.take().unwrap_or(open_at),
                        block: Some(children),
                    });
                }
                at = None;
            }
            Tok::Close => {
                flush(&mut words, &mut at, out);
                return Some(t.at.clone());
            }
        }
    }
    flush(&mut words, &mut at, out);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(s: &str) -> (Vec<Stmt>, Diags) {
        let mut d = Diags::default();
        let t = parse_text(s, Path::new("t.conf"), &mut d);
        (t, d)
    }

    #[test]
    fn words_comments_quotes_blocks() {
        let (t, d) = tree(
            "# comment\n! another\nvirtual_server 10.0.0.1 80 { # trailing\n  lb_algo rr\n  misc_path \"/bin/x a b\"\n}\n",
        );
        assert!(d.list.is_empty(), "{:?}", d.list);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].words, ["virtual_server", "10.0.0.1", "80"]);
        assert_eq!(t[0].at.line, 3);
        let b = t[0].block.as_ref().unwrap();
        assert_eq!(b[0].words, ["lb_algo", "rr"]);
        assert_eq!(b[1].words, ["misc_path", "/bin/x a b"]);
        assert_eq!(b[1].at.line, 5);
    }

    #[test]
    fn brace_on_next_line_and_one_line_blocks() {
        let (t, d) = tree("real_server 1.1.1.1 80\n{\n  url { path / }\n}\n");
        assert!(d.list.is_empty(), "{:?}", d.list);
        let b = t[0].block.as_ref().unwrap();
        assert_eq!(b[0].words, ["url"]);
        assert_eq!(b[0].block.as_ref().unwrap()[0].words, ["path", "/"]);
    }

    #[test]
    fn unbalanced_braces_are_errors() {
        let (_, d) = tree("a {\n b\n");
        assert!(d.has_errors());
        assert!(d.list[0].msg.contains("missing '}'"));
        let (_, d) = tree("a\n}\n");
        assert_eq!(d.list[0].msg, "Extra '}' found");
        assert_eq!(d.list[0].at.as_ref().unwrap().line, 2);
    }

    #[test]
    fn continuation_lines() {
        let (t, _) = tree("notify_up /bin/a \\\n  b c\nx\n");
        assert_eq!(t[0].words, ["notify_up", "/bin/a", "b", "c"]);
        assert_eq!(t[1].at.line, 3);
    }

    #[test]
    fn includes_with_globs_relative_to_the_including_file() {
        let dir = std::env::temp_dir().join(format!("rvs-health-inc-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(dir.join("conf.d/b.conf"), "second\n").unwrap();
        std::fs::write(dir.join("conf.d/a.conf"), "first\n").unwrap();
        std::fs::write(dir.join("main.conf"), "top\ninclude conf.d/*.conf\nlast\n").unwrap();
        let mut d = Diags::default();
        let t = read_tree(&dir.join("main.conf"), &mut d).unwrap();
        let kws: Vec<_> = t.iter().map(|s| s.keyword().to_string()).collect();
        assert_eq!(kws, ["top", "first", "second", "last"]);
        assert!(t[1].at.file.ends_with("conf.d/a.conf"));
        assert_eq!(t[3].at.line, 3);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
