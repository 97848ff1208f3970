//! Checks on an MP4 file and its H.264 parameter sets that run before a third-party parser
//! or decoder allocates from the sizes they declare.
//!
//! - [`check_boxes`]: every ISO-BMFF box lies inside its parent and the file. The `mp4` crate
//!   sizes its tables (`stsz`, `stco`, `stts`, …) by entry counts it only bounds by the box's
//!   *declared* size: a 1 KB file whose `stbl` claims 4 GB would make it reserve gigabytes.
//!   Once every box is inside the real file, those tables are bounded by the file's length.
//! - [`sps_frame_size`]: the picture size and reference frame count an H.264 sequence
//!   parameter set (ITU-T H.264 §7.3.2.1.1) declares, so that the decoder is never handed a
//!   stream whose frame buffers exceed the decode budget.

/// Boxes whose payload is a sequence of boxes (after `skip` bytes of their own fields).
const CONTAINERS: &[(&[u8; 4], u64)] = &[
    (b"moov", 0),
    (b"trak", 0),
    (b"mdia", 0),
    (b"minf", 0),
    (b"stbl", 0),
    (b"edts", 0),
    (b"dinf", 0),
    (b"udta", 0),
    (b"mvex", 0),
    (b"moof", 0),
    (b"traf", 0),
    (b"mfra", 0),
    // Full box: version + flags.
    (b"meta", 4),
    // Full box + entry count, then sample entries.
    (b"stsd", 8),
    // VisualSampleEntry: 78 bytes of fields, then avcC, pasp, colr, btrt …
    (b"avc1", 78),
    (b"avc3", 78),
    (b"hev1", 78),
    (b"hvc1", 78),
    (b"vp09", 78),
    // Full box + entry count, then `url ` boxes.
    (b"dref", 8),
];
/// Nesting deeper than any real file (moov/trak/mdia/minf/stbl/stsd/avc1/avcC is 8).
const MAX_DEPTH: usize = 16;

/// Walks the boxes of `data[start..end]` (the whole file at the top) and checks that each lies
/// inside its parent; `Err` names the first that does not.
pub(crate) fn check_boxes(data: &[u8]) -> Result<(), String> {
    walk(data, 0, data.len() as u64, 0, "the file")
}

fn walk(data: &[u8], start: u64, end: u64, depth: usize, parent: &str) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("boxes nest deeper than {MAX_DEPTH} levels"));
    }
    let mut pos = start;
    while pos < end {
        let remaining = end - pos;
        if remaining < 8 {
            // Trailing padding inside a container (some muxers leave a 4-byte zero terminator).
            if data[pos as usize..end as usize].iter().all(|&b| b == 0) {
                return Ok(());
            }
            return Err(format!("{remaining} stray bytes at offset {pos} inside {parent}"));
        }
        let p = pos as usize;
        let size32 = u32::from_be_bytes([data[p], data[p + 1], data[p + 2], data[p + 3]]) as u64;
        let kind = [data[p + 4], data[p + 5], data[p + 6], data[p + 7]];
        let name = String::from_utf8_lossy(&kind).into_owned();
        let (size, header) = match size32 {
            // "To the end of the file" is for the last top-level box only: the `mp4` crate
            // loops forever on a nested box of size 0 (found by the mutation harness).
            0 if depth > 0 => {
                return Err(format!("box `{name}` at offset {pos} inside {parent} has size 0"));
            }
            0 => (remaining, 8),
            1 => {
                if remaining < 16 {
                    return Err(format!("box `{name}` at offset {pos}: truncated 64-bit size"));
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[p + 8..p + 16]);
                (u64::from_be_bytes(b), 16)
            }
            n => (n, 8),
        };
        if size < header || size > remaining {
            return Err(format!(
                "box `{name}` at offset {pos} declares {size} bytes but {parent} has {remaining} bytes left"
            ));
        }
        if let Some((_, skip)) = CONTAINERS.iter().find(|(k, _)| **k == kind) {
            let inner = pos + header + skip;
            if inner <= pos + size {
                walk(data, inner, pos + size, depth + 1, &format!("box `{name}`"))?;
            }
        }
        pos += size;
    }
    Ok(())
}

/// What a sequence parameter set declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpsInfo {
    pub width: u64,
    pub height: u64,
    pub max_ref_frames: u64,
}

