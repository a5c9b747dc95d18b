//! `ipvsadm -R` exactly as 1.31 does it (`config_stream_read` + `restore_table`), and
//! rvs's own all-or-nothing restore.

use crate::errors::{Call, strerror};
use crate::names::Names;
use crate::parse;
use crate::{Backend, BackendError, Ctx, Flow};
use rvs_core::Op;
use std::cell::RefCell;
use std::io::{BufRead, Write};

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn peek(r: &mut dyn BufRead) -> Option<u8> {
    match r.fill_buf() {
        Ok(b) if !b.is_empty() => Some(b[0]),
        _ => None,
    }
}

fn getc(r: &mut dyn BufRead) -> Option<u8> {
    let c = peek(r)?;
    r.consume(1);
    Some(c)
}

/// `config_stream_read`: the words of the next line, `None` at the end of the input.
/// Reproduces the original's quirks: words are split on spaces, tabs and carriage returns;
/// a word `ipvsadm` is dropped; there is no comment syntax (its `#` test looks at the
/// separator, never at the word); whitespace followed by the end of the input without a
/// newline loses the whole line.
pub(crate) fn config_stream_read(r: &mut dyn BufRead) -> Option<Vec<String>> {
    // The original scans with `fscanf("%4096[^ \t\n\r]%1[ \t\n\r]")`: a word of at most
    // 4,096 bytes (a longer one continues as the next word), then one separator.
    const MAX_WORD: usize = 4096;
    let mut words = Vec::new();
    let mut ntoken = 0;
    // `fscanf` returning EOF ends the line: at the end of the input, what was read counts.
    while let Some(c) = peek(r) {
        if is_ws(c) {
            // No word here: skip blanks to the end of the line; the end of the input in
            // this loop loses the line.
            loop {
                match peek(r) {
                    None => return None,
                    Some(b'\n') => {
                        r.consume(1);
                        return Some(words);
                    }
                    Some(b' ' | b'\t' | b'\r') => r.consume(1),
                    Some(_) => break,
                }
            }
            continue;
        }
        let mut word = Vec::new();
        while let Some(c) = peek(r) {
            if is_ws(c) || word.len() == MAX_WORD {
                break;
            }
            word.push(c);
            r.consume(1);
        }
        // The separator is taken only if it is there (a cut word or the end of input has
        // none).
        let tail = match peek(r) {
            Some(c) if is_ws(c) => getc(r),
            _ => None,
        };
        let w = String::from_utf8_lossy(&word).into_owned();
        if w != "ipvsadm" {
            ntoken += 1;
            words.push(w);
        }
        if tail == Some(b'\n') {
            return Some(words);
        }
    }
    if ntoken == 0 { None } else { Some(words) }
}

/// `restore_table`: each line is one ipvsadm invocation; kernel errors do not stop it, but
/// anything that makes ipvsadm exit (`fail`, "Try ...", a failed listing) ends it all.
///
/// Streamed: consecutive lines that are plain table operations are parsed ahead and sent
/// together with [`Backend::apply_each`] (up to [`Backend::pending_ops`] at a time); each
/// result is then reported exactly as the line-by-line run would have reported it. Pending
/// operations are sent before any other line (a listing, a save, a line that does not
/// parse or prints anything) is carried out, so everything is seen and printed in the
/// original order.
pub(crate) fn restore_table(
    ctx: &Ctx,
    stdin: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    backend: &mut dyn Backend,
    reading_stdin: bool,
) -> Flow {
    if reading_stdin {
        return parse::tryhelp(err);
    }
    let limit = backend.pending_ops().max(1);
    let mut pending = Pending::default();
    let mut result = 0;
    while let Some(words) = config_stream_read(stdin) {
        if words.is_empty() {
            continue;
        }
        let held = RefCell::new(Vec::new());
        let parsed = parse::parse(
            &words,
            ctx,
            &mut Held {
                log: &held,
                to_err: false,
            },
            &mut Held {
                log: &held,
                to_err: true,
            },
        );
        let held = held.into_inner();
        if held.is_empty()
            && let Ok(p) = &parsed
            && let Some((op, call)) = crate::op_of(p)
        {
            pending.ops.push(op);
            pending.calls.push(call);
            if pending.ops.len() >= limit {
                // The previous run's messages first, then this run goes out; the next lines
                // are parsed while the table works on it.
                match pending.finish(backend, err) {
                    Ok(r) => result = r.unwrap_or(result),
                    Err(f) => return f,
                }
                match pending.start(backend, err) {
                    Ok(r) => result = r.unwrap_or(result),
                    Err(f) => return f,
                }
            }
            continue;
        }
        // This line sets the result itself, so the pending ones' results are not needed.
        if let Err(f) = pending.send(backend, err) {
            return f;
        }
        for (to_err, bytes) in &held {
            let w: &mut dyn Write = if *to_err { &mut *err } else { &mut *out };
            let _ = w.write_all(bytes);
        }
        let flow = match parsed {
            Ok(p) => crate::execute(&p, ctx, stdin, out, err, backend, true),
            Err(f) => f,
        };
        match flow {
            Flow::Exit(c) => return Flow::Exit(c),
            Flow::Ret(r) => result = r,
        }
    }
    match pending.send(backend, err) {
        Ok(r) => Flow::Ret(r.unwrap_or(result)),
        Err(f) => f,
    }
}

