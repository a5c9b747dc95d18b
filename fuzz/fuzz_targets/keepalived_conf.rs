//! rvs-health's keepalived.conf reader on arbitrary text. Relative `include`s resolve
//! under a folder that does not exist, so the file system stays out of it; inputs that
//! could include an absolute pattern are skipped (`include /*` read this machine's
//! initrd, tens of MB of binary lexed into tokens, several times: a 17-s, 700-MB input
//! that says nothing about the reader; regressions/keepalived_conf/timeout-58d7...).
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Whether `text` has the word `include` and a `/` where a word can start (the lexer splits
/// words on Unicode whitespace, `{` and `}`, and a word may open with a quote): an
/// over-approximation of every way an `include` line can carry an absolute pattern.
fn may_include_absolute(text: &str) -> bool {
    if !text.contains("include") {
        return false;
    }
    let mut prev = None;
    text.chars().any(|c| {
        let starts_word =
            prev.is_none_or(|p: char| p.is_whitespace() || matches!(p, '{' | '}' | '"'));
        prev = Some(c);
        c == '/' && starts_word
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if may_include_absolute(&text) {
        return;
    }
    let _ = rvs_health::conf::load_str(&text, "/nonexistent-rvs-fuzz/keepalived.conf");
});
