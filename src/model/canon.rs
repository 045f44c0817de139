//! The one canonical byte encoding used for everything hearth signs, hashes or sends.
//!
//! Integers are fixed-width little-endian; hashes and keys are raw 32 bytes; signatures raw
//! 64 bytes; variable-length byte strings and lists carry a u32 little-endian length first.
//! There is exactly one encoding of each value, so bytes can be hashed and signed without
//! re-serialising (the lesson of Secure Scuttlebutt's JSON feeds). The reader is strict: it
//! checks every length against what remains and against a caller-given bound before
//! allocating, and `finish` rejects trailing bytes.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message ends early while reading {0}")]
    Truncated(&'static str),
    #[error("{0} bytes of trailing garbage after the message")]
    Trailing(usize),
    #[error("{what} is {len}, above the limit of {max}")]
    TooLong {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("unknown {what} tag {tag}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("bad magic: this is not a {0}")]
    Magic(&'static str),
    #[error("unsupported {what} version {version}")]
    Version { what: &'static str, version: u8 },
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

#[derive(Default, Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn hash(&mut self, h: &blake3::Hash) -> &mut Self {
        self.raw(h.as_bytes())
    }
    /// A u32 length, then the bytes. Callers bound the length before writing.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        let len = u32::try_from(b.len()).expect("canonical byte strings are below 4 GiB");
        self.u32(len).raw(b)
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or(DecodeError::Truncated(what))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    pub fn magic(&mut self, magic: &[u8], what: &'static str) -> Result<(), DecodeError> {
        if self.take(magic.len(), what)? != magic {
            return Err(DecodeError::Magic(what));
        }
        Ok(())
    }
    /// The magic and version byte a signed statement starts with (a revocation, a key event):
    /// another magic or version is refused.
    pub fn header(
        &mut self,
        magic: &[u8],
        version: u8,
        what: &'static str,
    ) -> Result<(), DecodeError> {
        self.magic(magic, what)?;
        match self.u8(what)? {
            v if v == version => Ok(()),
            v => Err(DecodeError::Version { what, version: v }),
        }
    }
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }
    /// A flag byte: 0 false, 1 true; anything else is refused (it would be a second encoding).
    pub fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            tag => Err(DecodeError::UnknownTag { what, tag }),
        }
    }
    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    pub fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array(what)?))
    }
    pub fn hash(&mut self, what: &'static str) -> Result<blake3::Hash, DecodeError> {
        Ok(blake3::Hash::from_bytes(self.array(what)?))
    }
    /// A length-prefixed byte string of at most `max` bytes; the bound is checked before
    /// anything is allocated or sliced.
    pub fn bytes(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(DecodeError::TooLong { what, len, max });
        }
        self.take(len, what)
    }
    pub fn str(&mut self, max: usize, what: &'static str) -> Result<&'a str, DecodeError> {
        std::str::from_utf8(self.bytes(max, what)?).map_err(|_| DecodeError::Invalid {
            what,
            reason: "not UTF-8".into(),
        })
    }
    /// A u32 count of list items, at most `max`, checked against the bytes that remain given
    /// each item's minimum size so a forged count cannot make us reserve memory.
    pub fn count(
        &mut self,
        max: usize,
        min_item: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let n = self.u32(what)? as usize;
        if n > max {
            return Err(DecodeError::TooLong { what, len: n, max });
        }
        if n.saturating_mul(min_item) > self.remaining() {
            return Err(DecodeError::Truncated(what));
        }
        Ok(n)
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let mut w = Writer::new();
        w.u8(7).u32(9).u64(u64::MAX).bytes(b"abc").str("hé");
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u32("b").unwrap(), 9);
        assert_eq!(r.u64("c").unwrap(), u64::MAX);
        assert_eq!(r.bytes(3, "d").unwrap(), b"abc");
        assert_eq!(r.str(10, "e").unwrap(), "hé");
        r.finish().unwrap();

        let mut r = Reader::new(&bytes);
        r.u8("a").unwrap();
        assert!(r.finish().is_err(), "trailing bytes are rejected");
        let mut r = Reader::new(&bytes[..5]);
        r.u8("a").unwrap();
        assert!(r.u64("x").is_err(), "truncation is detected");
        let mut r = Reader::new(&[255, 255, 255, 255]);
        assert!(matches!(
            r.bytes(100, "x"),
            Err(DecodeError::TooLong { .. })
        ));
        let mut r = Reader::new(&[5, 0, 0, 0, 1]);
        assert!(matches!(
            r.count(10, 32, "x"),
            Err(DecodeError::Truncated(_))
        ));
    }
}
