//! The inittab format.
//!
//! One entry per line, `id:action:command`:
//!
//! ```text
//! # Blank lines and lines whose first non-blank character is '#' are ignored.
//! rc:sysinit:/etc/init.d/rcS
//! hostd:respawn:/bin/hostd --port 443
//! motd:once:/bin/cat /etc/motd
//! console:askfirst:/bin/sh
//! ```
//!
//! - `id`: 1–32 characters from `A-Z a-z 0-9 _ - .`, unique in the file; used in logs.
//! - `action`:
//!   - `sysinit`: run before everything else, in file order; init waits for each.
//!   - `once`: started once after the sysinit entries; not waited for, not restarted.
//!   - `respawn`: a service, restarted whenever it exits, with exponential back-off
//!     (see [`super::backoff`]).
//!   - `console`: a program on the console (normally `/bin/sh`), restarted like
//!     `respawn`; it gets its own session with the console as controlling terminal.
//!   - `askfirst`: like `console`, but first prints "Please press Enter to activate
//!     this console." and waits for Enter.
//! - `command`: the rest of the line (it may contain `:`): a program path and its
//!   arguments, split on blanks; `'...'` and `"..."` quote (no escapes, no shell).
//!   Use `/bin/sh -c '...'` for shell syntax.
//!
//! A bad line is reported with its line number and skipped; the good lines still run.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Sysinit,
    Once,
    Respawn,
    Console,
    Askfirst,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "sysinit" => Action::Sysinit,
            "once" => Action::Once,
            "respawn" => Action::Respawn,
            "console" => Action::Console,
            "askfirst" => Action::Askfirst,
            _ => return None,
        })
    }

    /// Whether the entry is started again after it exits.
    pub fn restarts(self) -> bool {
        matches!(self, Action::Respawn | Action::Console | Action::Askfirst)
    }

    /// Whether the entry runs on the console as its controlling terminal.
    pub fn on_console(self) -> bool {
        matches!(self, Action::Console | Action::Askfirst)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub action: Action,
    /// Program and arguments; never empty.
    pub argv: Vec<String>,
    /// 1-based line in the file (0 for built-in entries).
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Parses a whole file: the valid entries in order, and one error per bad line.
pub fn parse(text: &str) -> (Vec<Entry>, Vec<ParseError>) {
    let mut entries: Vec<Entry> = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match parse_line(trimmed, line) {
            Ok(e) if entries.iter().any(|o| o.id == e.id) => {
                errors.push(ParseError { line, message: format!("duplicate id '{}'", e.id) })
            }
            Ok(e) => entries.push(e),
            Err(message) => errors.push(ParseError { line, message }),
        }
    }
    (entries, errors)
}

fn parse_line(s: &str, line: usize) -> Result<Entry, String> {
    let mut parts = s.splitn(3, ':');
    let (id, action, command) = match (parts.next(), parts.next(), parts.next()) {
        (Some(i), Some(a), Some(c)) => (i.trim(), a.trim(), c),
        _ => return Err(format!("expected id:action:command, got '{s}'")),
    };
    if id.is_empty() || id.len() > 32 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
        return Err(format!("bad id '{id}' (1-32 characters of A-Z a-z 0-9 _ - .)"));
    }
    let action = Action::parse(action)
        .ok_or_else(|| format!("unknown action '{action}' (sysinit, once, respawn, console, askfirst)"))?;
    let argv = split_command(command)?;
    if argv.is_empty() {
        return Err(format!("entry '{id}' has no command"));
    }
    Ok(Entry { id: id.to_string(), action, argv, line })
}

/// Splits a command on blanks, honouring `'...'` and `"..."` quotes.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                in_word = true;
            }
            None if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if let Some(q) = quote {
        return Err(format!("unterminated {q} quote"));
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// What runs when the configuration is missing or has no valid entry: a shell on
/// the console, restarted when it exits.
pub fn fallback() -> Vec<Entry> {
    vec![Entry { id: "console".into(), action: Action::Console, argv: vec!["/bin/sh".into()], line: 0 }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(words: &[&str]) -> Vec<String> {
        words.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_all_actions_in_order() {
        let text = "# comment\n\nrc:sysinit:/etc/rc\n  hostd:respawn:/bin/hostd --port 443\n\
                    motd:once:/bin/cat /etc/motd\ntty:console:/bin/sh\nask:askfirst:/bin/sh -l\n";
        let (entries, errors) = parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        let summary: Vec<(&str, Action, usize)> = entries.iter().map(|e| (e.id.as_str(), e.action, e.line)).collect();
        assert_eq!(
            summary,
            vec![
                ("rc", Action::Sysinit, 3),
                ("hostd", Action::Respawn, 4),
                ("motd", Action::Once, 5),
                ("tty", Action::Console, 6),
                ("ask", Action::Askfirst, 7),
            ]
        );
        assert_eq!(entries[1].argv, v(&["/bin/hostd", "--port", "443"]));
    }

    #[test]
    fn command_may_contain_colons_and_quotes() {
        let (e, errors) = parse("x:once:/bin/sh -c 'echo a:b; exit 3'  \"two words\"");
        assert!(errors.is_empty());
        assert_eq!(e[0].argv, v(&["/bin/sh", "-c", "echo a:b; exit 3", "two words"]));
    }

    #[test]
    fn split_command_edge_cases() {
        assert_eq!(split_command("  a   b\tc ").unwrap(), v(&["a", "b", "c"]));
        assert_eq!(split_command("''").unwrap(), v(&[""]));
        assert_eq!(split_command("pre'fix 'post").unwrap(), v(&["prefix post"]));
        assert_eq!(split_command("").unwrap(), Vec::<String>::new());
        assert!(split_command("a 'b").unwrap_err().contains("unterminated"));
    }

    #[test]
    fn bad_lines_reported_with_line_numbers_and_skipped() {
        let text = "ok:respawn:/bin/a\nnocolon\nbad id:once:/x\nx:sometimes:/x\nempty:once:   \n\
                    ok:once:/bin/dup\nq:once:/bin/a 'open\nfine:once:/bin/b\n";
        let (entries, errors) = parse(text);
        assert_eq!(entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), vec!["ok", "fine"]);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5, 6, 7]);
        assert!(errors[0].message.contains("expected id:action:command"));
        assert!(errors[1].message.contains("bad id"));
        assert!(errors[2].message.contains("unknown action 'sometimes'"));
        assert!(errors[3].message.contains("no command"));
        assert!(errors[4].message.contains("duplicate id 'ok'"));
        assert!(errors[5].message.contains("unterminated"));
        assert_eq!(errors[2].to_string(), format!("line 4: {}", errors[2].message));
    }

    #[test]
    fn restart_and_console_properties() {
        assert!(Action::Respawn.restarts() && Action::Console.restarts() && Action::Askfirst.restarts());
        assert!(!Action::Once.restarts() && !Action::Sysinit.restarts());
        assert!(Action::Askfirst.on_console() && !Action::Respawn.on_console());
    }

    #[test]
    fn fallback_is_a_console_shell() {
        let f = fallback();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].action, Action::Console);
        assert_eq!(f[0].argv, v(&["/bin/sh"]));
    }
}
