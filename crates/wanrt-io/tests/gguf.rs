//! The GGUF reader on well-formed files (written here byte by byte, and by gguf-py in
//! `fixtures/gguf/`) and on hostile ones: each is refused with a one-line error naming the file
//! and the problem, without panicking or allocating what the header claims.

use std::path::{Path, PathBuf};
use wanrt_io::{GgmlType, GgufFile, GgufValue};

/// A GGUF file under construction (little-endian, the layout of gguf-py's `GGUFWriter`).
struct Writer {
    version: u32,
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
    alignment: usize,
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s);
}

impl Writer {
    fn new() -> Self {
        Writer { version: 3, kv: vec![], n_kv: 0, infos: vec![], n_tensors: 0, data: vec![], alignment: 32 }
    }

    /// A key with a raw typed value.
    fn kv(mut self, key: &str, ty: u32, value: &[u8]) -> Self {
        string(&mut self.kv, key.as_bytes());
        self.kv.extend(ty.to_le_bytes());
        self.kv.extend(value);
        self.n_kv += 1;
        self
    }

    fn kv_str(self, key: &str, v: &str) -> Self {
        let mut b = vec![];
        string(&mut b, v.as_bytes());
        self.kv(key, 8, &b)
    }

    /// A tensor with ggml dims `ne` (innermost first) and its bytes, placed at the next aligned
    /// data offset.
    fn tensor(mut self, name: &str, ne: &[u64], ty: u32, bytes: &[u8]) -> Self {
        let offset = self.data.len().div_ceil(self.alignment) * self.alignment;
        self.data.resize(offset, 0);
        self.data.extend(bytes);
        self.raw_info(name.as_bytes(), ne, ty, offset as u64)
    }

