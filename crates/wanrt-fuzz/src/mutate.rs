//! Mutations: one to three per case, each either structure-aware (a field the format's
//! walker found, a JSON node, a zip member rewritten with valid CRCs) or a plain byte edit.
//! All choices come from an [`Unstructured`], so the same mutators can be driven by
//! random bytes here or by a coverage-guided fuzzer (cargo-fuzz) elsewhere.

use std::io::{Read, Write};

use arbitrary::Unstructured;

use crate::fields::{self, Field};
use crate::json;
use crate::Format;

/// Mutates `seed` (a valid file of `format`) into a hostile variant; `other` is another
/// seed of the same format to splice from.
pub fn mutate(format: Format, seed: &[u8], other: &[u8], u: &mut Unstructured) -> Vec<u8> {
    let mut b = seed.to_vec();
    let n = u.int_in_range(1..=3).unwrap_or(1);
    for _ in 0..n {
        if u.ratio(2, 3).unwrap_or(true) {
            b = structured(format, b, u);
        } else {
            bytes(&mut b, other, u);
        }
    }
    b
}

fn structured(format: Format, b: Vec<u8>, u: &mut Unstructured) -> Vec<u8> {
    match format {
        Format::Safetensors => safetensors(b, u),
        Format::Npy => npy(b, u),
        Format::Npz => zip_member(b, u, npy),
        Format::Pth => zip_member(b, u, pth_member),
        Format::Gif => with_fields(b, &fields::gif, u),
        Format::Png => {
            let mut b = with_fields(b, &fields::png, u);
            if u.ratio(4, 5).unwrap_or(true) {
                fields::fix_png_crcs(&mut b);
            }
            b
        }
        Format::Mp4 => with_fields(b, &fields::mp4, u),
        Format::Gguf => with_fields(b, &fields::gguf, u),
        Format::Tokenizer | Format::Config => json::mutate(&b, u).unwrap_or(b),
        Format::Spiece => crate::protobuf::mutate(&b, u).unwrap_or(b),
    }
}

/// Values that break size arithmetic for a field of `width` bytes around its value `v`.
fn interesting(width: usize, v: u64, u: &mut Unstructured) -> u64 {
    let max = if width >= 8 { u64::MAX } else { (1u64 << (8 * width)) - 1 };
    let picks = [
        0,
        1,
        2,
        max,
        max - 1,
        max / 2,
        max / 2 + 1,
        v.wrapping_add(1),
        v.wrapping_sub(1),
        v.wrapping_mul(2),
        v.wrapping_mul(1024),
        v / 2,
        u.arbitrary::<u64>().unwrap_or(0),
    ];
    picks[u.choose_index(picks.len()).unwrap_or(0)] & max
}

fn set_field(b: &mut [u8], f: Field, u: &mut Unstructured) {
    let v = f.get(b).unwrap_or(0);
    f.set(b, interesting(f.width, v, u));
}

fn with_fields(mut b: Vec<u8>, walk: &dyn Fn(&[u8]) -> Vec<Field>, u: &mut Unstructured) -> Vec<u8> {
    let fs = walk(&b);
    if let Ok(f) = u.choose(&fs) {
        set_field(&mut b, *f, u);
    }
    b
}

/// Plain byte edits: bit flips, interesting bytes and words at any offset, truncation,
/// insertion, deletion, duplication, splicing from another seed.
pub fn bytes(b: &mut Vec<u8>, other: &[u8], u: &mut Unstructured) {
    let len = b.len();
    let at = if len == 0 { 0 } else { u.choose_index(len).unwrap_or(0) };
    match u.choose_index(8).unwrap_or(0) {
        0 if len > 0 => b[at] ^= 1 << u.choose_index(8).unwrap_or(0),
        1 if len > 0 => b[at] = [0, 1, 0x7f, 0x80, 0xff][u.choose_index(5).unwrap_or(0)],
        2 => {
            let width = [2, 4, 8][u.choose_index(3).unwrap_or(0)];
            let f = Field { at, width, big_endian: u.arbitrary().unwrap_or(false) };
            set_field(b, f, u);
        }
        3 => b.truncate(at),
        4 => {
            let n = u.int_in_range(1..=64).unwrap_or(1);
            let ins: Vec<u8> = (0..n).map(|_| u.arbitrary().unwrap_or(0)).collect();
            b.splice(at..at, ins);
        }
        5 if len > 0 => {
            let n = u.int_in_range(1..=64.min(len - at)).unwrap_or(1);
            b.drain(at..at + n);
        }
        6 if len > 0 => {
            let n = u.int_in_range(1..=256.min(len - at)).unwrap_or(1);
            let dup = b[at..at + n].to_vec();
            b.splice(at..at, dup);
        }
        _ if !other.is_empty() => {
            let from = u.choose_index(other.len()).unwrap_or(0);
            let n = u.int_in_range(1..=256.min(other.len() - from)).unwrap_or(1);
            let end = (at + n).min(len);
            b.splice(at..end, other[from..from + n].iter().copied());
        }
        _ => {}
    }
}

