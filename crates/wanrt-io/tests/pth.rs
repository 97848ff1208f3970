//! .pth reader tests against files written by torch (see `make_pth_fixtures.py`,
//! which also writes `data/pth_expected.json`).

use std::path::{Path, PathBuf};

use wanrt_io::{Error, PthFile, TorchDType};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn expected() -> serde_json::Value {
    let s = std::fs::read_to_string(data("pth_expected.json")).unwrap();
    serde_json::from_str(&s).unwrap()
}

fn dtype_name(d: TorchDType) -> &'static str {
    d.name()
}

/// Compares every tensor of `file` with the values torch recorded.
fn check_file(file: &str, pth: &PthFile) {
    let exp = expected();
    let exp = exp[file].as_object().unwrap();
    for (name, e) in exp {
        let t = pth.require(name).unwrap_or_else(|err| panic!("{file}: {err}"));
        assert_eq!(dtype_name(t.dtype()), e["dtype"].as_str().unwrap(), "{file}:{name} dtype");
        let shape: Vec<usize> = e["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
        assert_eq!(t.shape(), &shape[..], "{file}:{name} shape");
        let want: Vec<f64> = e["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
        let got = t.to_f32_vec();
        assert_eq!(got.len(), want.len(), "{file}:{name} numel");
        let max_abs = got.iter().zip(&want).map(|(&g, &w)| (g as f64 - w).abs() / w.abs().max(1.0)).fold(0.0, f64::max);
        // f32 holds every value but the i64s beyond 2^24 exactly; those are relative-checked.
        assert!(max_abs <= 1e-7, "{file}:{name}: max rel diff {max_abs}");
    }
}

#[test]
fn reads_all_dtypes_and_views() {
    let pth = PthFile::open(data("dtypes.pth")).unwrap();
    check_file("dtypes.pth", &pth);
    let names: Vec<&str> = pth.names().collect();
    assert_eq!(names[0], "f32", "pickle order is kept");

    let tr = pth.require("transposed").unwrap();
    assert_eq!(tr.strides(), &[1, 6]);
    assert!(!tr.is_contiguous());
    let sl = pth.require("sliced").unwrap();
    assert_eq!(sl.storage_offset(), 6);
    assert_eq!(sl.strides(), &[6, 2]);

    // Exact i64 bytes.
    let i = pth.require("i64").unwrap();
    let b = i.to_contiguous_bytes();
    let v: Vec<i64> = b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(v, vec![0, -1, 1 << 40, -(1 << 40), 7]);

    let s = pth.require("scalar").unwrap();
    assert_eq!(s.shape(), &[] as &[usize]);
    assert_eq!(s.to_f32_vec(), vec![2.5]);
    assert_eq!(pth.require("empty").unwrap().to_contiguous_bytes().len(), 0);
}

#[test]
fn reads_module_state_dict() {
    let pth = PthFile::open(data("module.pth")).unwrap();
    check_file("module.pth", &pth);
    let names: Vec<&str> = pth.names().collect();
    assert_eq!(names, ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]);
}

#[test]
fn flattens_and_selects_nested_dicts() {
    let pth = PthFile::open(data("nested.pth")).unwrap();
    check_file("nested.pth", &pth);
    assert_eq!(pth.len(), 3, "non-tensor values are skipped");
    let model = pth.with_prefix("model").unwrap();
    let names: Vec<&str> = model.names().collect();
    assert_eq!(names, ["blocks.0.weight", "head.bias"]);
    let err = PthFile::open(data("nested.pth")).unwrap().with_prefix("state_dict").unwrap_err();
    assert!(err.to_string().contains("state_dict"), "{err}");
}

#[test]
fn reads_parameters_and_shared_storage() {
    let pth = PthFile::open(data("params.pth")).unwrap();
    check_file("params.pth", &pth);
    let b = pth.require("view_b").unwrap();
    assert_eq!(b.storage_offset(), 3);
    assert_eq!(b.storage_bytes().len(), 6 * 4);
}

#[test]
fn missing_tensor_is_named() {
    let pth = PthFile::open(data("module.pth")).unwrap();
    let err = pth.require("blocks.3.ffn.0.weight").unwrap_err().to_string();
    assert!(err.contains("blocks.3.ffn.0.weight") && err.contains("module.pth"), "{err}");
}

#[test]
fn refuses_malicious_pickle() {
    let err = PthFile::open(data("malicious.pth")).unwrap_err();
    match &err {
        Error::ForbiddenGlobal { module, name, .. } => {
            assert_eq!(module, "posix");
            assert_eq!(name, "system");
        }
        other => panic!("expected ForbiddenGlobal, got {other}"),
    }
    assert!(err.to_string().contains("posix.system"), "{err}");
    assert!(!Path::new("/tmp/wanrt-pwned").exists());
}

#[test]
fn rejects_legacy_format_clearly() {
    let err = PthFile::open(data("legacy.pth")).unwrap_err().to_string();
    assert!(err.contains("legacy"), "{err}");
}

#[test]
fn missing_file_names_path() {
    let err = PthFile::open(data("nope.pth")).unwrap_err().to_string();
    assert!(err.contains("nope.pth"), "{err}");
}

/// Truncations and byte flips of real files must give `Err` or a valid result, never a
/// panic or an out-of-bounds read.
#[test]
fn truncated_and_corrupted_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["dtypes.pth", "module.pth", "nested.pth"] {
        let bytes = std::fs::read(data(file)).unwrap();
        let p = dir.path().join("x.pth");
        // Truncations.
        for cut in (0..bytes.len()).step_by(11) {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            assert!(PthFile::open(&p).is_err(), "{file} cut at {cut} loaded");
        }
        // Byte flips (every byte of data.pkl region and a sample elsewhere).
        let mut seed = 42u64;
        for i in 0..bytes.len() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            if i > 1200 && seed >> 61 != 0 {
                continue;
            }
            let mut b = bytes.clone();
            b[i] ^= 1 << ((seed >> 33) % 8);
            std::fs::write(&p, &b).unwrap();
            if let Ok(f) = PthFile::open(&p) {
                for (_, t) in f.tensors() {
                    let _ = t.to_contiguous_bytes();
                    let _ = t.to_f32_vec();
                }
            }
        }
    }
}

#[test]
fn reads_pickle_protocol_4() {
    let pth = PthFile::open(data("params_proto4.pth")).unwrap();
    check_file("params_proto4.pth", &pth);
}

#[test]
fn reads_deflated_storages() {
    let pth = PthFile::open(data("dtypes_deflated.pth")).unwrap();
    check_file("dtypes_deflated.pth", &pth);
    assert!(!pth.require("transposed").unwrap().is_contiguous());
}

#[test]
fn loaded_files_can_cross_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<PthFile>();
    assert_send_sync::<wanrt_io::PthTensor>();
    assert_send_sync::<wanrt_io::NpyArray>();
}
