//! The part of libpopt that ipvsadm relies on: bundled short options (`-Ln`), long options
//! with `--name=value`, an optional argument that is only taken when the next word does not
//! start with `-`, `--` ending option processing, non-options collected as leftovers, and
//! the error codes and texts ipvsadm prints (`-w: missing argument`).

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ArgKind {
    None,
    Required,
    Optional,
}

#[derive(Copy, Clone, Debug)]
pub struct OptDef<T: Copy> {
    pub long: &'static str,
    pub short: Option<char>,
    pub arg: ArgKind,
    pub id: T,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PoptError {
    NoArg,
    BadOpt,
    UnwantedArg,
}

impl PoptError {
    /// `poptStrerror`.
    pub fn message(self) -> &'static str {
        match self {
            PoptError::NoArg => "missing argument",
            PoptError::BadOpt => "unknown option",
            PoptError::UnwantedArg => "option does not take an argument",
        }
    }
}

pub struct Popt<'a, T: Copy> {
    args: &'a [String],
    table: &'a [OptDef<T>],
    next: usize,
    /// Rest of a short-option bundle: (word index, byte offset). The offset may equal the
    /// word length: popt then holds an empty, non-NULL string.
    next_char: Option<(usize, usize)>,
    rest_leftover: bool,
    leftovers: Vec<String>,
    next_leftover: usize,
}

impl<'a, T: Copy> Popt<'a, T> {
    /// `args` excludes the program name.
    pub fn new(args: &'a [String], table: &'a [OptDef<T>]) -> Self {
        Popt {
            args,
            table,
            next: 0,
            next_char: None,
            rest_leftover: false,
            leftovers: Vec::new(),
            next_leftover: 0,
        }
    }

    /// `poptBadOption(con, POPT_BADOPTION_NOALIAS)`: the word last consumed.
    pub fn bad_option(&self) -> String {
        self.next
            .checked_sub(1)
            .and_then(|i| self.args.get(i))
            .cloned()
            .unwrap_or_default()
    }

    /// `poptGetArg`.
    pub fn get_arg(&mut self) -> Option<String> {
        let r = self.leftovers.get(self.next_leftover).cloned();
        if r.is_some() {
            self.next_leftover += 1;
        }
        r
    }