/// safetensors: the JSON header (then its length fixed, mostly), or the length itself.
fn safetensors(mut b: Vec<u8>, u: &mut Unstructured) -> Vec<u8> {
    let Some(n) = b.get(..8).map(|s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])) as usize) else {
        return b;
    };
    if u.ratio(1, 5).unwrap_or(false) || n > b.len() - 8 {
        set_field(&mut b, Field { at: 0, width: 8, big_endian: false }, u);
        return b;
    }
    let Some(header) = json::mutate(&b[8..8 + n], u) else { return b };
    let mut out = Vec::with_capacity(b.len());
    let keep_len = u.ratio(1, 8).unwrap_or(false);
    out.extend_from_slice(&(if keep_len { n } else { header.len() } as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&b[8 + n..]);
    out
}

/// npy: the header dict's shape numbers, dtype, order, or the header length field.
fn npy(mut b: Vec<u8>, u: &mut Unstructured) -> Vec<u8> {
    let Some((start, n)) = fields::npy_header_len(&b) else { return b };
    if u.ratio(1, 5).unwrap_or(false) || start + n > b.len() {
        let width = start - 8;
        set_field(&mut b, Field { at: 8, width, big_endian: false }, u);
        return b;
    }
    let mut h = String::from_utf8_lossy(&b[start..start + n]).into_owned();
    match u.choose_index(4).unwrap_or(0) {
        0 => {
            // A number of the shape tuple.
            let digits: Vec<usize> = h.char_indices().filter(|(_, c)| c.is_ascii_digit()).map(|(i, _)| i).collect();
            if let Ok(&i) = u.choose(&digits) {
                let end = h[i..].find(|c: char| !c.is_ascii_digit()).map_or(h.len(), |k| i + k);
                let v = ["0", "-1", "4294967296", "18446744073709551615", "99999999999999999999999", "1e9"]
                    [u.choose_index(6).unwrap_or(0)];
                h.replace_range(i..end, v);
            }
        }
        1 => {
            let d = ["'<f4'", "'>f8'", "'|u1'", "'<c8'", "'|O'", "'<U10'", "'<f2'", "'|b1'", "'<i8'", "''"]
                [u.choose_index(10).unwrap_or(0)];
            if let (Some(i), Some(j)) = (h.find("'descr': "), h.find(", 'fortran")) {
                if i + 9 <= j {
                    h.replace_range(i + 9..j, d);
                }
            }
        }
        2 => h = h.replace("False", "True"),
        _ => {
            if let Some(i) = h.find("'shape': (") {
                h.insert_str(i + 10, "1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, ");
            }
        }
    }
    let mut out = b[..start].to_vec();
    let width = start - 8;
    Field { at: 8, width, big_endian: false }.set(&mut out, h.len() as u64);
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&b[start + n..]);
    out
}

/// A pth member: the pickle's fields, or a storage file cut short or grown.
fn pth_member(mut b: Vec<u8>, u: &mut Unstructured) -> Vec<u8> {
    if b.starts_with(&[0x80]) {
        return with_fields(b, &fields::pickle, u);
    }
    if u.ratio(1, 2).unwrap_or(true) {
        let at = u.choose_index(b.len().max(1)).unwrap_or(0);
        b.truncate(at);
    } else {
        b.extend(std::iter::repeat_n(0u8, u.int_in_range(1..=64).unwrap_or(1)));
    }
    b
}

/// Rewrites a zip archive with one member mutated by `f` (valid CRCs and sizes, so the
/// mutation reaches the member's reader), stored or deflated.
fn zip_member(b: Vec<u8>, u: &mut Unstructured, f: fn(Vec<u8>, &mut Unstructured) -> Vec<u8>) -> Vec<u8> {
    let Some(mut members) = unzip(&b).filter(|m| !m.is_empty()) else { return b };
    // Mostly the pickle (or an npy), sometimes any member.
    let k = match members.iter().position(|(n, _)| n.ends_with(".pkl")) {
        Some(p) if u.ratio(3, 4).unwrap_or(true) => p,
        _ => u.choose_index(members.len()).unwrap_or(0),
    };
    let data = std::mem::take(&mut members[k].1);
    members[k].1 = f(data, u);
    let method =
        if u.ratio(1, 4).unwrap_or(false) { zip::CompressionMethod::Deflated } else { zip::CompressionMethod::Stored };
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    for (name, data) in &members {
        if w.start_file(name.as_str(), opts).is_err() || w.write_all(data).is_err() {
            return b;
        }
    }
    match w.finish() {
        Ok(c) => c.into_inner(),
        Err(_) => b,
    }
}

fn unzip(b: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(b)).ok()?;
    let mut members = Vec::new();
    for i in 0..z.len() {
        let mut e = z.by_index(i).ok()?;
        let mut data = Vec::new();
        e.read_to_end(&mut data).ok()?;
        members.push((e.name().to_string(), data));
    }
    Some(members)
}
