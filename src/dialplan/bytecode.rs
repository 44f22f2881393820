//! Which upvalues a compiled chunk's functions assign, read from its Lua 5.4 bytecode
//! (`lundump.c` is the format's reference). A call that reuses a frozen top level
//! (see `sandbox.rs`) must have every upvalue the top level's functions could have
//! assigned set back; knowing which names a chunk ever assigns (`OP_SETUPVAL`) spares
//! setting back all the others, which is most of them.

use std::collections::BTreeSet;

/// `OP_SETUPVAL` (`lopcodes.h`: `UpValue[B] := R[A]`).
const OP_SETUPVAL: u32 = 10;
/// The opcode is the low 7 bits of an instruction, B the 8 bits from bit 16.
const OPCODE_MASK: u32 = 0x7f;
const POS_B: u32 = 16;

/// `\x1bLua`, version 5.4, the official format, `LUAC_DATA`, the sizes of an
/// instruction, an integer and a float, then `LUAC_INT` and `LUAC_NUM` (8 bytes each).
const HEADER_LEN: usize = 4 + 1 + 1 + 6 + 3 + 8 + 8;

/// The names of the upvalues some function of `chunk` (from `string.dump` without
/// stripping) assigns; `None` when the chunk cannot be read or has no upvalue names,
/// in which case every upvalue must be taken as assigned.
pub(crate) fn assigned_upvalues(chunk: &[u8]) -> Option<BTreeSet<String>> {
    let mut reader = Reader {
        bytes: chunk.get(HEADER_LEN..)?,
    };
    if chunk.get(..6)? != b"\x1bLua\x54\x00" {
        return None;
    }
    reader.byte()?; // the main function's upvalue count
    let mut names = BTreeSet::new();
    reader.function(&mut names)?;
    Some(names)
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.bytes.split_at_checked(n)?;
        self.bytes = rest;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    /// `loadUnsigned`: 7 bits a byte, most significant first, the last byte flagged.
    fn size(&mut self) -> Option<usize> {
        let mut x: usize = 0;
        loop {
            let b = self.byte()?;
            x = x.checked_mul(128)? | usize::from(b & 0x7f);
            if b & 0x80 != 0 {
                return Some(x);
            }
        }
    }

    /// `loadStringN`: size + 1, then the bytes; 0 for none.
    fn string(&mut self) -> Option<Option<&'a [u8]>> {
        match self.size()? {
            0 => Some(None),
            n => self.take(n - 1).map(Some),
        }
    }

    /// `loadFunction`, adding to `names` what its `OP_SETUPVAL`s assign.
    fn function(&mut self, names: &mut BTreeSet<String>) -> Option<()> {
        self.string()?; // source
        self.size()?; // linedefined
        self.size()?; // lastlinedefined
        self.take(3)?; // numparams, is_vararg, maxstacksize
        let code_len = self.size()?;
        let mut assigned = Vec::new();
        for word in self.take(code_len.checked_mul(4)?)?.chunks_exact(4) {
            let instruction = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            if instruction & OPCODE_MASK == OP_SETUPVAL {
                assigned.push(usize::try_from((instruction >> POS_B) & 0xff).ok()?);
            }
        }
        for _ in 0..self.size()? {
            match self.byte()? {
                0 | 1 | 17 => {} // nil, false, true
                3 | 19 => {
                    // integer, float
                    self.take(8)?;
                }
                4 | 20 => {
                    // short and long strings
                    self.string()?;
                }
                _ => return None,
            }
        }
        let upvalues = self.size()?;
        self.take(upvalues.checked_mul(3)?)?; // instack, idx, kind
        for _ in 0..self.size()? {
            self.function(names)?;
        }
        let line_info = self.size()?;
        self.take(line_info)?;
        for _ in 0..self.size()? {
            self.size()?; // pc
            self.size()?; // line
        }
        for _ in 0..self.size()? {
            self.string()?; // name
            self.size()?; // startpc
            self.size()?; // endpc
        }
        let upvalue_names = self.size()?;
        if upvalue_names == 0 && !assigned.is_empty() {
            return None;
        }
        let mut upvalue_names_read = Vec::with_capacity(upvalues);
        for _ in 0..upvalue_names.min(upvalues) {
            upvalue_names_read.push(self.string()?);
        }
        for index in assigned {
            let name = upvalue_names_read.get(index)?.as_ref()?;
            names.insert(String::from_utf8_lossy(name).into_owned());
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mlua::Lua;

    fn assigned(source: &str) -> Option<BTreeSet<String>> {
        let lua = Lua::new();
        let f = lua.load(source).into_function().unwrap();
        assigned_upvalues(&f.dump(false))
    }

    fn set(names: &[&str]) -> Option<BTreeSet<String>> {
        Some(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn finds_the_upvalues_nested_functions_assign() {
        let source = r#"
            local count, limit, name = 0, 10, "x"
            local big = 2^53 + 0.5
            local text = "a long string constant that is longer than forty characters"
            local function bump() count = count + 1; return limit end
            local function counter()
              local n = 0
              return function() n = n + 1; return n end
            end
            function route(call)
              local seen = false
              local function mark() seen = true end
              mark()
              _ENV = nil
            end
            return name, big, text, true, false, nil
        "#;
        assert_eq!(assigned(source), set(&["_ENV", "count", "n", "seen"]));
    }

    #[test]
    fn a_chunk_without_assignments_assigns_nothing() {
        assert_eq!(
            assigned("local t = {} function route() t.x = 1 end"),
            set(&[])
        );
    }

    #[test]
    fn unreadable_or_stripped_chunks_say_so() {
        assert_eq!(assigned_upvalues(b"not a chunk"), None);
        let lua = Lua::new();
        let f = lua
            .load("local n = 0 function f() n = n + 1 end")
            .into_function()
            .unwrap();
        let dump = f.dump(true);
        assert_eq!(assigned_upvalues(&dump), None);
        assert_eq!(assigned_upvalues(&dump[..dump.len() / 2]), None);
    }
}