/// Table operations parsed but not sent yet, with the libipvs call each stands for (its
/// error message depends on it), and the calls of a run sent but not answered yet.
#[derive(Default)]
struct Pending {
    ops: Vec<Op>,
    calls: Vec<Call>,
    outstanding: Option<Vec<Call>>,
}

impl Pending {
    /// Send the pending operations and report each result as `process_options` would
    /// (after the outstanding run's). Returns the last operation's result (None when
    /// nothing was pending), or how the run ends when the backend failed.
    fn send(
        &mut self,
        backend: &mut dyn Backend,
        err: &mut dyn Write,
    ) -> Result<Option<i32>, Flow> {
        let before = self.finish(backend, err)?;
        if self.ops.is_empty() {
            return Ok(before);
        }
        let results = backend.apply_each(&self.ops);
        self.ops.clear();
        let calls = std::mem::take(&mut self.calls);
        report(calls, results, err)
    }

    /// Send the pending operations without waiting for the answer when the backend can;
    /// their results are reported by the next [`Pending::finish`] (or at once).
    fn start(
        &mut self,
        backend: &mut dyn Backend,
        err: &mut dyn Write,
    ) -> Result<Option<i32>, Flow> {
        if self.ops.is_empty() {
            return Ok(None);
        }
        let started = backend.start_each(&self.ops);
        self.ops.clear();
        let calls = std::mem::take(&mut self.calls);
        match started {
            Ok(None) => {
                self.outstanding = Some(calls);
                Ok(None)
            }
            Ok(Some(results)) => report(calls, Ok(results), err),
            Err(e) => report(calls, Err(e), err),
        }
    }

    /// Report the outstanding run's results, if one is outstanding.
    fn finish(
        &mut self,
        backend: &mut dyn Backend,
        err: &mut dyn Write,
    ) -> Result<Option<i32>, Flow> {
        match self.outstanding.take() {
            Some(calls) => report(calls, backend.finish_each(), err),
            None => Ok(None),
        }
    }
}

/// Report each result of a run as `process_options` would have, one line at a time.
fn report(
    calls: Vec<Call>,
    results: Result<Vec<Result<(), rvs_core::CtlError>>, BackendError>,
    err: &mut dyn Write,
) -> Result<Option<i32>, Flow> {
    let results = match results {
        Ok(r) => r,
        Err(e) => {
            crate::backend_failure(err, &e);
            return Err(Flow::Exit(2));
        }
    };
    let mut last = 0;
    for (i, call) in calls.into_iter().enumerate() {
        match results.get(i) {
            Some(Ok(())) => last = 0,
            Some(Err(e)) => {
                let _ = writeln!(err, "{}", strerror(call, e.errno));
                last = -1;
            }
            None => {
                let e = BackendError(format!(
                    "rvs: the table answered {} results for {} operations",
                    results.len(),
                    i + 1
                ));
                crate::backend_failure(err, &e);
                return Err(Flow::Exit(2));
            }
        }
    }
    Ok(Some(last))
}

/// What a parse printed, in order, held back while earlier lines' operations are pending.
struct Held<'a> {
    log: &'a RefCell<Vec<(bool, Vec<u8>)>>,
    to_err: bool,
}

