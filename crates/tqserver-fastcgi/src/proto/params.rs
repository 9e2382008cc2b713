//! Name-value pairs (spec §3.4): the CGI environment of a request
//! (`PARAMS`) and the variables of `GET_VALUES`.
//!
//! Lengths are 1 byte when below 128, else 4 bytes with the top bit set.
//! Order is preserved in both directions; decoding is zero-copy.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Limits, ProtoError};

/// Largest length a name or value can have on the wire (31 bits); spec §3.4.
pub const MAX_PAIR_PART_LEN: usize = 0x7fff_ffff;
/// Largest encoded pair (length bytes included) that fits in one record.
/// PHP (php-fpm, php-cgi) parses every `PARAMS` record on its own, so a
/// pair larger than this cannot reach PHP at all.
pub const MAX_RECORD_PAIR_LEN: usize = super::record::MAX_CONTENT_LEN;
/// Most pairs a `GET_VALUES(_RESULT)` record may carry. One record holds at
/// most 32 767 empty pairs; real peers ask for three.
pub const MAX_MANAGEMENT_PAIRS: usize = 1024;

/// An ordered list of name-value pairs. Names may repeat; [`Params::get`]
/// returns the last one, as PHP's `$_SERVER` does.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(Bytes, Bytes)>,
}

impl Params {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty list with room for `n` pairs.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            pairs: Vec::with_capacity(n),
        }
    }

    /// Appends a pair.
    pub fn push(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.pairs.push((name.into(), value.into()));
    }

    /// Appends a pair, builder style.
    #[must_use]
    pub fn with(mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        self.push(name, value);
        self
    }

    /// Replaces every pair called `name` by one pair at the end.
    pub fn set(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        let name = name.into();
        self.pairs.retain(|(n, _)| n != &name);
        self.pairs.push((name, value.into()));
    }

    /// The value of the last pair called `name`.
    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n.as_ref() == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// The value of the last pair called `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Pairs in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&Bytes, &Bytes)> {
        self.pairs.iter().map(|(n, v)| (n, v))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Bytes the pairs take on the wire, without record headers.
    pub fn encoded_len(&self) -> usize {
        self.pairs
            .iter()
            .map(|(n, v)| pair_len(n.len(), v.len()))
            .sum()
    }

    /// The largest encoded pair, to check against [`MAX_RECORD_PAIR_LEN`].
    pub fn largest_pair(&self) -> Option<(&Bytes, usize)> {
        self.pairs
            .iter()
            .map(|(n, v)| (n, pair_len(n.len(), v.len())))
            .max_by_key(|(_, l)| *l)
    }
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.pairs.iter().map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }))
            .finish()
    }
}

