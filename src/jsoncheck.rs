//! A streaming JSON syntax check: fed a body chunk by chunk, it says whether the whole is one JSON
//! document, accepting exactly what `serde_json::from_slice::<IgnoredAny>` accepts (same grammar,
//! no nesting limit, strings not checked for UTF-8), without holding the body: only one bit per
//! open bracket.
//!
//! It exists for speed: `serde_json::from_reader` reads a byte at a time and checked large
//! results at a fraction of the download rate; here string contents, the bulk of a result, are
//! skipped in tight loops.

/// Where the check is in the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value must come next (top level, after `:`, after `,` in an array).
    Value,
    /// Just after `[`: a value or `]`.
    ArrayFirst,
    /// Just after `{`: a key or `}`.
    ObjectFirst,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value: `,`, a closing bracket, or (at the top level) only whitespace.
    AfterValue,
    /// Inside a string; `key` says whether a `:` follows it.
    Str {
        key: bool,
    },
    /// Just after a `\` in a string.
    Escape {
        key: bool,
    },
    /// Inside `\uXXXX`, with this many hex digits still to come.
    Hex {
        key: bool,
        left: u8,
    },
    Num(Num),
    /// Inside `true`, `false` or `null`: the bytes still expected.
    Literal(&'static [u8]),
}

/// Where a number is in `-? (0 | [1-9][0-9]*) (\.[0-9]+)? ([eE][+-]?[0-9]+)?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl Num {
    /// Whether the number may end here.
    fn complete(self) -> bool {
        matches!(self, Num::Zero | Num::Int | Num::Frac | Num::ExpDigits)
    }
}

/// A streaming check of one JSON document.
#[derive(Debug)]
pub struct JsonCheck {
    state: State,
    /// Open containers, innermost last: `true` for an object.
    stack: BitStack,
    /// Bytes seen so far, for the error message.
    offset: u64,
}

impl Default for JsonCheck {
    fn default() -> Self {
        Self::new()
    }
}

/// Offset of the first byte that ends a run of string content: `"`, `\\` or a control
/// character. Eight bytes at a time: string contents are most of a result.
fn string_stop(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let stop = |c: u8| c == b'"' || c == b'\\' || c < 0x20;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let words = s.chunks_exact(8);
    let tail = words.remainder();
    for (k, w) in words.enumerate() {
        let x = u64::from_le_bytes(w.try_into().unwrap_or_default());
        // Non-zero iff some byte is `"`, `\\`, or below 0x20 (no false negatives; a hit is then
        // located byte by byte).
        let hit = has_zero(x ^ (ONES * u64::from(b'"')))
            | has_zero(x ^ (ONES * u64::from(b'\\')))
            | x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        if let Some(n) = w.iter().position(|&c| stop(c)).filter(|_| hit != 0) {
            return Some(k * 8 + n);
        }
    }
    let start = s.len() - tail.len();
    tail.iter().position(|&c| stop(c)).map(|n| start + n)
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\t' | b'\r')
}

impl JsonCheck {
    pub fn new() -> Self {
        Self {
            state: State::Value,
            stack: BitStack::default(),
            offset: 0,
        }
    }

    fn error(&self, at: usize, what: &str) -> String {
        format!("{what} at byte {}", self.offset + at as u64)
    }

