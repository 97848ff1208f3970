//! Protobuf-aware mutation (sentencepiece `.model` files): the varints of the message tree —
//! field keys, lengths of strings and sub-messages, integer values — found by walking the
//! wire format, and one of them replaced by a varint of a hostile value (which may change
//! its width: the bytes around it shift, as in a real crafted file).

use arbitrary::Unstructured;

/// Byte spans of the varints in `b` (sub-messages walked when their bytes parse as one).
fn varints(b: &[u8], base: usize, depth: usize, out: &mut Vec<(usize, usize)>) -> bool {
    let mut pos = 0;
    while pos < b.len() {
        let Some((key, n)) = varint(&b[pos..]) else { return false };
        out.push((base + pos, base + pos + n));
        pos += n;
        match key & 7 {
            0 => {
                let Some((_, n)) = varint(&b[pos..]) else { return false };
                out.push((base + pos, base + pos + n));
                pos += n;
            }
            1 => pos += 8,
            5 => pos += 4,
            2 => {
                let Some((len, n)) = varint(&b[pos..]) else { return false };
                out.push((base + pos, base + pos + n));
                pos += n;
                let Some(end) = pos.checked_add(len as usize).filter(|&e| e <= b.len()) else { return false };
                if depth < 4 {
                    let mut inner = Vec::new();
                    if varints(&b[pos..end], base + pos, depth + 1, &mut inner) {
                        out.extend(inner);
                    }
                }
                pos = end;
            }
            _ => return false,
        }
    }
    pos == b.len()
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, &x) in b.iter().enumerate().take(10) {
        v |= ((x & 0x7f) as u64) << (7 * i);
        if x & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn encode(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let x = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(x);
            return out;
        }
        out.push(x | 0x80);
    }
}

/// Replaces one varint of the message; None when `b` is not a protobuf message.
pub fn mutate(b: &[u8], u: &mut Unstructured) -> Option<Vec<u8>> {
    let mut spans = Vec::new();
    varints(b, 0, 0, &mut spans);
    let &(s, e) = u.choose(&spans).ok()?;
    let old = varint(&b[s..e]).map_or(0, |(v, _)| v);
    let picks = [
        0,
        1,
        old.wrapping_add(1),
        old.wrapping_sub(1),
        old.wrapping_mul(2),
        0x7fff_ffff,
        u32::MAX as u64,
        u64::MAX,
        1 << 40,
    ];
    let v = picks[u.choose_index(picks.len()).ok()?];
    let mut out = b[..s].to_vec();
    out.extend(encode(v));
    out.extend_from_slice(&b[e..]);
    Some(out)
}
