//! Instruction-set paths of the int8 kernels, chosen at run time.
//!
//! One binary serves every x86-64 machine: `Isa::detect()` picks the fastest path the CPU has,
//! and `*_with(isa, …)` entry points force one, so tests can prove that every available path
//! returns the same bits as [`Isa::Scalar`].

/// An integer dot-product path. All paths accumulate exactly in `i32`; only speed differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust loops: the reference, and the path on non-x86 targets.
    Scalar,
    /// AVX2 without VNNI (the 2-core target): `vpsignb` + `vpmaddubsw` + `vpmaddwd`,
    /// 32 multiply-adds per two multiply-port µops, exact because operands stay within ±127.
    Avx2,
    /// AVX-VNNI: 256-bit `vpdpbusd` (Alder Lake+, Zen 5), u8×i8 with +128 offset compensation.
    AvxVnni,
    /// AVX-512 VNNI: 512-bit `vpdpbusd` (Ice Lake+, Zen 4).
    Avx512Vnni,
}

impl Isa {
    /// Every path, slowest first.
    pub const ALL: [Isa; 4] = [Isa::Scalar, Isa::Avx2, Isa::AvxVnni, Isa::Avx512Vnni];

    /// Whether this CPU (and this build's target) can run the path.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Isa::AvxVnni => {
                std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("avxvnni")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Vnni => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The paths this machine can run, slowest first (tests iterate over it).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.is_available()).collect()
    }

    /// The fastest available path; `WANRT_ISA=scalar|avx2|avxvnni|avx512vnni` overrides it
    /// (benchmarks and bug reports compare paths on one machine). An unavailable override
    /// falls back to detection rather than crashing on an illegal instruction.
    pub fn detect() -> Isa {
        if let Some(forced) = std::env::var("WANRT_ISA").ok().and_then(|s| Isa::parse(&s)) {
            if forced.is_available() {
                return forced;
            }
        }
        Isa::ALL.into_iter().rev().find(|i| i.is_available()).unwrap_or(Isa::Scalar)
    }

    /// Parses the names `name()` prints.
    pub fn parse(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Short lowercase name (bench ids, logs).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::AvxVnni => "avxvnni",
            Isa::Avx512Vnni => "avx512vnni",
        }
    }

    /// Whether the path multiplies unsigned activations (`a + 128`) and so needs the weight's
    /// column sums to compensate.
    pub(crate) fn offsets_activations(self) -> bool {
        matches!(self, Isa::AvxVnni | Isa::Avx512Vnni)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_scalar_always_available() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
        }
        assert!(Isa::available().contains(&Isa::Scalar));
        assert!(Isa::detect().is_available());
    }
}