    /// Checks the next chunk of the document.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), String> {
        let mut i = 0;
        while i < chunk.len() {
            let b = chunk[i];
            match self.state {
                State::Str { key } => {
                    // The bulk of a result: skip to the next byte that means something.
                    match string_stop(&chunk[i..]) {
                        None => break,
                        Some(n) => {
                            i += n;
                            match chunk[i] {
                                b'"' => {
                                    self.state = if key { State::Colon } else { State::AfterValue }
                                }
                                b'\\' => self.state = State::Escape { key },
                                _ => return Err(self.error(i, "control character in a string")),
                            }
                        }
                    }
                }
                State::Escape { key } => {
                    self.state = match b {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {
                            State::Str { key }
                        }
                        b'u' => State::Hex { key, left: 4 },
                        _ => return Err(self.error(i, "invalid escape")),
                    }
                }
                State::Hex { key, left } => {
                    if !b.is_ascii_hexdigit() {
                        return Err(self.error(i, "invalid \\u escape"));
                    }
                    self.state = if left == 1 {
                        State::Str { key }
                    } else {
                        State::Hex {
                            key,
                            left: left - 1,
                        }
                    };
                }
                State::Literal(rest) => {
                    if b != rest[0] {
                        return Err(self.error(i, "invalid literal"));
                    }
                    self.state = if rest.len() == 1 {
                        State::AfterValue
                    } else {
                        State::Literal(&rest[1..])
                    };
                }
                State::Num(n) => {
                    let next = match (n, b) {
                        (Num::Minus, b'0') => Some(Num::Zero),
                        (Num::Minus, b'1'..=b'9') => Some(Num::Int),
                        (Num::Int, b'0'..=b'9') => Some(Num::Int),
                        (Num::Zero | Num::Int, b'.') => Some(Num::Dot),
                        (Num::Dot | Num::Frac, b'0'..=b'9') => Some(Num::Frac),
                        (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Some(Num::Exp),
                        (Num::Exp, b'+' | b'-') => Some(Num::ExpSign),
                        (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => {
                            Some(Num::ExpDigits)
                        }
                        _ => None,
                    };
                    match next {
                        Some(n) => self.state = State::Num(n),
                        None if n.complete() => {
                            // The number ended: this byte belongs to what follows it.
                            self.state = State::AfterValue;
                            continue;
                        }
                        None => return Err(self.error(i, "invalid number")),
                    }
                }
                _ if is_ws(b) => {}
                State::Value | State::ArrayFirst => {
                    if b == b']' && self.state == State::ArrayFirst {
                        self.close(false, i)?;
                    } else {
                        self.start_value(b, i)?;
                    }
                }
                State::ObjectFirst | State::Key => {
                    if b == b'"' {
                        self.state = State::Str { key: true };
                    } else if b == b'}' && self.state == State::ObjectFirst {
                        self.close(true, i)?;
                    } else {
                        return Err(self.error(i, "expected a key"));
                    }
                }
                State::Colon => {
                    if b != b':' {
                        return Err(self.error(i, "expected ':'"));
                    }
                    self.state = State::Value;
                }
                State::AfterValue => match (self.stack.last(), b) {
                    (Some(false), b',') => self.state = State::Value,
                    (Some(true), b',') => self.state = State::Key,
                    (Some(false), b']') => self.close(false, i)?,
                    (Some(true), b'}') => self.close(true, i)?,
                    (None, _) => return Err(self.error(i, "trailing characters")),
                    _ => return Err(self.error(i, "expected ',' or a closing bracket")),
                },
            }
            i += 1;
        }
        self.offset += chunk.len() as u64;
        Ok(())
    }

    fn start_value(&mut self, b: u8, i: usize) -> Result<(), String> {
        self.state = match b {
            b'"' => State::Str { key: false },
            b'-' => State::Num(Num::Minus),
            b'0' => State::Num(Num::Zero),
            b'1'..=b'9' => State::Num(Num::Int),
            b't' => State::Literal(b"rue"),
            b'f' => State::Literal(b"alse"),
            b'n' => State::Literal(b"ull"),
            b'[' | b'{' => {
                self.stack.push(b == b'{');
                if b == b'{' {
                    State::ObjectFirst
                } else {
                    State::ArrayFirst
                }
            }
            _ => return Err(self.error(i, "expected a value")),
        };
        Ok(())
    }

    fn close(&mut self, object: bool, i: usize) -> Result<(), String> {
        if self.stack.pop() != Some(object) {
            return Err(self.error(i, "mismatched bracket"));
        }
        self.state = State::AfterValue;
        Ok(())
    }

    /// The end of the document: it must hold exactly one complete value.
    pub fn finish(self) -> Result<(), String> {
        let complete = self.stack.depth == 0
            && match self.state {
                State::AfterValue => true,
                State::Num(n) => n.complete(),
                _ => false,
            };
        if complete {
            Ok(())
        } else {
            Err(format!("unexpected end of input at byte {}", self.offset))
        }
    }
}

/// A stack of bits: serde_json has no nesting limit when skipping a value, so neither does the
/// check, and a body of nothing but brackets costs an eighth of its size.
#[derive(Debug, Default)]
struct BitStack {
    words: Vec<u64>,
    depth: usize,
}

impl BitStack {
    fn push(&mut self, bit: bool) {
        let (w, b) = (self.depth / 64, self.depth % 64);
        if b == 0 {
            self.words.push(0);
        }
        // A popped bit may linger in the word: set or clear, never just set.
        self.words[w] = self.words[w] & !(1 << b) | u64::from(bit) << b;
        self.depth += 1;
    }

    fn last(&self) -> Option<bool> {
        let top = self.depth.checked_sub(1)?;
        Some(self.words[top / 64] >> (top % 64) & 1 == 1)
    }

    fn pop(&mut self) -> Option<bool> {
        let bit = self.last()?;
        self.depth -= 1;
        if self.depth.is_multiple_of(64) {
            self.words.pop();
        }
        Some(bit)
    }
}

#[cfg(test)]
#[path = "jsoncheck_tests.rs"]
mod tests;
