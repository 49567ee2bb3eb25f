//! The canonical binary encoding (see `docs/adr/0001-canonical-encoding.md`).
//!
//! Every signed or hashed value has exactly one byte form:
//!
//! - integers are fixed-width little-endian (`u8`, `u16`, `u32`, `u64`);
//! - `bool` is one byte, `0` or `1`; any other byte is an error;
//! - `Option<T>` is a tag byte `0` (none) or `1` followed by `T`;
//! - byte strings and lists are a `u32` length followed by the items, and every
//!   length has a maximum named where the field is defined;
//! - enums are a `u8` tag followed by the variant's fields in order;
//! - structs are their fields in declaration order, with nothing between them.
//!
//! Decoding is strict: a truncated input, trailing bytes, an unknown tag, a
//! non-canonical byte (a `bool` of 2), a length above its maximum, or invalid
//! UTF-8 is an [`Error`]. A length prefix is checked against its maximum and
//! against the bytes that remain (at the item type's smallest encoded size) before
//! anything is allocated, so what a decoder allocates is bounded by a small constant
//! times the input's own size.

use crate::error::Error;

/// A value with one canonical byte form.
pub trait Encode {
    /// Appends the canonical bytes of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// The canonical bytes of `self`.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// A shared value encodes as the value itself.
impl<T: Encode + ?Sized> Encode for std::sync::Arc<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        (**self).encode(out);
    }
}

/// A value that can be read back from its canonical bytes.
pub trait Decode: Sized {
    /// The fewest bytes any encoding of this type takes; used to bound lists
    /// before allocating them.
    const MIN_SIZE: usize;

    /// Reads one value from `r`.
    fn decode(r: &mut Reader<'_>) -> Result<Self, Error>;

    /// Decodes exactly one value from `bytes`; trailing bytes are an error.
    fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(bytes);
        let value = Self::decode(&mut r)?;
        r.finish()?;
        Ok(value)
    }
}

/// A cursor over input bytes that refuses to read past the end.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Errors unless every byte has been read.
    pub fn finish(&self) -> Result<(), Error> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(Error::TrailingBytes { count }),
        }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(Error::UnexpectedEnd { what });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, Error> {
        Ok(self.take(1, what)?[0])
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A `bool`: exactly `0` or `1`.
    pub fn bool(&mut self, what: &'static str) -> Result<bool, Error> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Error::NonCanonical { what }),
        }
    }

    /// A length prefix of at most `max` items of at least `min_size` bytes each,
    /// checked against the remaining input.
    pub fn len(&mut self, max: usize, min_size: usize, what: &'static str) -> Result<usize, Error> {
        let len = self.u32(what)? as usize;
        if len > max {
            return Err(Error::TooLong { what, len, max });
        }
        if len.saturating_mul(min_size.max(1)) > self.remaining() {
            return Err(Error::UnexpectedEnd { what });
        }
        Ok(len)
    }

    /// A length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], Error> {
        let len = self.len(max, 1, what)?;
        self.take(len, what)
    }

    /// A length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, max: usize, what: &'static str) -> Result<String, Error> {
        let bytes = self.bytes(max, what)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Error::InvalidUtf8 { what })
    }

    /// A length-prefixed list of at most `max` items.
    pub fn list<T: Decode>(&mut self, max: usize, what: &'static str) -> Result<Vec<T>, Error> {
        let len = self.len(max, T::MIN_SIZE, what)?;
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            out.push(T::decode(self)?);
        }
        Ok(out)
    }

    /// An option: tag `0` or `1`, then the value.
    pub fn option<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Self) -> Result<T, Error>,
    ) -> Result<Option<T>, Error> {
        if self.bool(what)? {
            f(self).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// Appends a length prefix.
pub fn put_len(out: &mut Vec<u8>, len: usize) {
    // Every length is bounded far below u32::MAX where it is defined.
    out.extend_from_slice(&(len as u32).to_le_bytes());
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Appends a length-prefixed list.
pub fn put_list<T: Encode>(out: &mut Vec<u8>, items: &[T]) {
    put_len(out, items.len());
    for item in items {
        item.encode(out);
    }
}

/// Appends an option.
pub fn put_option<T>(out: &mut Vec<u8>, value: Option<&T>, f: impl FnOnce(&mut Vec<u8>, &T)) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            f(out, v);
        }
    }
}

/// Appends a little-endian `u64`.
pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Appends a little-endian `u32`.
pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}