    fn raw_info(mut self, name: &[u8], ne: &[u64], ty: u32, offset: u64) -> Self {
        string(&mut self.infos, name);
        self.infos.extend((ne.len() as u32).to_le_bytes());
        ne.iter().for_each(|d| self.infos.extend(d.to_le_bytes()));
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend(offset.to_le_bytes());
        self.n_tensors += 1;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(&self.kv);
        out.extend(&self.infos);
        out.resize(out.len().div_ceil(self.alignment) * self.alignment, 0);
        out.extend(&self.data);
        out
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn valid() -> Writer {
    Writer::new()
        .kv_str("general.architecture", "wan")
        .kv("general.quantization_version", 4, &2u32.to_le_bytes())
        .tensor("a.weight", &[3, 2], 0, &f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
        .tensor("b.weight", &[32, 2], 8, &[7u8; 68])
        .tensor("c.bias", &[5], 1, &[0u8; 10])
}

#[test]
fn reads_a_well_formed_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = GgufFile::open(write(dir.path(), "ok.gguf", &valid().bytes())).unwrap();
    assert_eq!((f.version, f.alignment), (3, 32));
    assert_eq!(f.get("general.architecture").and_then(GgufValue::as_str), Some("wan"));
    assert_eq!(f.get("general.quantization_version").and_then(GgufValue::as_u64), Some(2));
    let t = f.tensors();
    assert_eq!(t.len(), 3);
    assert_eq!((t[0].name.as_str(), t[0].shape.as_slice(), t[0].ggml_type), ("a.weight", &[2, 3][..], GgmlType::F32));
    assert_eq!(t[0].bytes(), f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
    assert_eq!((t[1].shape.as_slice(), t[1].ggml_type, t[1].bytes().len()), (&[2, 32][..], GgmlType::Q8_0, 68));
    assert_eq!((t[2].shape.as_slice(), t[2].ggml_type), (&[5][..], GgmlType::F16));
}

/// A file gguf-py 0.19 wrote (`tools/fixtures/make_gguf_fixtures.py`): custom alignment, every
/// metadata type, arrays (one too long to keep), a 5D tensor.
#[test]
fn reads_what_gguf_py_writes() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/gguf/reader.gguf");
    let f = GgufFile::open(&path).unwrap();
    assert_eq!((f.version, f.alignment), (3, 64));
    let get = |k: &str| f.get(k).unwrap_or_else(|| panic!("no key {k}"));
    assert_eq!(get("test.u8"), &GgufValue::U8(200));
    assert_eq!(get("test.i8"), &GgufValue::I8(-100));
    assert_eq!(get("test.u16"), &GgufValue::U16(60000));
    assert_eq!(get("test.i16"), &GgufValue::I16(-30000));
    assert_eq!(get("test.i32"), &GgufValue::I32(-2_000_000_000));
    assert_eq!(get("test.u64"), &GgufValue::U64(1 << 40));
    assert_eq!(get("test.i64"), &GgufValue::I64(-(1 << 40)));
    assert_eq!(get("test.f32"), &GgufValue::F32(1.5));
    assert_eq!(get("test.f64"), &GgufValue::F64(-2.25));
    assert_eq!(get("test.bool"), &GgufValue::Bool(true));
    assert_eq!(get("test.string"), &GgufValue::String("ünïcode".into()));
    assert_eq!(get("test.array"), &GgufValue::Array(vec![GgufValue::I32(1), GgufValue::I32(2), GgufValue::I32(3)]));
    assert_eq!(get("test.long_array"), &GgufValue::Skipped { len: 5000 });
    let t = f.tensors();
    let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["conv.weight", "q.weight"]);
    assert_eq!(t[0].shape, [4, 2, 1, 2, 2]);
    assert_eq!(t[0].ggml_type, GgmlType::F32);
    let values: Vec<f32> = t[0].bytes().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(values, (0..32).map(|i| i as f32).collect::<Vec<_>>());
    assert_eq!((t[1].shape.as_slice(), t[1].ggml_type), (&[3, 256][..], GgmlType::Q4_K));
    assert_eq!(t[1].bytes().len(), 3 * 144);
}

/// Asserts that `bytes` is refused with a one-line message containing `want`.
fn refused(bytes: &[u8], want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad.gguf", bytes);
    let err = GgufFile::open(&path).expect_err(want).to_string();
    assert!(err.contains(want), "expected `{want}` in: {err}");
    assert!(err.contains("bad.gguf") && !err.contains('\n'), "{err}");
}

#[test]
fn hostile_headers_are_refused() {
    refused(b"GGU", "missing the `GGUF` magic");
    refused(b"PK\x03\x04 not gguf at all", "missing the `GGUF` magic");
    let good = valid().bytes();
    refused(&good[..12], "truncated header");
    refused(&good[..30], "tensor count 3 is more than the 14 bytes left");
    let mut be = good.clone();
    be[4..8].copy_from_slice(&3u32.to_be_bytes());
    refused(&be, "big-endian");
    let mut v1 = good.clone();
    v1[4..8].copy_from_slice(&1u32.to_le_bytes());
    refused(&v1, "unsupported GGUF version: found 1");
    // Counts that the file cannot hold are refused before anything is allocated for them.
    let mut many = good.clone();
    many[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    refused(&many, "tensor count 18446744073709551615");
    let mut kvs = good.clone();
    kvs[16..24].copy_from_slice(&(1u64 << 50).to_le_bytes());
    refused(&kvs, "metadata count");
    let huge_string = Writer::new().kv("k", 8, &(u64::MAX - 1).to_le_bytes()).bytes();
    refused(&huge_string, "metadata `k` string");
    let huge_array = Writer::new().kv("k", 9, &[4u32.to_le_bytes().as_slice(), &(1u64 << 40).to_le_bytes()].concat());
    refused(&huge_array.bytes(), "array length");
    // Arrays of arrays of … nest at most four deep.
    let mut nested = Vec::new();
    for _ in 0..6 {
        nested.extend(9u32.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
    }
    nested.extend(4u32.to_le_bytes());
    nested.extend(0u64.to_le_bytes());
    refused(&Writer::new().kv("deep", 9, &nested).bytes(), "nested deeper than 4");
    refused(&Writer::new().kv("k", 13, &[0]).bytes(), "metadata `k`: unknown value type 13");
    refused(&Writer::new().kv("k", 7, &[2]).bytes(), "boolean byte 2");
    refused(&Writer::new().kv("k", 4, &[1; 4]).kv("k", 4, &[1; 4]).bytes(), "metadata key `k` appears twice");
    refused(&Writer::new().kv("general.alignment", 4, &48u32.to_le_bytes()).bytes(), "power of two");
    refused(&Writer::new().kv("general.alignment", 8, &[0; 8]).bytes(), "general.alignment must be a u32");
}

#[test]
fn hostile_tensor_infos_are_refused() {
    let f32s = f32_bytes(&[0.0; 4]);
    refused(&Writer::new().tensor("t", &[4], 0, &f32s).tensor("t", &[4], 0, &f32s).bytes(), "`t` is listed twice");
    refused(&Writer::new().tensor("t", &[4], 99, &f32s).bytes(), "tensor `t`: unknown ggml type 99");
    refused(&Writer::new().tensor("t", &[1; 9], 0, &f32s).bytes(), "has 9 dims");
    refused(&Writer::new().tensor("t", &[33], 8, &[0; 34]).bytes(), "not a whole number of Q8_0 blocks");
    refused(&Writer::new().tensor("t", &[1 << 40, 1 << 40], 0, &f32s).bytes(), "overflows");
    refused(&Writer::new().tensor("t", &[8], 0, &f32s).bytes(), "run past the end of the file");
    refused(&Writer::new().raw_info(b"t", &[4], 0, 1 << 62).bytes(), "run past the end of the file");
    refused(&Writer::new().raw_info(b"t", &[1], 0, 4).bytes(), "offset 4 is not a multiple of 32");
    refused(&Writer::new().raw_info(&[0xff, 0xfe], &[1], 0, 0).bytes(), "tensor name is not valid UTF-8");
    refused(&Writer::new().raw_info(&vec![b'a'; 70_000], &[1], 0, 0).bytes(), "longer than the 65536 allowed");
}

#[test]
fn every_type_has_ggml_block_sizes() {
    // ggml.h: the K-quants' super-blocks hold 256 values; the rest as gguf-py's GGML_QUANT_SIZES.
    for (t, block, bytes) in [
        (GgmlType::Q4_0, 32, 18),
        (GgmlType::Q5_1, 32, 24),
        (GgmlType::Q8_0, 32, 34),
        (GgmlType::Q2_K, 256, 84),
        (GgmlType::Q3_K, 256, 110),
        (GgmlType::Q6_K, 256, 210),
        (GgmlType::BF16, 1, 2),
    ] {
        assert_eq!((t.block_size(), t.type_size()), (block, bytes), "{t}");
        assert_eq!(GgmlType::from_id(t.id()), Some(t));
    }
    assert_eq!(GgmlType::from_id(4), None, "Q4_2 was removed from ggml");
}
