//! Where the numbers are: walkers that find the size, count and offset fields of a binary
//! format (GIF blocks, PNG chunks, MP4 boxes, pickle opcodes), so that mutations hit the
//! fields a hostile file would lie in rather than pixel or weight bytes. A walker stops at the
//! first thing it does not understand and returns what it found so far.

/// A little- or big-endian unsigned field of `width` bytes at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub at: usize,
    pub width: usize,
    pub big_endian: bool,
}

impl Field {
    fn le(at: usize, width: usize) -> Field {
        Field { at, width, big_endian: false }
    }

    fn be(at: usize, width: usize) -> Field {
        Field { at, width, big_endian: true }
    }

    /// Reads the field (None when it is past the end).
    pub fn get(&self, b: &[u8]) -> Option<u64> {
        let s = b.get(self.at..self.at + self.width)?;
        let mut v = 0u64;
        for i in 0..self.width {
            let byte = if self.big_endian { s[i] } else { s[self.width - 1 - i] };
            v = (v << 8) | byte as u64;
        }
        Some(v)
    }

    /// Writes the low `width` bytes of `v` (no-op past the end).
    pub fn set(&self, b: &mut [u8], v: u64) {
        let Some(s) = b.get_mut(self.at..self.at + self.width) else {
            return;
        };
        for i in 0..self.width {
            let byte = (v >> (8 * i)) as u8;
            if self.big_endian {
                s[self.width - 1 - i] = byte;
            } else {
                s[i] = byte;
            }
        }
    }
}

