//! .npy / .npz tests against files written by numpy (see `make_npy_fixtures.py`).

use std::path::{Path, PathBuf};

use wanrt_io::npy::{read_npy_header, write_npy_raw};
use wanrt_io::{read_npy, read_npz, write_npy, write_npz, NpyArray, NpyDType, NpzReader};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn ramp() -> Vec<f64> {
    (0..24).map(|i| (i as f64 - 5.0) / 4.0).collect()
}

#[test]
fn reads_numpy_versions_and_dtypes() {
    let a = read_npy(data("f32_v1.npy")).unwrap();
    assert_eq!(a.dtype(), NpyDType::F32);
    assert_eq!(a.shape(), &[2, 3, 4]);
    assert_eq!(a.to_f64_vec(), ramp());

    let b = read_npy(data("f64_v2.npy")).unwrap();
    assert_eq!(b.dtype(), NpyDType::F64);
    assert_eq!(b.to_vec::<f64>().unwrap(), ramp());

    let c = read_npy(data("i64_v3.npy")).unwrap();
    assert_eq!(c.to_vec::<i64>().unwrap(), vec![-3, 0, 1 << 40]);

    let d = read_npy(data("u8.npy")).unwrap();
    assert_eq!(d.shape(), &[1, 3]);
    assert_eq!(d.to_vec::<u8>().unwrap(), vec![0, 128, 255]);

    let e = read_npy(data("f16.npy")).unwrap();
    assert_eq!(e.to_f32_vec(), vec![0.5, -2.0, 65504.0]);

    let s = read_npy(data("i32_scalar.npy")).unwrap();
    assert_eq!(s.shape(), &[] as &[usize]);
    assert_eq!(s.to_vec::<i32>().unwrap(), vec![-7]);
    assert!(s.to_vec::<f32>().is_err(), "dtype mismatch is an error");

    let h = read_npy_header(data("f32_v1.npy")).unwrap();
    assert_eq!((h.dtype, h.shape.clone(), h.data_len), (NpyDType::F32, vec![2, 3, 4], 96));
}

#[test]
fn rejects_fortran_and_big_endian_clearly() {
    let e = read_npy(data("fortran.npy")).unwrap_err().to_string();
    assert!(e.contains("Fortran") && e.contains("fortran.npy"), "{e}");
    let e = read_npy(data("big_endian.npy")).unwrap_err().to_string();
    assert!(e.contains("big-endian") && e.contains("big_endian.npy"), "{e}");
}

#[test]
fn write_read_round_trip_matches_numpy_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let a = NpyArray::new(vec![2, 3, 4], ramp().iter().map(|&x| x as f32).collect()).unwrap();
    let p = dir.path().join("a.npy");
    write_npy(&p, &a).unwrap();
    // numpy's own file for the same array is byte-identical.
    assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(data("f32_v1.npy")).unwrap());
    assert_eq!(read_npy(&p).unwrap(), a);
    // No temp files left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let raw = vec![1u8, 2, 3, 4, 5, 6];
    write_npy_raw(dir.path().join("r.npy"), NpyDType::U8, &[2, 3], &raw).unwrap();
    assert_eq!(read_npy(dir.path().join("r.npy")).unwrap().as_bytes(), &raw[..]);
    assert!(write_npy_raw(dir.path().join("bad.npy"), NpyDType::F32, &[2, 3], &raw).is_err());
    assert!(!dir.path().join("bad.npy").exists());
}

#[test]
fn reads_pytorch_fid_style_npz_stored_and_deflated() {
    let mu = read_npy(data("stats_mu.npy")).unwrap();
    let sigma = read_npy(data("stats_sigma.npy")).unwrap();
    for f in ["stats.npz", "stats_deflated.npz"] {
        let all = read_npz(data(f)).unwrap();
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["mu", "sigma"], "{f}");
        assert_eq!(all[0].1, mu, "{f}");
        assert_eq!(all[1].1, sigma, "{f}");
    }
    let mut r = NpzReader::open(data("stats.npz")).unwrap();
    let e = r.read("features").unwrap_err().to_string();
    assert!(e.contains("features") && e.contains("`mu`"), "{e}");
}

#[test]
fn npz_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mu = NpyArray::new(vec![3], vec![1.0f64, 2.0, 3.0]).unwrap();
    let n = NpyArray::new(vec![], vec![5i64]).unwrap();
    let p = dir.path().join("s.npz");
    write_npz(&p, &[("mu", &mu), ("n", &n)]).unwrap();
    let back = read_npz(&p).unwrap();
    assert_eq!(back, vec![("mu".to_string(), mu), ("n".to_string(), n)]);
}

#[test]
fn truncated_and_corrupted_files_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x");
    for file in ["f32_v1.npy", "i64_v3.npy", "stats.npz", "stats_deflated.npz"] {
        let bytes = std::fs::read(data(file)).unwrap();
        let npz = file.ends_with(".npz");
        for cut in 0..bytes.len() {
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let r = if npz { read_npz(&p).map(|_| ()) } else { read_npy(&p).map(|_| ()) };
            assert!(r.is_err(), "{file} cut at {cut} loaded");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x5a;
            std::fs::write(&p, &b).unwrap();
            let _ = if npz { read_npz(&p).map(|_| ()) } else { read_npy(&p).map(|_| ()) };
        }
    }
    // A header claiming a huge shape is refused before allocating.
    let mut h = wanrt_io::npy::encode_header(NpyDType::F64, &[1 << 40, 1 << 20]);
    h.extend_from_slice(&[0u8; 16]);
    std::fs::write(&p, &h).unwrap();
    let e = read_npy(&p).unwrap_err().to_string();
    assert!(e.contains("needs"), "{e}");
}

#[cfg(unix)]
#[test]
fn written_files_are_not_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    write_npy(&p, &NpyArray::new(vec![1], vec![1u8]).unwrap()).unwrap();
    let mode = std::fs::metadata(&p).unwrap().permissions().mode();
    assert_ne!(mode & 0o044, 0, "mode {mode:o}: group/other cannot read");
}