    /// `poptGetNextOpt`: `Ok(None)` at the end of the words.
    #[allow(clippy::type_complexity)]
    pub fn next_opt(&mut self) -> Result<Option<(T, Option<String>)>, PoptError> {
        loop {
            if self.next_char.is_none() && self.next >= self.args.len() {
                return Ok(None);
            }
            let mut opt: Option<&OptDef<T>> = None;
            let mut long_arg: Option<String> = None;
            if self.next_char.is_none() {
                let idx = self.next;
                let word = &self.args[idx];
                self.next += 1;
                if self.rest_leftover || !word.starts_with('-') || word == "-" {
                    self.leftovers.push(word.clone());
                    continue;
                }
                if word == "--" {
                    self.rest_leftover = true;
                    continue;
                }
                let (body, single_dash) = match word[1..].strip_prefix('-') {
                    Some(b) => (b, false),
                    None => (&word[1..], true),
                };
                let (name, arg) = match body.find('=') {
                    Some(i) => (&body[..i], Some(body[i + 1..].to_string())),
                    None => (body, None),
                };
                if !single_dash {
                    match self.table.iter().find(|o| o.long == name) {
                        Some(o) => {
                            opt = Some(o);
                            long_arg = arg;
                        }
                        None => return Err(PoptError::BadOpt),
                    }
                } else {
                    // No ipvsadm option is a one-dash long option: a bundle of short ones.
                    self.next_char = Some((idx, 1));
                }
            }
            if let Some((idx, off)) = self.next_char.take() {
                let word = &self.args[idx];
                let Some(ch) = word[off..].chars().next() else {
                    return Err(PoptError::BadOpt);
                };
                let Some(o) = self.table.iter().find(|o| o.short == Some(ch)) else {
                    return Err(PoptError::BadOpt);
                };
                opt = Some(o);
                let rest = off + ch.len_utf8();
                if rest < word.len() {
                    let skip = usize::from(word.as_bytes()[rest] == b'=');
                    self.next_char = Some((idx, rest + skip));
                }
            }
            let Some(opt) = opt else {
                return Err(PoptError::BadOpt);
            };
            match opt.arg {
                ArgKind::None => {
                    let eq_follows = self
                        .next_char
                        .is_some_and(|(i, o)| self.args[i].as_bytes().get(o) == Some(&b'='));
                    if long_arg.is_some() || eq_follows {
                        return Err(PoptError::UnwantedArg);
                    }
                    return Ok(Some((opt.id, None)));
                }
                ArgKind::Required | ArgKind::Optional => {
                    if long_arg.is_some() {
                        return Ok(Some((opt.id, long_arg)));
                    }
                    if let Some((i, o)) = self.next_char.take() {
                        let w = &self.args[i];
                        let skip = usize::from(w.as_bytes().get(o) == Some(&b'='));
                        return Ok(Some((opt.id, Some(w[o + skip..].to_string()))));
                    }
                    if self.next >= self.args.len() {
                        if opt.arg == ArgKind::Required {
                            return Err(PoptError::NoArg);
                        }
                        return Ok(Some((opt.id, None)));
                    }
                    let w = &self.args[self.next];
                    if opt.arg == ArgKind::Optional && w.starts_with('-') {
                        return Ok(Some((opt.id, None)));
                    }
                    self.next += 1;
                    return Ok(Some((opt.id, Some(w.clone()))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &[OptDef<char>] = &[
        OptDef {
            long: "list",
            short: Some('L'),
            arg: ArgKind::None,
            id: 'L',
        },
        OptDef {
            long: "numeric",
            short: Some('n'),
            arg: ArgKind::None,
            id: 'n',
        },
        OptDef {
            long: "weight",
            short: Some('w'),
            arg: ArgKind::Required,
            id: 'w',
        },
        OptDef {
            long: "persistent",
            short: Some('p'),
            arg: ArgKind::Optional,
            id: 'p',
        },
    ];

    #[allow(clippy::type_complexity)]
    fn all(
        words: &[&str],
    ) -> (
        Vec<(char, Option<String>)>,
        Result<(), (PoptError, String)>,
        Vec<String>,
    ) {
        let args: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        let mut p = Popt::new(&args, T);
        let mut got = Vec::new();
        let res = loop {
            match p.next_opt() {
                Ok(Some(x)) => got.push(x),
                Ok(None) => break Ok(()),
                Err(e) => break Err((e, p.bad_option())),
            }
        };
        let mut left = Vec::new();
        while let Some(a) = p.get_arg() {
            left.push(a);
        }
        (got, res, left)
    }

    #[test]
    fn bundles_and_args() {
        let (got, res, _) = all(&[
            "-Ln",
            "-w5",
            "-w",
            "-1",
            "--weight=7",
            "-p",
            "-n",
            "-p",
            "60",
        ]);
        assert!(res.is_ok());
        assert_eq!(
            got,
            vec![
                ('L', None),
                ('n', None),
                ('w', Some("5".into())),
                ('w', Some("-1".into())),
                ('w', Some("7".into())),
                ('p', None),
                ('n', None),
                ('p', Some("60".into())),
            ]
        );
    }

    #[test]
    fn errors() {
        assert_eq!(all(&["-L", "-w"]).1, Err((PoptError::NoArg, "-w".into())));
        assert_eq!(all(&["-Lq"]).1, Err((PoptError::BadOpt, "-Lq".into())));
        assert_eq!(all(&["--foo"]).1, Err((PoptError::BadOpt, "--foo".into())));
        assert_eq!(
            all(&["--list=x"]).1,
            Err((PoptError::UnwantedArg, "--list=x".into()))
        );
        assert_eq!(all(&["-L="]).1, Err((PoptError::BadOpt, "-L=".into())));
    }

    #[test]
    fn leftovers() {
        let (got, res, left) = all(&["a", "-L", "-", "--", "-n"]);
        assert!(res.is_ok());
        assert_eq!(got, vec![('L', None)]);
        assert_eq!(left, vec!["a", "-", "-n"]);
    }
}