fn u16le(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn u32be(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// GIF: logical screen, colour table flags, image descriptors, LZW code sizes, sub-block lengths.
pub fn gif(b: &[u8]) -> Vec<Field> {
    let mut f = vec![Field::le(6, 2), Field::le(8, 2), Field::le(10, 1)];
    let Some(&packed) = b.get(10) else { return f };
    let mut pos = 13 + if packed & 0x80 != 0 { 3 << ((packed & 7) + 1) } else { 0 };
    let sub_blocks = |f: &mut Vec<Field>, mut pos: usize| -> Option<usize> {
        loop {
            let n = *b.get(pos)? as usize;
            f.push(Field::le(pos, 1));
            pos += 1 + n;
            if n == 0 {
                return Some(pos);
            }
        }
    };
    while let Some(&tag) = b.get(pos) {
        match tag {
            0x2C => {
                for (off, w) in [(1, 2), (3, 2), (5, 2), (7, 2), (9, 1)] {
                    f.push(Field::le(pos + off, w));
                }
                let Some(&p) = b.get(pos + 9) else { break };
                pos += 10 + if p & 0x80 != 0 { 3 << ((p & 7) + 1) } else { 0 };
                f.push(Field::le(pos, 1)); // LZW minimum code size
                match sub_blocks(&mut f, pos + 1) {
                    Some(p) => pos = p,
                    None => break,
                }
            }
            0x21 => match sub_blocks(&mut f, pos + 2) {
                Some(p) => pos = p,
                None => break,
            },
            _ => break,
        }
    }
    f
}

/// PNG: chunk lengths, IHDR's size/depth/colour/interlace, acTL/fcTL frame fields.
pub fn png(b: &[u8]) -> Vec<Field> {
    let mut f = Vec::new();
    let mut pos = 8;
    while let Some(len) = u32be(b, pos) {
        f.push(Field::be(pos, 4));
        let ty = b.get(pos + 4..pos + 8).unwrap_or(b"");
        let data = pos + 8;
        match ty {
            b"IHDR" => {
                f.extend([Field::be(data, 4), Field::be(data + 4, 4)]);
                f.extend((8..13).map(|o| Field::be(data + o, 1)));
            }
            b"acTL" | b"fcTL" => f.extend((0..len.min(26) / 4).map(|i| Field::be(data + 4 * i, 4))),
            _ => {}
        }
        pos = data.saturating_add(len).saturating_add(4);
    }
    f
}

/// Recomputes every in-bounds PNG chunk CRC, so that a mutated chunk reaches the decoder.
pub fn fix_png_crcs(b: &mut [u8]) {
    let mut pos = 8;
    while let Some(len) = u32be(b, pos) {
        let end = pos.saturating_add(8).saturating_add(len);
        if end + 4 > b.len() {
            return;
        }
        let crc = crc32(&b[pos + 4..end]);
        b[end..end + 4].copy_from_slice(&crc.to_be_bytes());
        pos = end + 4;
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &x in data {
        c ^= x as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// MP4: every box size (and 64-bit size), the counts and entries of the sample tables,
/// header boxes' sizes and durations, the sample entry's width/height.
pub fn mp4(b: &[u8]) -> Vec<Field> {
    let mut f = Vec::new();
    mp4_boxes(b, 0, b.len(), 0, &mut f);
    f
}

fn mp4_boxes(b: &[u8], mut pos: usize, end: usize, depth: usize, f: &mut Vec<Field>) {
    const CONTAINERS: [&[u8]; 11] =
        [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"edts", b"udta", b"mvex", b"moof", b"traf"];
    const TABLES: [&[u8]; 12] =
        [b"stts", b"stsc", b"stsz", b"stco", b"co64", b"ctts", b"stss", b"mdhd", b"tkhd", b"mvhd", b"elst", b"avcC"];
    while depth < 8 && pos + 8 <= end {
        let Some(size) = u32be(b, pos) else { return };
        f.push(Field::be(pos, 4));
        let ty = &b[pos + 4..pos + 8];
        let (head, size) = if size == 1 {
            f.push(Field::be(pos + 8, 8));
            let Some(s) = b.get(pos + 8..pos + 16) else { return };
            (16, u64::from_be_bytes(s.try_into().unwrap_or([0; 8])) as usize)
        } else {
            (8, if size == 0 { end - pos } else { size })
        };
        let box_end = pos.saturating_add(size).min(end);
        if size < head {
            return;
        }
        if CONTAINERS.contains(&ty) {
            mp4_boxes(b, pos + head, box_end, depth + 1, f);
        } else if ty == b"stsd" {
            f.push(Field::be(pos + head + 4, 4));
            mp4_boxes(b, pos + head + 8, box_end, depth + 1, f);
        } else if ty == b"avc1" || ty == b"hvc1" || ty == b"mp4v" {
            // Visual sample entry: width and height, then child boxes (avcC) after 78 bytes.
            f.extend([Field::be(pos + head + 24, 2), Field::be(pos + head + 26, 2)]);
            mp4_boxes(b, pos + head + 78, box_end, depth + 1, f);
        } else if TABLES.contains(&ty) {
            let words = (box_end - pos - head) / 4;
            f.extend((0..words.min(24)).map(|i| Field::be(pos + head + 4 * i, 4)));
            if ty == b"avcC" {
                f.push(Field::be(pos + head + 6, 2)); // first SPS length
            }
        }
        pos = box_end;
    }
}

/// Pickle: integer operands (sizes, shapes, strides, offsets, memo indices), string and
/// bytes length prefixes, and the opcodes themselves (as one-byte fields).
pub fn pickle(b: &[u8]) -> Vec<Field> {
    let mut f = Vec::new();
    let mut pos = 0;
    while let Some(&op) = b.get(pos) {
        f.push(Field::le(pos, 1));
        let arg = pos + 1;
        let skip = match op {
            b'J' | b'r' | b'j' => {
                f.push(Field::le(arg, 4));
                4
            }
            b'K' | b'q' | b'h' | 0x80 => {
                f.push(Field::le(arg, 1));
                1
            }
            b'M' => {
                f.push(Field::le(arg, 2));
                2
            }
            0x95 => {
                f.push(Field::le(arg, 8));
                8
            }
            b'G' => 8,
            0x8a => {
                let Some(&n) = b.get(arg) else { break };
                f.push(Field::le(arg, 1));
                if n > 0 {
                    f.push(Field::le(arg + 1, (n as usize).min(8)));
                }
                1 + n as usize
            }
            b'X' | b'B' | b'T' => {
                let Some(n) = b.get(arg..arg + 4) else { break };
                f.push(Field::le(arg, 4));
                4 + u32::from_le_bytes(n.try_into().unwrap_or([0; 4])) as usize
            }
            0x8c | b'C' | b'U' => {
                let Some(&n) = b.get(arg) else { break };
                f.push(Field::le(arg, 1));
                1 + n as usize
            }
            b'c' => {
                // GLOBAL: two newline-terminated lines.
                let mut p = arg;
                for _ in 0..2 {
                    match b.get(p..).and_then(|s| s.iter().position(|&c| c == b'\n')) {
                        Some(n) => p += n + 1,
                        None => return f,
                    }
                }
                p - arg
            }
            b'.' => break,
            _ => 0,
        };
        pos = arg + skip;
    }
    f
}

/// `u16le` for callers outside (npy header length).
pub fn npy_header_len(b: &[u8]) -> Option<(usize, usize)> {
    match b.get(6)? {
        1 => Some((10, u16le(b, 8)?)),
        _ => Some((12, u32::from_le_bytes(b.get(8..12)?.try_into().ok()?) as usize)),
    }
}

fn u32le(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

fn u64le(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?)).ok()
}

/// GGUF (v2/v3): the version, tensor and metadata counts, every string length, metadata value
/// type, array element type and count, each tensor's dimension count, dimensions, ggml type and
/// data offset.
pub fn gguf(b: &[u8]) -> Vec<Field> {
    let mut f = vec![Field::le(4, 4), Field::le(8, 8), Field::le(16, 8)];
    let (Some(tensors), Some(kvs)) = (u64le(b, 8), u64le(b, 16)) else { return f };
    // A string: u64 length, then the bytes.
    let string = |f: &mut Vec<Field>, pos: usize| -> Option<usize> {
        f.push(Field::le(pos, 8));
        pos.checked_add(8)?.checked_add(u64le(b, pos)?)
    };
    // A metadata value of type `ty` at `pos`; returns the position after it.
    fn value(b: &[u8], f: &mut Vec<Field>, ty: usize, pos: usize, depth: usize) -> Option<usize> {
        const SIZES: [usize; 13] = [1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8];
        match ty {
            8 => {
                f.push(Field::le(pos, 8));
                pos.checked_add(8)?.checked_add(u64le(b, pos)?)
            }
            9 if depth < 2 => {
                f.extend([Field::le(pos, 4), Field::le(pos + 4, 8)]);
                let (elem, n) = (u32le(b, pos)?, u64le(b, pos + 4)?);
                let mut at = pos + 12;
                for _ in 0..n.min(64) {
                    at = value(b, f, elem, at, depth + 1)?;
                }
                // Longer arrays of fixed-size elements are skipped whole.
                if n > 64 {
                    at = at.checked_add((n - 64).checked_mul(*SIZES.get(elem).filter(|&&s| s > 0)?)?)?;
                }
                Some(at)
            }
            t => pos.checked_add(*SIZES.get(t).filter(|&&s| s > 0)?),
        }
    }
    let mut pos = 24;
    for _ in 0..kvs.min(256) {
        let Some(at) = string(&mut f, pos) else { return f };
        f.push(Field::le(at, 4));
        let Some(ty) = u32le(b, at) else { return f };
        match value(b, &mut f, ty, at + 4, 0) {
            Some(next) => pos = next,
            None => return f,
        }
    }
    for _ in 0..tensors.min(256) {
        let Some(at) = string(&mut f, pos) else { return f };
        f.push(Field::le(at, 4));
        let Some(dims) = u32le(b, at).filter(|&d| d <= 8) else { return f };
        f.extend((0..dims).map(|i| Field::le(at + 4 + 8 * i, 8)));
        let after = at + 4 + 8 * dims;
        f.extend([Field::le(after, 4), Field::le(after + 4, 8)]);
        pos = after + 12;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip_and_crc_matches_png() {
        let mut b = vec![0u8; 8];
        let f = Field::be(2, 4);
        f.set(&mut b, 0xdead_beef);
        assert_eq!(f.get(&b), Some(0xdead_beef));
        let f = Field::le(1, 2);
        f.set(&mut b, 0x1234);
        assert_eq!(b[1..3], [0x34, 0x12]);
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }
}