impl<N: Into<Bytes>, V: Into<Bytes>> FromIterator<(N, V)> for Params {
    fn from_iter<T: IntoIterator<Item = (N, V)>>(iter: T) -> Self {
        Self {
            pairs: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

impl IntoIterator for Params {
    type Item = (Bytes, Bytes);
    type IntoIter = std::vec::IntoIter<(Bytes, Bytes)>;
    fn into_iter(self) -> Self::IntoIter {
        self.pairs.into_iter()
    }
}

#[inline]
fn len_size(len: usize) -> usize {
    if len < 128 { 1 } else { 4 }
}

/// Bytes one pair takes on the wire.
#[inline]
pub fn pair_len(name: usize, value: usize) -> usize {
    len_size(name) + len_size(value) + name + value
}

#[inline]
fn put_len(dst: &mut BytesMut, len: usize) {
    if len < 128 {
        dst.put_u8(len as u8);
    } else {
        debug_assert!(len <= MAX_PAIR_PART_LEN);
        dst.put_u32(len as u32 | 0x8000_0000);
    }
}

/// Appends one pair.
#[inline]
pub fn encode_pair(dst: &mut BytesMut, name: &[u8], value: &[u8]) {
    put_len(dst, name.len());
    put_len(dst, value.len());
    dst.put_slice(name);
    dst.put_slice(value);
}

/// Reads one length; `None` when `src[at..]` is too short.
#[inline]
fn read_len(src: &[u8], at: usize) -> Option<(usize, usize)> {
    let b = *src.get(at)?;
    if b < 128 {
        return Some((b as usize, at + 1));
    }
    let four = src.get(at..at + 4)?;
    let len = u32::from_be_bytes([four[0] & 0x7f, four[1], four[2], four[3]]) as usize;
    Some((len, at + 4))
}

/// Decodes a complete buffer of pairs. Every length is checked against the
/// bytes present before any slice is taken; at most `max_pairs` pairs.
pub fn decode_pairs(src: Bytes, max_pairs: usize) -> Result<Params, ProtoError> {
    let mut out = Params::new();
    let mut at = 0;
    let s = &src[..];
    while at < s.len() {
        if out.len() >= max_pairs {
            return Err(ProtoError::TooManyParams { limit: max_pairs });
        }
        let (nlen, a) = read_len(s, at).ok_or(ProtoError::MalformedParams(
            "a length is cut short by the end of the stream",
        ))?;
        let (vlen, a) = read_len(s, a).ok_or(ProtoError::MalformedParams(
            "a length is cut short by the end of the stream",
        ))?;
        let end = a
            .checked_add(nlen)
            .and_then(|x| x.checked_add(vlen))
            .filter(|&e| e <= s.len())
            .ok_or(ProtoError::MalformedParams(
                "a name or value is longer than the bytes that follow it",
            ))?;
        out.pairs
            .push((src.slice(a..a + nlen), src.slice(a + nlen..end)));
        at = end;
    }
    Ok(out)
}

/// Collects a `PARAMS` stream record by record, within [`Limits`], and
/// decodes it once the empty record arrives. Pairs may span records here
/// (the spec allows it), unlike in PHP.
#[derive(Debug)]
pub struct ParamsCollector {
    first: Option<Bytes>,
    rest: BytesMut,
    records: usize,
    limits: Limits,
}

impl ParamsCollector {
    /// A collector enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            first: None,
            rest: BytesMut::new(),
            records: 0,
            limits,
        }
    }

    /// Adds the content of one non-empty `PARAMS` record.
    pub fn push(&mut self, data: Bytes) -> Result<(), ProtoError> {
        self.records += 1;
        if self.records > self.limits.max_params_records {
            return Err(ProtoError::TooManyRecords {
                limit: self.limits.max_params_records,
            });
        }
        let have = self.first.as_ref().map_or(0, Bytes::len) + self.rest.len();
        if have + data.len() > self.limits.max_params_bytes {
            return Err(ProtoError::ParamsTooLarge {
                limit: self.limits.max_params_bytes,
            });
        }
        match self.first.take() {
            // The common case, one record: keep it without copying.
            None if self.rest.is_empty() => self.first = Some(data),
            first => {
                if let Some(f) = first {
                    self.rest.extend_from_slice(&f);
                }
                self.rest.extend_from_slice(&data);
            }
        }
        Ok(())
    }

    /// Decodes everything pushed so far.
    pub fn finish(self) -> Result<Params, ProtoError> {
        let all = match self.first {
            Some(f) => f,
            None => self.rest.freeze(),
        };
        decode_pairs(all, self.limits.max_params_pairs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_and_four_byte_lengths_roundtrip_in_order() {
        let p: Params = [
            ("A", "1".repeat(127)),
            ("B".repeat(128).as_str(), "2".repeat(128)),
            ("", String::new()),
            ("A", "again".to_string()),
        ]
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
        let mut buf = BytesMut::new();
        for (n, v) in p.iter() {
            encode_pair(&mut buf, n, v);
        }
        assert_eq!(buf.len(), p.encoded_len());
        // 127 fits in one byte, 128 needs four.
        assert_eq!(&buf[..2], &[1, 127]);
        let back = decode_pairs(buf.freeze(), usize::MAX).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.get_str("A"), Some("again"));
    }

    #[test]
    fn truncated_or_lying_lengths_are_errors() {
        for bad in [
            &[0x80u8, 0, 0][..],                 // 4-byte length cut short
            &[5, 0, b'a'][..],                   // name longer than what follows
            &[1][..],                            // value length missing
            &[0xff, 0xff, 0xff, 0xff, 0, 1][..], // 2 GiB name
        ] {
            assert!(
                decode_pairs(Bytes::copy_from_slice(bad), usize::MAX).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn collector_enforces_limits_and_joins_split_pairs() {
        let limits = Limits {
            max_params_bytes: 10,
            ..Limits::default()
        };
        let mut c = ParamsCollector::new(limits);
        c.push(Bytes::from_static(&[1, 2, b'a'])).unwrap();
        c.push(Bytes::from_static(b"bc")).unwrap();
        assert_eq!(c.finish().unwrap(), Params::new().with("a", "bc"));

        let mut c = ParamsCollector::new(limits);
        c.push(Bytes::from_static(&[0; 8])).unwrap();
        assert_eq!(
            c.push(Bytes::from_static(&[0; 3])),
            Err(ProtoError::ParamsTooLarge { limit: 10 })
        );

        let limits = Limits {
            max_params_records: 2,
            ..Limits::default()
        };
        let mut c = ParamsCollector::new(limits);
        c.push(Bytes::from_static(&[0])).unwrap();
        c.push(Bytes::from_static(&[0])).unwrap();
        assert!(matches!(
            c.push(Bytes::from_static(&[0])),
            Err(ProtoError::TooManyRecords { limit: 2 })
        ));
    }

    #[test]
    fn pair_count_is_bounded() {
        let src = Bytes::from(vec![0u8; 2 * 100]);
        assert_eq!(
            decode_pairs(src, 99),
            Err(ProtoError::TooManyParams { limit: 99 })
        );
    }
}
