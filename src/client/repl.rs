//! Interactive mode (`mito client -i`): a `[mito::client]> ` prompt taking the same commands
//! as the command line, without the `mito client` prefix. Ctrl-D, `quit` or `exit` leave.
//!
//! ```text
//! [mito::client]> tasks submit -- echo "Hello, Mitosis!"
//! [mito::client]> groups get lab
//! [mito::client]> quit
//! ```
//!
//! Lines are split into words like a shell does (spaces, '…', "…", backslash escapes) but
//! nothing is expanded. There is no line editing beyond the terminal's own, on purpose: no
//! heavy dependency for it.

use super::{dispatch, Flow, Session};
use std::io::{BufRead, Write};

pub(super) const PROMPT: &str = "[mito::client]> ";

/// Reads commands from stdin until the end; returns 1 if any command failed, else 0.
pub(super) fn run(s: &mut Session) -> i32 {
    let tty = super::users::stdin_is_tty_pub();
    if tty {
        println!("Logged in as {}. Client is running in interactive mode.", s.user);
        println!("Type `help` for the commands, `quit`, `exit` or Ctrl-D to leave.");
    }
    let stdin = std::io::stdin();
    run_lines(s, &mut stdin.lock(), tty)
}

/// The loop itself, over any line source; the prompt is shown only on a terminal.
pub(super) fn run_lines(s: &mut Session, input: &mut dyn BufRead, show_prompt: bool) -> i32 {
    let mut failed = false;
    // One command per line; a bounded input ends the loop, and so does `quit`.
    loop {
        if show_prompt {
            print!("{PROMPT}");
            let _ = std::io::stdout().flush();
        }
        let mut line = String::new();
        match input.read_line(&mut line) {
            Ok(0) => {
                if show_prompt {
                    println!();
                }
                break;
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: reading a command: {e}");
                return 1;
            }
        }
        let words = match split(&line) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        if words.is_empty() {
            continue;
        }
        match dispatch(Some(s), &words) {
            Ok(Flow::Quit) => break,
            Ok(Flow::Continue) => {}
            Err(e) => {
                e.report();
                failed = true;
            }
        }
    }
    i32::from(failed)
}

/// Splits a line into words: whitespace separates; '…' is literal; "…" allows \" and \\;
/// a backslash outside quotes escapes the next character. `#` at a word start is a comment.
pub(super) fn split(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(c) => cur.push(c),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_like_a_shell() {
        assert_eq!(
            split("tasks submit -- echo \"Hello, Mitosis!\"").unwrap(),
            vec!["tasks", "submit", "--", "echo", "Hello, Mitosis!"]
        );
        assert_eq!(split("  a 'b c' d\\ e \"x\\\"y\" ''").unwrap(), vec!["a", "b c", "d e", "x\"y", ""]);
        assert_eq!(split("a # comment").unwrap(), vec!["a"]);
        assert!(split("").unwrap().is_empty());
        assert!(split("echo 'open").is_err());
        assert!(split("echo \"open").is_err());
    }
}
