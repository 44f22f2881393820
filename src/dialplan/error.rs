//! Script errors as dialplan authors need them: which file, which line, what, and the
//! Lua traceback when there is one.

use std::fmt;
use std::path::{Path, PathBuf};

/// A dialplan that did not load, or a call whose script failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialplanError {
    /// The script (as `dir/name.lua`), or the directory for problems finding the files;
    /// `None` when Lua did not say where (running out of memory).
    pub file: Option<PathBuf>,
    pub line: Option<u32>,
    pub message: String,
    pub traceback: Option<String>,
}

impl DialplanError {
    pub(crate) fn in_file(file: impl Into<PathBuf>, message: impl Into<String>) -> DialplanError {
        DialplanError {
            file: Some(file.into()),
            line: None,
            message: message.into(),
            traceback: None,
        }
    }

    /// Turns an mlua error into file, line, message and traceback. Lua prefixes messages
    /// with `chunkname:line:`; chunk names are the scripts' file names, so a prefix
    /// naming one of `files` is taken as the location (and resolved against `dir`).
    pub(crate) fn from_lua(err: &mlua::Error, dir: &Path, files: &[&str]) -> DialplanError {
        let (text, mut traceback) = describe(err);
        let (message, lua_traceback) = split_traceback(&text);
        traceback = traceback.or(lua_traceback);
        match locate(message, files) {
            Some((file, line, rest)) => DialplanError {
                file: Some(dir.join(file)),
                line: Some(line),
                message: rest.to_owned(),
                traceback,
            },
            None => DialplanError {
                file: None,
                line: None,
                message: message.to_owned(),
                traceback,
            },
        }
    }
}

impl fmt::Display for DialplanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{line}: {}", file.display(), self.message),
            (Some(file), None) => write!(f, "{}: {}", file.display(), self.message),
            (None, _) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for DialplanError {}

/// The innermost message of an mlua error and the traceback mlua recorded for a failed
/// Rust callback, if any. Callback errors nest the script's own error as their cause.
fn describe(err: &mlua::Error) -> (String, Option<String>) {
    match err {
        mlua::Error::CallbackError { traceback, cause } => {
            let (text, inner) = describe(cause);
            (text, inner.or_else(|| Some(strip_header(traceback))))
        }
        mlua::Error::RuntimeError(m) => (m.clone(), None),
        mlua::Error::SyntaxError { message, .. } => (message.clone(), None),
        mlua::Error::MemoryError(_) => ("out of memory (the per-call memory limit)".into(), None),
        mlua::Error::WithContext { context, cause } => {
            let (text, tb) = describe(cause);
            (format!("{context}: {text}"), tb)
        }
        other => (other.to_string(), None),
    }
}

const TRACEBACK_HEADER: &str = "stack traceback:\n";

fn strip_header(traceback: &str) -> String {
    traceback
        .strip_prefix(TRACEBACK_HEADER)
        .unwrap_or(traceback)
        .to_owned()
}

/// Splits "message\nstack traceback:\n\t..." as Lua's traceback handler writes it.
fn split_traceback(text: &str) -> (&str, Option<String>) {
    match text.find(&format!("\n{TRACEBACK_HEADER}")) {
        Some(i) => (
            &text[..i],
            Some(text[i + 1 + TRACEBACK_HEADER.len()..].to_owned()),
        ),
        None => (text, None),
    }
}

/// Splits "file.lua:12: message" when `file.lua` is one of the dialplan's files.
fn locate<'m>(message: &'m str, files: &[&str]) -> Option<(&'m str, u32, &'m str)> {
    let (file, rest) = message.split_once(':')?;
    if !files.contains(&file) {
        return None;
    }
    let (line, rest) = rest.split_once(':')?;
    let line = line.parse().ok()?;
    Some((file, line, rest.trim_start()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_errors_give_file_line_and_traceback() {
        let lua = mlua::Lua::new();
        let err = lua
            .load("local x = nil\nreturn x.y")
            .set_name("@default.lua")
            .exec()
            .unwrap_err();
        let e = DialplanError::from_lua(&err, Path::new("plans"), &["default.lua"]);
        assert_eq!(e.file.as_deref(), Some(Path::new("plans/default.lua")));
        assert_eq!(e.line, Some(2));
        assert!(e.message.starts_with("attempt to index a nil value"), "{e}");
        assert!(
            e.to_string()
                .starts_with("plans/default.lua:2: attempt to index")
        );
    }

    #[test]
    fn syntax_errors_give_file_and_line() {
        let lua = mlua::Lua::new();
        let err = lua
            .load("function route(call)\n  if then\nend")
            .set_name("@office.lua")
            .into_function()
            .unwrap_err();
        let e = DialplanError::from_lua(&err, Path::new("d"), &["default.lua", "office.lua"]);
        assert_eq!(e.file.as_deref(), Some(Path::new("d/office.lua")));
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("unexpected symbol"), "{e}");
    }

    #[test]
    fn unknown_prefixes_are_not_taken_for_locations() {
        assert_eq!(locate("http://x: y", &["default.lua"]), None);
        assert_eq!(locate("default.lua:x: y", &["default.lua"]), None);
        assert_eq!(
            locate("default.lua:7: boom", &["default.lua"]),
            Some(("default.lua", 7, "boom"))
        );
    }
}