impl Write for Held<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut log = self.log.borrow_mut();
        match log.last_mut() {
            Some((e, v)) if *e == self.to_err => v.extend_from_slice(buf),
            _ => log.push((self.to_err, buf.to_vec())),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// rvs's all-or-nothing restore: every line is parsed first, then all operations are
/// applied as one batch, so a bad line (parse or kernel error) leaves the table unchanged.
/// Lines use the `-R` syntax (so `ipvsadm -S` output restores), blank lines and lines
/// whose first word starts with `#` are skipped, and only commands that change the table
/// are allowed. Errors are reported as `ipvsadm: line N: <message>`. Returns 0, 2 (a line
/// did not parse) or 255 (the table rejected a line).
pub fn restore_atomic(
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    err: &mut dyn Write,
    backend: &mut dyn Backend,
) -> i32 {
    restore_atomic_with_names(input, out, err, backend, &Names::from_system())
}

/// [`restore_atomic`] with explicit name tables.
pub fn restore_atomic_with_names(
    input: &mut dyn BufRead,
    _out: &mut dyn Write,
    err: &mut dyn Write,
    backend: &mut dyn Backend,
    names: &Names,
) -> i32 {
    let ctx = Ctx::with_names(names);
    let mut text = Vec::new();
    if input.read_to_end(&mut text).is_err() {
        let _ = writeln!(err, "ipvsadm: cannot read the input");
        return 2;
    }
    let text = String::from_utf8_lossy(&text);
    let mut ops = Vec::new();
    for (n, line) in text.split('\n').enumerate() {
        let lineno = n + 1;
        let words: Vec<String> = line
            .split([' ', '\t', '\r'])
            .filter(|w| !w.is_empty() && *w != "ipvsadm")
            .map(str::to_string)
            .collect();
        if words.is_empty() || words[0].starts_with('#') {
            continue;
        }
        let mut msg = Vec::new();
        let mut sink = Vec::new();
        let parsed = parse::parse(&words, &ctx, &mut sink, &mut msg);
        let report = |err: &mut dyn Write, m: &str| {
            let _ = writeln!(err, "ipvsadm: line {lineno}: {m}");
        };
        let p = match parsed {
            Ok(p) => p,
            Err(_) => {
                let m = String::from_utf8_lossy(&msg);
                let m = m.trim_end();
                report(
                    err,
                    if m.is_empty() {
                        "command not allowed in a restore"
                    } else {
                        m
                    },
                );
                return 2;
            }
        };
        match crate::op_of(&p) {
            Some((op, call)) => ops.push((op, call, lineno)),
            None => {
                report(err, "command not allowed in a restore");
                return 2;
            }
        }
    }
    let batch: Vec<rvs_core::Op> = ops.iter().map(|(op, _, _)| op.clone()).collect();
    match backend.apply_batch(&batch) {
        Ok(Ok(())) => 0,
        Ok(Err((i, e))) => {
            let (call, lineno) = ops
                .get(i)
                .map(|(_, c, l)| (*c, *l))
                .unwrap_or((crate::errors::Call::Flush, 0));
            let _ = writeln!(err, "ipvsadm: line {lineno}: {}", strerror(call, e.errno));
            255
        }
        Err(e) => {
            crate::backend_failure(err, &e);
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &str) -> Vec<Option<Vec<String>>> {
        let mut r = std::io::Cursor::new(input.as_bytes().to_vec());
        let mut v = Vec::new();
        loop {
            let x = config_stream_read(&mut r);
            let end = x.is_none();
            v.push(x);
            if end {
                break;
            }
        }
        v
    }

    fn w(s: &[&str]) -> Option<Vec<String>> {
        Some(s.iter().map(|x| x.to_string()).collect())
    }

    #[test]
    fn words_and_quirks() {
        assert_eq!(lines("-A -t x\n"), vec![w(&["-A", "-t", "x"]), None]);
        assert_eq!(lines("\n  \t-C\r\n"), vec![w(&[]), w(&["-C"]), None]);
        assert_eq!(
            lines("ipvsadm -C\n# c\n"),
            vec![w(&["-C"]), w(&["#", "c"]), None]
        );
        assert_eq!(lines("-C"), vec![w(&["-C"]), None]);
        // trailing blanks without a final newline lose the line, as in the original
        assert_eq!(lines("-C  "), vec![None]);
        assert_eq!(lines("ipvsadm"), vec![None]);
        assert_eq!(lines(""), vec![None]);
    }
}