/// Parses the size fields of an SPS NAL unit (with its one-byte NAL header). `None` when the
/// NAL is not a parseable SPS (the decoder then rejects it on its own).
pub(crate) fn sps_frame_size(nal: &[u8]) -> Option<SpsInfo> {
    if nal.first()? & 0x1f != 7 {
        return None;
    }
    let rbsp = unescape(&nal[1..]);
    let mut r = Bits { data: &rbsp, pos: 0 };
    let profile = r.bits(8)?;
    r.bits(16)?; // constraint flags, level
    r.ue()?; // seq_parameter_set_id
    if matches!(profile, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        let chroma = r.ue()?;
        if chroma == 3 {
            r.bits(1)?;
        }
        r.ue()?;
        r.ue()?; // bit depths
        r.bits(1)?;
        if r.bits(1)? == 1 {
            for i in 0..if chroma == 3 { 12 } else { 8 } {
                if r.bits(1)? == 1 {
                    skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num_minus4
    match r.ue()? {
        0 => {
            r.ue()?;
        }
        1 => {
            r.bits(1)?;
            r.se()?;
            r.se()?;
            let n = r.ue()?;
            if n > 255 {
                return None;
            }
            for _ in 0..n {
                r.se()?;
            }
        }
        _ => {}
    }
    let max_ref_frames = r.ue()?;
    r.bits(1)?;
    let w_mbs = r.ue()? + 1;
    let h_units = r.ue()? + 1;
    let frame_mbs_only = r.bits(1)?;
    Some(SpsInfo { width: w_mbs * 16, height: (2 - frame_mbs_only) * h_units * 16, max_ref_frames })
}

fn skip_scaling_list(r: &mut Bits, size: usize) -> Option<()> {
    let (mut last, mut next) = (8i64, 8i64);
    for _ in 0..size {
        if next != 0 {
            next = (last + r.se()? + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Some(())
}

/// Removes emulation-prevention bytes (`00 00 03` → `00 00`).
fn unescape(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut zeros = 0;
    for &x in b {
        if zeros >= 2 && x == 3 {
            zeros = 0;
            continue;
        }
        zeros = if x == 0 { zeros + 1 } else { 0 };
        out.push(x);
    }
    out
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn bit(&mut self) -> Option<u64> {
        let byte = self.data.get(self.pos / 8)?;
        let b = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Some(b as u64)
    }

    fn bits(&mut self, n: usize) -> Option<u64> {
        (0..n).try_fold(0u64, |acc, _| Some((acc << 1) | self.bit()?))
    }

    /// Unsigned Exp-Golomb; values needing more than 32 bits are refused.
    fn ue(&mut self) -> Option<u64> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 32 {
                return None;
            }
        }
        Some((1u64 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i64> {
        let k = self.ue()? as i64;
        Some(if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut v = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn boxes_must_nest() {
        let stbl = boxed(b"stbl", &boxed(b"stsz", &[0; 12]));
        let file = [boxed(b"ftyp", b"isom"), boxed(b"moov", &boxed(b"trak", &stbl))].concat();
        assert!(check_boxes(&file).is_ok());
        // stsz claiming 4 GB inside a 40-byte stbl.
        let mut lying = file.clone();
        let at = lying.windows(4).position(|w| w == b"stsz").unwrap() - 4;
        lying[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        let e = check_boxes(&lying).unwrap_err();
        assert!(e.contains("box `stsz`") && e.contains("box `stbl` has"), "{e}");
        // A box running past the end of the file.
        let mut long = file.clone();
        long.truncate(long.len() - 3);
        assert!(check_boxes(&long).is_err());
    }

    #[test]
    fn sps_sizes() {
        // x264's SPS of a 64×48 baseline stream: profile 66, 4 × 3 macroblocks.
        let mut w = BitWriter::default();
        w.put(66, 8);
        w.put(0, 16);
        w.ue(0); // sps id
        w.ue(0); // log2_max_frame_num_minus4
        w.ue(2); // poc type
        w.ue(3); // max_num_ref_frames
        w.put(0, 1);
        w.ue(3); // width in MBs - 1
        w.ue(2); // height in map units - 1
        w.put(1, 1); // frame_mbs_only
        let mut nal = vec![0x67];
        nal.extend(w.finish());
        assert_eq!(sps_frame_size(&nal), Some(SpsInfo { width: 64, height: 48, max_ref_frames: 3 }));
        // OpenH264's SPS of a 512×512 stream (wanrt's own writer).
        let openh264 = [
            0x67, 0x42, 0xc0, 0x16, 0x8c, 0x68, 0x08, 0x01, 0x04, 0x9a, 0x83, 0x03, 0x03, 0x03, 0xc2, 0x21, 0x1a, 0x80,
        ];
        assert_eq!(sps_frame_size(&openh264), Some(SpsInfo { width: 512, height: 512, max_ref_frames: 1 }));
        assert_eq!(sps_frame_size(&[0x68, 1, 2]), None);
        assert_eq!(sps_frame_size(&[0x67]), None);
    }

    #[derive(Default)]
    struct BitWriter {
        bits: Vec<u8>,
    }

    impl BitWriter {
        fn put(&mut self, v: u64, n: usize) {
            for i in (0..n).rev() {
                self.bits.push(((v >> i) & 1) as u8);
            }
        }
        fn ue(&mut self, v: u64) {
            let x = v + 1;
            let len = 64 - x.leading_zeros() as usize;
            self.put(0, len - 1);
            self.put(x, len);
        }
        fn finish(mut self) -> Vec<u8> {
            self.bits.push(1);
            while self.bits.len() & 7 != 0 {
                self.bits.push(0);
            }
            self.bits.chunks(8).map(|c| c.iter().fold(0, |a, &b| (a << 1) | b)).collect()
        }
    }
}
